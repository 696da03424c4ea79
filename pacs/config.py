"""One settings object for every process of the archive.

Settings come from three layers, later ones winning:

1. the defaults below, which are the embedded setup (a folder and an SQLite file under ``./var``);
2. an optional TOML file (``PACS_CONFIG`` or ``--config``) whose keys are the field names;
3. ``PACS_<FIELD>`` environment variables (``PACS_DICOM_PORT=11112``).

Every value is checked once, in :meth:`Settings.load`; a bad one raises :class:`SettingsError`
naming the setting, so a typo fails at start and not at the first C-STORE. Secrets (the S3
secret key) are read from the environment only, never from a file that may end up in a repo.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pacs.dicom_peers import (
    AccessPolicy,
    PeerSettingError,
    RemoteAE,
    parse_access,
    parse_modalities,
)

ENV_PREFIX = "PACS_"
OBJECT_STORES = ("filesystem", "s3")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
_SECRET_FIELDS = ("s3_secret_key",)


class SettingsError(ValueError):
    """A setting has a value the archive cannot run with; the message names the setting."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """The archive's configuration; the defaults are the embedded setup under ``./var``."""

    data_dir: Path = field(
        default=Path("var"), metadata=_help("Folder for the embedded object store and index.")
    )
    database_url: str = field(
        default="",
        metadata=_help(
            "SQLAlchemy URL of the index: sqlite:///path or postgresql+psycopg://user@host/db. "
            "Empty means sqlite:///<data_dir>/index.sqlite."
        ),
    )
    object_store: str = field(
        default="filesystem", metadata=_help("Where instances are kept: filesystem or s3.")
    )
    objects_dir: Path | None = field(
        default=None,
        metadata=_help("Folder of the filesystem object store. Empty means <data_dir>/objects."),
    )
    s3_endpoint: str = field(
        default="", metadata=_help("host:port of the S3 server (MinIO, AWS, ...).")
    )
    s3_bucket: str = field(default="pacs", metadata=_help("S3 bucket; created if missing."))
    s3_access_key: str = field(default="", metadata=_help("S3 access key."))
    s3_secret_key: str = field(
        default="", metadata=_help("S3 secret key; only from the environment.")
    )
    s3_secure: bool = field(default=False, metadata=_help("Use HTTPS to reach the S3 server."))
    s3_region: str = field(default="", metadata=_help("S3 region, if the server needs one."))
    aet: str = field(default="PACS", metadata=_help("The archive's DICOM AE title."))
    dicom_host: str = field(
        default="0.0.0.0", metadata=_help("Address the DICOM receiver listens on.")
    )
    dicom_port: int = field(default=11112, metadata=_help("TCP port of the DICOM receiver."))
    max_associations: int = field(
        default=32, metadata=_help("Most DICOM associations served at once.")
    )
    workers: int = field(
        default=0,
        metadata=_help(
            "DICOM receiver processes sharing the port; associations are spread evenly "
            "between them. 0 means one per CPU core."
        ),
    )
    max_pdu_size: int = field(
        default=1048576,
        metadata=_help("Largest P-DATA PDU the receiver accepts, in bytes (0 = unlimited)."),
    )
    dimse_timeout: float = field(
        default=60.0, metadata=_help("Seconds to wait for a DIMSE message before aborting.")
    )
    network_timeout: float = field(
        default=60.0, metadata=_help("Seconds of network silence before an association aborts.")
    )
    log_level: str = field(default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR."))
    tls_port: int = field(
        default=0,
        metadata=_help("TCP port of the DICOM TLS listener (2762 by convention); 0 = no TLS."),
    )
    tls_certificate: Path | None = field(
        default=None, metadata=_help("PEM certificate (chain) of the TLS listener.")
    )
    tls_private_key: Path | None = field(
        default=None, metadata=_help("PEM private key of the TLS listener.")
    )
    tls_ca_certificates: Path | None = field(
        default=None,
        metadata=_help("PEM CA certificates; when set, TLS peers must present one they signed."),
    )
    find_fuzzy: bool = field(
        default=True,
        metadata=_help(
            "C-FIND matches person names ignoring case and accents (nguyen* finds Nguyễn)."
        ),
    )
    find_max_results: int = field(
        default=1000,
        metadata=_help("Most matches one C-FIND request or QIDO-RS search returns."),
    )
    http_host: str = field(
        default="127.0.0.1",
        metadata=_help(
            "Address the web service (DICOMweb, viewer) listens on; loopback by default. "
            "Every route but the health checks and the login page needs a signed-in user, "
            "an API token or a share link; serve other machines over TLS (a reverse proxy, "
            "or http_tls_certificate)."
        ),
    )
    http_port: int = field(
        default=8080, metadata=_help("TCP port of the web service; 0 = no web service.")
    )
    http_workers: int = field(
        default=0, metadata=_help("Web service worker processes; 0 means one per CPU core.")
    )
    http_tls_certificate: Path | None = field(
        default=None,
        metadata=_help("PEM certificate (chain): the web service then speaks HTTPS itself."),
    )
    http_tls_private_key: Path | None = field(
        default=None, metadata=_help("PEM private key of http_tls_certificate.")
    )
    trusted_proxies: int = field(
        default=0,
        metadata=_help(
            "Reverse proxies in front of the web service whose X-Forwarded-For/-Proto/-Host "
            "headers are believed (each adds one); 0 = none, the headers are ignored."
        ),
    )
    audit_syslog: str = field(
        default="",
        metadata=_help(
            "Also send each audit record as a DICOM audit message (PS3.15 A.5) by syslog "
            "(RFC 5424) to udp://host:port or tcp://host:port; empty = only the index."
        ),
    )
    stow_max_bytes: int = field(
        default=4 << 30,
        metadata=_help("Largest STOW-RS request body, in bytes (larger ones get 413)."),
    )
    cors_origins: str = field(
        default="",
        metadata=_help(
            "Origins (scheme://host[:port]) whose pages may call the web service from a "
            "browser, comma-separated; * for any; empty for none."
        ),
    )
    public_url: str = field(
        default="",
        metadata=_help(
            "The web service's address as clients see it (https://pacs.example.org), for the "
            "URLs in responses; empty means the address each request came to."
        ),
    )
    http_access_log: str = field(
        default="",
        metadata=_help(
            "Where the web service logs each request (method, path, status, bytes, time): "
            "a file, - for standard error; empty for no request log."
        ),
    )
    archive_name: str = field(
        default="Filmless PACS",
        metadata=_help("The archive's name, as the landing page and the viewer show it."),
    )
    viewer_dir: Path = field(
        default=Path("var/viewer"),
        metadata=_help(
            "Folder the OHIF Viewer is installed into (`pacs viewer install`) and served "
            "from, under /viewer/."
        ),
    )
    viewer_url: str = field(
        default="",
        metadata=_help(
            "An OHIF Viewer the site hosts itself (https://viewer.example.org/); /viewer/ "
            "then sends the browser there instead of serving the bundled one."
        ),
    )
    modalities: str = field(
        default="",
        metadata=_help(
            "Remote AEs the archive sends to (C-MOVE destinations): "
            "'AET=host:port,AET2=host:port'; in TOML also a table of AET = 'host:port'."
        ),
    )
    access: str = field(
        default="",
        metadata=_help(
            "Calling AE titles allowed in, from where, for what: "
            "'CT01@10.0.0.21:store+commit,WS1:query+retrieve,*@127.0.0.1' "
            "(operations: store, query, retrieve, commit, echo; none = all). "
            "Empty = any caller may do anything (logged as a warning)."
        ),
    )

    # -- derived values -------------------------------------------------------------------

    @property
    def index_url(self) -> str:
        """The SQLAlchemy URL of the index, with the embedded default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def remote_aes(self) -> dict[str, RemoteAE]:
        """The ``modalities`` setting parsed: remote AEs keyed by AE title."""
        return parse_modalities(self.modalities)

    @property
    def access_policy(self) -> AccessPolicy:
        """The ``access`` setting parsed into rules."""
        return parse_access(self.access)

    @property
    def objects_path(self) -> Path:
        """The filesystem object store's folder, with the embedded default filled in."""
        return self.objects_dir if self.objects_dir is not None else self.data_dir / "objects"

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        toml_path: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, an optional TOML file, the environment and overrides.

        Parameters
        ----------
        environ
            Environment to read ``PACS_*`` variables from; ``os.environ`` when omitted.
        toml_path
            TOML file with field names as keys; ``PACS_CONFIG`` from ``environ`` when omitted.
        **overrides
            Values that win over everything else (command-line options); ``None`` is ignored.

        Raises
        ------
        SettingsError
            If a value is missing, malformed or out of range; the message names the setting.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        toml_path = toml_path or environ.get(f"{ENV_PREFIX}CONFIG") or None
        if toml_path:
            raw.update(_read_toml(Path(toml_path)))
        known = {f.name for f in fields(cls)}
        for name in known:
            value = environ.get(ENV_PREFIX + name.upper())
            if value is not None:
                raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r}")
        settings = cls(**{name: _coerce(cls, name, value) for name, value in raw.items()})
        settings.validate()
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a validated copy with some fields changed (used by tests and the CLI)."""
        coerced = {k: _coerce(type(self), k, v) for k, v in changes.items() if v is not None}
        updated = replace(self, **coerced)
        updated.validate()
        return updated

    def validate(self) -> None:
        """Check every value; raise :class:`SettingsError` naming the first bad one."""
        if not _AE_TITLE.match(self.aet) or not self.aet.strip():
            raise SettingsError(
                f"aet: {self.aet!r} is not a valid AE title (1-16 printable ASCII, no backslash)"
            )
        if not 1 <= self.dicom_port <= 65535:
            raise SettingsError(f"dicom_port: {self.dicom_port} is not a TCP port (1-65535)")
        if not 0 <= self.workers <= 64:
            raise SettingsError("workers: must be between 0 (one per core) and 64")
        if self.max_associations < 1:
            raise SettingsError("max_associations: must be at least 1")
        if self.max_pdu_size != 0 and not 4096 <= self.max_pdu_size <= 2**32 - 1:
            raise SettingsError("max_pdu_size: must be 0 (unlimited) or at least 4096")
        if self.dimse_timeout <= 0 or self.network_timeout <= 0:
            raise SettingsError("dimse_timeout/network_timeout: must be positive")
        if (self.http_tls_certificate is None) != (self.http_tls_private_key is None):
            raise SettingsError("http_tls_certificate/http_tls_private_key: set both or neither")
        if not 0 <= self.trusted_proxies <= 8:
            raise SettingsError("trusted_proxies: must be between 0 and 8")
        if self.audit_syslog and not re.fullmatch(r"(udp|tcp)://[^\s:/]+:\d{1,5}",
                                                  self.audit_syslog):
            raise SettingsError("audit_syslog: must be udp://host:port or tcp://host:port")
        if self.object_store not in OBJECT_STORES:
            raise SettingsError(
                f"object_store: {self.object_store!r} is not one of {', '.join(OBJECT_STORES)}"
            )
        if self.object_store == "s3":
            for name in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key"):
                if not getattr(self, name):
                    raise SettingsError(f"{name}: required when object_store is s3")
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.s3_bucket):
                raise SettingsError(f"s3_bucket: {self.s3_bucket!r} is not a valid bucket name")
        scheme = self.index_url.split(":", 1)[0]
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise SettingsError(
                f"database_url: scheme {scheme!r} is not supported (sqlite or postgresql)"
            )
        if self.tls_port:
            if not 1 <= self.tls_port <= 65535 or self.tls_port == self.dicom_port:
                raise SettingsError(
                    f"tls_port: {self.tls_port} must be a TCP port other than dicom_port"
                )
            for name in ("tls_certificate", "tls_private_key"):
                path = getattr(self, name)
                if path is None or not Path(path).is_file():
                    raise SettingsError(f"{name}: a readable file is required when tls_port "
                                        f"is set (got {path})")
        if self.find_max_results < 1:
            raise SettingsError("find_max_results: must be at least 1")
        if not 0 <= self.http_port <= 65535:
            raise SettingsError(f"http_port: {self.http_port} is not a TCP port (1-65535)")
        if self.http_port and self.http_port in (self.dicom_port, self.tls_port):
            raise SettingsError("http_port: must differ from dicom_port and tls_port")
        for origin in self.cors_origin_list:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise SettingsError(
                    f"cors_origins: {origin!r} is not an origin (https://host[:port]) or *")
        if self.stow_max_bytes < 1:
            raise SettingsError("stow_max_bytes: must be at least 1")
        if not 0 <= self.http_workers <= 64:
            raise SettingsError("http_workers: must be between 0 (one per core) and 64")
        for name in ("public_url", "viewer_url"):
            url = getattr(self, name)
            if url and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
                raise SettingsError(f"{name}: {url!r} is not an http:// or https:// URL")
        if not self.archive_name.strip():
            raise SettingsError("archive_name: must not be empty")
        try:
            parse_modalities(self.modalities)
            parse_access(self.access)
        except PeerSettingError as exc:
            raise SettingsError(str(exc)) from None
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"log_level: {self.log_level!r} is not a log level")

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The ``cors_origins`` setting as a tuple of origins."""
        return tuple(part.strip().rstrip("/") for part in self.cors_origins.split(",")
                     if part.strip())

    def describe(self) -> dict[str, str]:
        """Settings as printable strings, secrets masked (for logs and ``pacs serve``)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in _SECRET_FIELDS and value else str(value)
        out["database_url"] = _mask_password(self.database_url)
        out["index_url"] = _mask_password(self.index_url)
        return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"config: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config: {path} is not valid TOML: {exc}") from exc
    for secret in _SECRET_FIELDS:
        if secret in data:
            raise SettingsError(
                f"{secret}: secrets are read from the environment "
                f"({ENV_PREFIX}{secret.upper()}), not from {path}"
            )
    return data


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or fail naming the field."""
    kind = {f.name: f.type for f in fields(cls)}.get(name)
    if kind is None:
        raise SettingsError(f"unknown setting {name!r}")
    if name == "modalities" and isinstance(value, Mapping):
        value = ",".join(f"{title}={where}" for title, where in value.items())
    elif name == "access" and isinstance(value, list):
        value = ",".join(str(entry) for entry in value)
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind in ("Path", "Path | None"):
            return Path(value) if str(value) else None if kind == "Path | None" else Path(".")
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: {value!r} is not a valid {kind}") from None


def _mask_password(url: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]+@", r"\1***@", url)
