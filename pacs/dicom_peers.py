"""Known DICOM peers and who may do what: parsed once from the settings.

Two settings describe the DICOM world around the archive:

* ``modalities`` names the remote AEs the archive sends to (C-MOVE destinations, storage
  commitment replies): ``"STORESCP=127.0.0.1:11113,WS1=10.0.0.5:104"``.
* ``access`` lists which calling AE titles may open associations and for what, optionally from
  which hosts: ``"CT01@10.0.0.21:store+commit,WS1:query+retrieve,*@127.0.0.1"``. An entry
  without permissions allows everything; ``*`` as the AE title matches any caller. Empty means
  any caller may do anything (the embedded demo); ``pacs serve`` logs a warning then.

AE titles are compared without their padding spaces, and case-sensitively (PS3.8 9.3.1.1 makes
them significant as sent). Host parts are IP addresses or networks (``10.0.0.0/24``); names are
not resolved, so access cannot depend on DNS answers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


class PeerSettingError(ValueError):
    """A peer or access entry is malformed; the message says which and why."""


class Operation(Enum):
    """What a calling AE may ask of the archive."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    COMMIT = "commit"
    ECHO = "echo"


ALL_OPERATIONS = frozenset(Operation)


@dataclass(frozen=True)
class RemoteAE:
    """A remote application entity the archive can open an association to."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class AccessRule:
    """One ``access`` entry: an AE title (or ``*``), the networks it may come from, and what
    it may do."""

    ae_title: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    operations: frozenset[Operation]

    def matches(self, ae_title: str, address: str) -> bool:
        """True if a caller with this AE title from this address is the one the rule names."""
        if self.ae_title != "*" and self.ae_title != ae_title.strip():
            return False
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


@dataclass(frozen=True)
class AccessPolicy:
    """The ``access`` setting as rules; an empty policy lets any caller do anything."""

    rules: tuple[AccessRule, ...] = ()

    @property
    def open(self) -> bool:
        """True when no rule is configured (any caller is accepted)."""
        return not self.rules

    def operations(self, ae_title: str, address: str) -> frozenset[Operation]:
        """Everything this caller may do: the union of the rules that match it."""
        if self.open:
            return ALL_OPERATIONS
        allowed: set[Operation] = set()
        for rule in self.rules:
            if rule.matches(ae_title, address):
                allowed |= rule.operations
        if allowed:
            allowed.add(Operation.ECHO)  # a known caller may always check the connection
        return frozenset(allowed)

    def allows(self, ae_title: str, address: str, operation: Operation) -> bool:
        """True if this caller may perform ``operation``."""
        return operation in self.operations(ae_title, address)


def validate_ae_title(value: str, what: str) -> str:
    """Return the AE title without padding, or raise naming ``what`` when it is not valid."""
    title = value.strip()
    if not title or not _AE_TITLE.match(title):
        raise PeerSettingError(
            f"{what}: {value!r} is not a valid AE title (1-16 printable ASCII, no backslash)"
        )
    return title


def parse_modalities(text: str) -> dict[str, RemoteAE]:
    """Parse ``"AET=host:port,AET2=host:port"`` into remote AEs keyed by AE title."""
    remotes: dict[str, RemoteAE] = {}
    for entry in _entries(text):
        title, sep, where = entry.partition("=")
        if not sep:
            raise PeerSettingError(f"modalities: {entry!r} is not AET=host:port")
        title = validate_ae_title(title, "modalities")
        host, sep, port_text = where.strip().rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise PeerSettingError(f"modalities: {entry!r} is not AET=host:port")
        if title in remotes:
            raise PeerSettingError(f"modalities: {title!r} is listed twice")
        remotes[title] = RemoteAE(title, host.strip("[]"), int(port_text))
    return remotes


def parse_access(text: str) -> AccessPolicy:
    """Parse ``"AET[@net[;net]][:op+op],..."`` into an :class:`AccessPolicy`."""
    rules = []
    for entry in _entries(text):
        who, sep, ops_text = entry.partition(":")
        if sep and not ops_text.strip():
            raise PeerSettingError(f"access: {entry!r} names no operation after ':'")
        title, at, hosts = who.partition("@")
        title = "*" if title.strip() == "*" else validate_ae_title(title, "access")
        networks = tuple(_network(host, entry) for host in hosts.split(";") if host.strip())
        if at and not networks:
            raise PeerSettingError(f"access: {entry!r} has an empty host after '@'")
        operations = (frozenset(_operation(op, entry) for op in ops_text.split("+"))
                      if sep else ALL_OPERATIONS)
        rules.append(AccessRule(title, networks, operations))
    return AccessPolicy(tuple(rules))


def _entries(text: str) -> Iterable[str]:
    return (entry.strip() for entry in text.split(",") if entry.strip())


def _network(host: str, entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(host.strip(), strict=False)
    except ValueError:
        raise PeerSettingError(
            f"access: {host.strip()!r} in {entry!r} is not an IP address or network "
            "(names are not resolved)"
        ) from None


def _operation(name: str, entry: str) -> Operation:
    try:
        return Operation(name.strip().lower())
    except ValueError:
        known = ", ".join(op.value for op in Operation)
        raise PeerSettingError(
            f"access: {name.strip()!r} in {entry!r} is not one of {known}"
        ) from None
