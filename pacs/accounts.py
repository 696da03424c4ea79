"""User accounts, roles, API tokens, browser sessions and the throttling of failed logins.

Everything lives in the index database (tables in :mod:`pacs.storage.schema`), so every web
process and every node sees the same accounts, and disabling a user or revoking a token takes
effect on the next request everywhere.

Secrets:

* passwords and share-link PINs are hashed with argon2id (``argon2-cffi``, memory-hard); a
  failed lookup of an unknown user still spends one hash, so timing does not reveal which
  user names exist;
* API tokens and session cookies are 256 random bits shown once; only their SHA-256 is kept
  (with that much entropy a slow hash adds nothing, and each request needs a lookup).

Roles (:data:`ROLES`) are fixed; what each may do is decided in one place,
:mod:`pacs.web.auth`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, bindparam, delete, func, insert, select, update

from pacs.errors import PacsError
from pacs.storage.schema import api_tokens, login_failures, sessions, users
from pacs.storage.sql import CompiledStatement, Database, driver_datetime

#: The roles, from most to least trusted.
ROLES = ("admin", "radiologist", "clinician", "uploader")

#: What an API token may be scoped to.
SCOPES = ("read", "write", "admin")

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 10
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_PREFIX = "pacs_"

# Failed logins within FAILURE_WINDOW: above these counts, login is refused until the window
# moves on, even with the right password.
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so that the answer takes as long
    (made on first use: every process imports this module, few check passwords)."""
    return _hasher.hash(secrets.token_hex(16))


class AccountError(PacsError):
    """A request about accounts that cannot be done (the message says why)."""


@dataclass(frozen=True)
class User:
    """A user as the authorisation sees it."""

    pk: int
    username: str
    role: str
    institutions: tuple[str, ...] = ()  # empty: every institution
    disabled: bool = False


@dataclass(frozen=True)
class Session:
    """A live browser session: a signed-in user's, or a share link's (``share_pk``)."""

    user: User | None
    share_pk: int | None
    csrf_token: str


@dataclass(frozen=True)
class Token:
    """An API token's record (never its secret)."""

    pk: int
    username: str
    label: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def hash_secret(secret: str) -> str:
    """The memory-hard hash of a password or PIN."""
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """True when ``secret`` matches ``stored_hash`` (a missing hash costs the same time)."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def digest(token: str) -> str:
    """The SHA-256 under which a high-entropy token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _user(row: Any) -> User:
    return _user_of(row._mapping)


def _user_of(row: Mapping[str, Any]) -> User:
    institutions = tuple(line for line in (row["institutions"] or "").splitlines() if line)
    return User(row["pk"], row["username"], row["role"], institutions, bool(row["disabled"]))


def _expired(expires_at: datetime | str | None) -> bool:
    """Whether an expiry read straight from the driver has passed (None: never expires)."""
    moment = driver_datetime(expires_at)
    return moment is not None and moment <= _now()


class Accounts:
    """The users, their tokens and sessions, in the index database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Every web request looks up its token or session: one statement, compiled once and
        # run on the driver's cursor (through SQLAlchemy it cost ~0.7 ms a request); the
        # expiry and revocation are compared here, where both drivers' dates can be read.
        dialect = db.engine.dialect
        user_columns = (users.c.pk, users.c.username, users.c.role, users.c.institutions,
                        users.c.disabled)
        self._by_token = CompiledStatement(
            select(*user_columns, api_tokens.c.scopes, api_tokens.c.expires_at,
                   api_tokens.c.revoked_at)
            .join(api_tokens, api_tokens.c.user_pk == users.c.pk)
            .where(api_tokens.c.token_hash == bindparam("hash")), dialect)
        self._by_session = CompiledStatement(
            select(sessions.c.user_pk, sessions.c.share_pk, sessions.c.csrf_token,
                   sessions.c.expires_at, *user_columns)
            .outerjoin(users, users.c.pk == sessions.c.user_pk)
            .where(sessions.c.token_hash == bindparam("hash")), dialect)

    # -- users ----------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str,
                 institutions: Sequence[str] = ()) -> User:
        """Create a user; :class:`AccountError` for a taken or malformed name, a weak
        password or an unknown role."""
        _check_username(username)
        _check_role(role)
        _check_password(password)
        now = _now()
        with self.db.writing() as conn:
            if conn.execute(select(users.c.pk).where(users.c.username == username)).first():
                raise AccountError(f"user {username!r} exists already")
            conn.execute(insert(users).values(
                username=username, password_hash=hash_secret(password), role=role,
                institutions=_institutions(institutions), disabled=False,
                created_at=now, updated_at=now))
        return self.user(username)

    def user(self, username: str) -> User:
        """The user called ``username``; :class:`AccountError` when there is none."""
        with self.db.reading() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            raise AccountError(f"no user {username!r}")
        return _user(row)

    def users(self) -> list[User]:
        with self.db.reading() as conn:
            return [_user(row) for row in conn.execute(select(users).order_by(users.c.username))]

    def has_users(self) -> bool:
        with self.db.reading() as conn:
            return conn.execute(select(users.c.pk).limit(1)).first() is not None

    def set_password(self, username: str, password: str) -> None:
        """Change a password; the user's sessions end (tokens stay: revoke them apart)."""
        _check_password(password)
        user = self.user(username)
        with self.db.writing() as conn:
            conn.execute(update(users).where(users.c.pk == user.pk).values(
                password_hash=hash_secret(password), updated_at=_now()))
            conn.execute(delete(sessions).where(sessions.c.user_pk == user.pk))

    def update_user(self, username: str, *, role: str | None = None,
                    institutions: Sequence[str] | None = None,
                    disabled: bool | None = None) -> User:
        """Change a user's role, institutions or disabled flag. Disabling ends the user's
        sessions; their tokens stop working while disabled."""
        user = self.user(username)
        values: dict[str, object] = {"updated_at": _now()}
        if role is not None:
            _check_role(role)
            values["role"] = role
        if institutions is not None:
            values["institutions"] = _institutions(institutions)
        if disabled is not None:
            values["disabled"] = disabled
        with self.db.writing() as conn:
            conn.execute(update(users).where(users.c.pk == user.pk).values(**values))
            if disabled:
                conn.execute(delete(sessions).where(sessions.c.user_pk == user.pk))
        return self.user(username)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user when the name and password match and the account is enabled."""
        with self.db.reading() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        ok = verify_secret(row.password_hash if row is not None else None, password)
        if not ok or row is None or row.disabled:
            return None
        return _user(row)

    # -- failed logins ----------------------------------------------------------------------

    def login_throttled(self, username: str, address: str) -> bool:
        """True when the account or the address failed too often within the window."""
        since = _now() - FAILURE_WINDOW
        with self.db.reading() as conn:
            by_account = conn.execute(select(func.count()).where(and_(
                login_failures.c.username == username, login_failures.c.at >= since))).scalar()
            by_address = conn.execute(select(func.count()).where(and_(
                login_failures.c.address == address, login_failures.c.at >= since))).scalar()
        return bool(by_account >= MAX_FAILURES_PER_ACCOUNT
                    or by_address >= MAX_FAILURES_PER_ADDRESS)

    def note_failed_login(self, username: str, address: str) -> None:
        now = _now()
        with self.db.writing() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.at < now - FAILURE_WINDOW))
            conn.execute(insert(login_failures).values(
                username=username[:64], address=address[:64], at=now))

    # -- API tokens ---------------------------------------------------------------------------

    def create_token(self, username: str, *, scopes: Sequence[str] = ("read",),
                     label: str = "", lifetime: timedelta | None = None) -> str:
        """A new API token for ``username``; the secret is returned here and never again."""
        user = self.user(username)
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise AccountError(f"scopes must be some of {', '.join(SCOPES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = _now()
        with self.db.writing() as conn:
            conn.execute(insert(api_tokens).values(
                user_pk=user.pk, token_hash=digest(token), label=label[:200],
                scopes=" ".join(s for s in SCOPES if s in scopes), created_at=now,
                expires_at=now + lifetime if lifetime else None))
        return token

    def tokens(self, username: str | None = None) -> list[Token]:
        query = (select(api_tokens, users.c.username)
                 .join(users, users.c.pk == api_tokens.c.user_pk)
                 .order_by(api_tokens.c.pk))
        if username is not None:
            query = query.where(users.c.username == username)
        with self.db.reading() as conn:
            return [Token(row.pk, row.username, row.label, tuple(row.scopes.split()),
                          driver_datetime(row.created_at), driver_datetime(row.expires_at),
                          driver_datetime(row.revoked_at)) for row in conn.execute(query)]

    def revoke_token(self, token_pk: int) -> None:
        with self.db.writing() as conn:
            done = conn.execute(update(api_tokens).where(and_(
                api_tokens.c.pk == token_pk, api_tokens.c.revoked_at.is_(None))).values(
                revoked_at=_now()))
        if done.rowcount == 0:
            raise AccountError(f"no active token {token_pk}")

    def user_for_token(self, token: str) -> tuple[User, tuple[str, ...]] | None:
        """The enabled user and scopes of a valid (known, unexpired, unrevoked) token."""
        with self.db.querying() as cursor:
            row = self._by_token.first(cursor, {"hash": digest(token)})
        if (row is None or row["disabled"] or row["revoked_at"] is not None
                or _expired(row["expires_at"])):
            return None
        return _user_of(row), tuple(row["scopes"].split())

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, *, user_pk: int | None = None, share_pk: int | None = None,
                     lifetime: timedelta = SESSION_LIFETIME) -> tuple[str, str]:
        """A new session for a user or a share link: ``(cookie secret, CSRF token)``."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _now()
        with self.db.writing() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
            conn.execute(insert(sessions).values(
                token_hash=digest(token), user_pk=user_pk, share_pk=share_pk,
                csrf_token=csrf, created_at=now, expires_at=now + lifetime))
        return token, csrf

    def session(self, token: str) -> Session | None:
        """The live session with this cookie secret (its user enabled), else None."""
        with self.db.querying() as cursor:
            row = self._by_session.first(cursor, {"hash": digest(token)})
        if row is None or _expired(row["expires_at"]):
            return None
        user = None
        if row["user_pk"] is not None:
            if row["disabled"]:
                return None
            user = _user_of(row)
        return Session(user, row["share_pk"], row["csrf_token"])

    def close_session(self, token: str) -> None:
        with self.db.writing() as conn:
            conn.execute(delete(sessions).where(sessions.c.token_hash == digest(token)))


def _check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise AccountError("user names are 1-64 letters, digits, '.', '_', '@' or '-', "
                           "starting with a letter or digit")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"passwords have at least {MIN_PASSWORD_LENGTH} characters")


def _institutions(names: Sequence[str]) -> str | None:
    cleaned = [name.strip() for name in names if name.strip()]
    return "\n".join(cleaned) if cleaned else None
