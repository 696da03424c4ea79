"""Share links: time-limited access to one study (or one series) for a consulting doctor
who has no account.

A link is ``<public url>/share/<secret>``, the secret 256 random bits (only its SHA-256 is
kept). It may carry a PIN, sent to the doctor by another channel (hashed like a password), and
may be de-identified: the doctor then sees the study through
:class:`pacs.deidentify.Deidentifier` keyed by the link's own ``deid_secret`` (names and IDs
replaced, dates shifted, UIDs remapped, consistently for the life of the link).

Opening a valid link (and giving its PIN) starts a session bound to the link; what that
session may read is decided by :mod:`pacs.web.auth` like everything else. A link stops
working when it expires or is revoked, at once: nothing about a link is cached.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, update

from pacs.accounts import AccountError, digest, hash_secret, verify_secret
from pacs.errors import InvalidUID
from pacs.ingest import validate_uid
from pacs.storage.schema import share_links, users
from pacs.storage.sql import CompiledStatement, Database, driver_datetime

MIN_LIFETIME = timedelta(minutes=10)
MAX_LIFETIME = timedelta(days=30)
PIN = re.compile(r"[0-9]{4,12}")


@dataclass(frozen=True)
class ShareLink:
    """A share link's record (never its secret)."""

    pk: int
    study_uid: str
    series_uid: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    has_pin: bool
    deidentify: bool
    deid_secret: bytes
    note: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > datetime.now(UTC)


def _link(row: Mapping[str, Any]) -> ShareLink:
    """A link from a row read through SQLAlchemy or straight from the driver."""
    return ShareLink(row["pk"], row["study_uid"], row["series_uid"], row["username"],
                     driver_datetime(row["created_at"]), driver_datetime(row["expires_at"]),
                     driver_datetime(row["revoked_at"]), row["pin_hash"] is not None,
                     bool(row["deidentify"]), bytes.fromhex(row["deid_secret"]), row["note"])


class Shares:
    """The share links, in the index database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Checked on every request of a link's session: compiled once (see pacs.accounts).
        self._by_pk = CompiledStatement(
            self._select().where(share_links.c.pk == bindparam("pk")), db.engine.dialect)

    def create(self, *, study_uid: str, created_by: int, lifetime: timedelta,
               series_uid: str | None = None, pin: str | None = None,
               deidentify: bool = False, note: str = "") -> tuple[ShareLink, str]:
        """A new link; returns it with its secret (shown once, put in the URL).

        Raises :class:`AccountError` for a lifetime outside 10 minutes..30 days, a PIN that
        is not 4-12 digits, or a malformed UID.
        """
        if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
            raise AccountError("a share link lasts between 10 minutes and 30 days")
        if pin is not None and not PIN.fullmatch(pin):
            raise AccountError("a PIN is 4 to 12 digits")
        for uid in (study_uid, series_uid):
            if uid is not None:
                try:
                    validate_uid(uid, "UID")
                except InvalidUID as exc:
                    raise AccountError(str(exc)) from exc
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.writing() as conn:
            pk = conn.execute(insert(share_links).values(
                token_hash=digest(secret), study_uid=study_uid, series_uid=series_uid,
                created_by=created_by, created_at=now, expires_at=now + lifetime,
                pin_hash=hash_secret(pin) if pin else None, deidentify=deidentify,
                deid_secret=secrets.token_hex(32), note=note[:500],
            )).inserted_primary_key[0]
        return self.get(pk), secret

    def get(self, pk: int) -> ShareLink:
        with self.db.reading() as conn:
            row = conn.execute(self._select().where(share_links.c.pk == pk)).first()
        if row is None:
            raise AccountError(f"no share link {pk}")
        return _link(row._mapping)

    def find(self, secret: str) -> ShareLink | None:
        """The active link with this secret, else None (unknown, expired or revoked)."""
        with self.db.reading() as conn:
            row = conn.execute(
                self._select().where(share_links.c.token_hash == digest(secret))).first()
        link = None if row is None else _link(row._mapping)
        return link if link is not None and link.active else None

    def active_link(self, pk: int) -> ShareLink | None:
        """The link ``pk`` if it is still active (checked on every request of its session)."""
        with self.db.querying() as cursor:
            row = self._by_pk.first(cursor, {"pk": pk})
        link = None if row is None else _link(row)
        return link if link is not None and link.active else None

    def check_pin(self, secret: str, pin: str) -> bool:
        with self.db.reading() as conn:
            row = conn.execute(select(share_links.c.pin_hash)
                               .where(share_links.c.token_hash == digest(secret))).first()
        return row is not None and (row.pin_hash is None or verify_secret(row.pin_hash, pin))

    def links(self, created_by: int | None = None) -> list[ShareLink]:
        query = self._select().order_by(share_links.c.pk.desc())
        if created_by is not None:
            query = query.where(share_links.c.created_by == created_by)
        with self.db.reading() as conn:
            return [_link(row._mapping) for row in conn.execute(query)]

    def revoke(self, pk: int) -> ShareLink:
        with self.db.writing() as conn:
            done = conn.execute(update(share_links).where(
                share_links.c.pk == pk, share_links.c.revoked_at.is_(None)).values(
                revoked_at=datetime.now(UTC)))
        if done.rowcount == 0:
            raise AccountError(f"no share link {pk} to revoke")
        return self.get(pk)

    @staticmethod
    def _select() -> Select[Any]:
        return (select(share_links, users.c.username)
                .join(users, users.c.pk == share_links.c.created_by))
