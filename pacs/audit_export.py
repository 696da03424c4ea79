"""Exports of the audit trail: CSV for people, DICOM audit messages for audit repositories.

:func:`events_to_csv` writes RFC 4180 CSV for spreadsheets; :func:`audit_message` and
:func:`events_to_dicom_xml` write DICOM audit messages (PS3.15 A.5, the schema derived from
RFC 3881); :class:`SyslogSender` sends those to an audit record repository (RFC 5424 syslog
over UDP as PS3.15 A.7 says, or over TCP with RFC 6587 octet counting).

How an :class:`~pacs.audit.Action` becomes a DICOM audit event (PS3.15 A.5.3; PS3.16 CID 400
event IDs, CID 401 action codes, CID 402 roles, CID 403 security alert types)::

    action        EventID (DCM)                       EventActionCode, EventTypeCode (DCM)
    store         110104 DICOM Instances Transferred  C  (actor: source, archive: destination)
    query         110112 Query                        E  (actor: source, archive: destination)
    retrieve      110104 DICOM Instances Transferred  R  (actor: destination, archive: source)
    view          110103 DICOM Instances Accessed     R
    share-use     110103 DICOM Instances Accessed     R
    share-create  110113 Security Alert               E  110135 Object Security Attributes Changed
    share-revoke  110113 Security Alert               E  110135 Object Security Attributes Changed
    admin         110113 Security Alert               E  110129 Security Configuration
    login         110114 User Authentication          E  110122 Login
    login-failed  110114 User Authentication          E  110122 Login (outcome always 4)
    logout        110114 User Authentication          E  110123 Logout

A share link changes who may read one study, which is what "Object Security Attributes
Changed" describes. ``admin`` covers users, tokens and settings: all of them decide who may
see what, hence "Security Configuration" rather than one narrower code per kind of change
(the event's ``detail`` says which).

The schema has no one place for ``detail``: a failure's reason goes to
``EventOutcomeDescription``, a query (base64) to ``ParticipantObjectQuery``, anything else to a
``ParticipantObjectDetail`` of type ``detail`` on the study or patient object (or, without
either, to ``EventOutcomeDescription``). ``count`` becomes ``<SOPClass NumberOfInstances>`` on
the study object or a ``count`` detail on the first other object; with no object at all the
XML has no place for it (the CSV export is the lossless one).
"""

from __future__ import annotations

import base64
import csv
import io
import ipaddress
import itertools
import os
import re
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from pacs.audit import Action, ActorKind, AuditEvent, Outcome

CSV_COLUMNS: tuple[str, ...] = (
    "at", "action", "outcome", "actor_kind", "actor", "address", "protocol",
    "patient_id", "study_uid", "count", "detail",
)

# A spreadsheet evaluates a cell starting with one of these (tab and CR can hide the rest).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Everything XML 1.0 cannot carry, even as a character reference (section 2.2).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'


def events_to_csv(events: Iterable[AuditEvent]) -> Iterator[str]:
    """Stream ``events`` as CSV text, the header first.

    Parameters
    ----------
    events
        The events, in the order wanted in the file.

    Returns
    -------
    Iterator[str]
        Chunks of RFC 4180 CSV (CRLF line ends, quoting as needed) with the columns of
        :data:`CSV_COLUMNS`. ``at`` is ISO 8601 UTC ending in ``Z``; a cell starting with
        ``= + - @``, a tab or a CR gets a leading ``'`` so that spreadsheets show it as text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in itertools.chain([CSV_COLUMNS], map(_csv_values, events)):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _csv_values(event: AuditEvent) -> list[str]:
    count = "" if event.count is None else str(event.count)
    cells = [_iso(event.at), str(event.action), str(event.outcome), str(event.actor_kind),
             event.actor, event.address, event.protocol, event.patient_id or "",
             event.study_uid or "", count, event.detail]
    return ["'" + cell if cell.startswith(_FORMULA_START) else cell for cell in cells]


def _iso(at: datetime) -> str:
    if at.tzinfo is None:  # naive datetimes in the trail are UTC (see AuditEvent.from_row)
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- DICOM audit messages (PS3.15 A.5) ------------------------------------------------------

class Code(NamedTuple):
    """A coded value: ``csd-code``, ``codeSystemName`` and ``originalText`` in the schema."""

    value: str
    scheme: str
    meaning: str


class EventCodes(NamedTuple):
    event_id: Code
    action_code: str
    type_code: Code | None
    requestor_role: Code | None  # RoleIDCode of the actor, CID 402
    archive_role: Code | None  # RoleIDCode of this archive


_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
_QUERY = Code("110112", "DCM", "Query")
_SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
_LOGIN = Code("110122", "DCM", "Login")
_LOGOUT = Code("110123", "DCM", "Logout")
_SECURITY_CONFIGURATION = Code("110129", "DCM", "Security Configuration")
_OBJECT_SECURITY = Code("110135", "DCM", "Object Security Attributes Changed")
_SOURCE = Code("110153", "DCM", "Source Role ID")
_DESTINATION = Code("110152", "DCM", "Destination Role ID")
_PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
_STUDY_UID = Code("110180", "DCM", "Study Instance UID")
_SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
_URI = Code("12", "RFC-3881", "URI")

EVENT_CODES: dict[Action, EventCodes] = {
    Action.STORE: EventCodes(_TRANSFERRED, "C", None, _SOURCE, _DESTINATION),
    Action.QUERY: EventCodes(_QUERY, "E", None, _SOURCE, _DESTINATION),
    Action.RETRIEVE: EventCodes(_TRANSFERRED, "R", None, _DESTINATION, _SOURCE),
    Action.VIEW: EventCodes(_ACCESSED, "R", None, None, None),
    Action.SHARE_USE: EventCodes(_ACCESSED, "R", None, None, None),
    Action.SHARE_CREATE: EventCodes(_SECURITY_ALERT, "E", _OBJECT_SECURITY, None, None),
    Action.SHARE_REVOKE: EventCodes(_SECURITY_ALERT, "E", _OBJECT_SECURITY, None, None),
    Action.ADMIN: EventCodes(_SECURITY_ALERT, "E", _SECURITY_CONFIGURATION, None, None),
    Action.LOGIN: EventCodes(_AUTHENTICATION, "E", _LOGIN, None, None),
    Action.LOGIN_FAILED: EventCodes(_AUTHENTICATION, "E", _LOGIN, None, None),
    Action.LOGOUT: EventCodes(_AUTHENTICATION, "E", _LOGOUT, None, None),
}  # the table in the module docstring

_UID = re.compile(r"[0-9]+(\.[0-9]+)+")


def audit_message(event: AuditEvent, *, source_id: str) -> bytes:
    """Render ``event`` as one DICOM audit message.

    Parameters
    ----------
    event
        The event to report.
    source_id
        This archive's name as an audit source: ``AuditSourceID``, and the ``UserID`` of the
        archive's own ``ActiveParticipant``.

    Returns
    -------
    bytes
        A UTF-8 XML document whose root is ``<AuditMessage>`` (DICOM PS3.15 A.5.1). Characters
        that XML 1.0 cannot carry are dropped from every text value.
    """
    return _XML_DECLARATION + _serialise(_message(event, source_id))


def events_to_dicom_xml(events: Iterable[AuditEvent], *, source_id: str) -> Iterator[bytes]:
    """Stream ``events`` as one ``<AuditMessages>`` document for download.

    Parameters
    ----------
    events, source_id
        As for :func:`audit_message`; the document holds one ``<AuditMessage>`` per event.

    Returns
    -------
    Iterator[bytes]
        UTF-8 chunks of the document.
    """
    yield _XML_DECLARATION + b"<AuditMessages>"
    for event in events:
        yield _serialise(_message(event, source_id))
    yield b"</AuditMessages>"


def _serialise(element: ET.Element) -> bytes:
    return ET.tostring(element, encoding="unicode").encode("utf-8")


def _clean(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _add(parent: ET.Element, tag: str, attrs: dict[str, str] | None = None,
         text: str | None = None) -> ET.Element:
    """Append a child; every value passes through :func:`_clean`, the one escape point."""
    child = ET.SubElement(parent, tag, {k: _clean(v) for k, v in (attrs or {}).items()})
    if text is not None:
        child.text = _clean(text)
    return child


def _add_code(parent: ET.Element, tag: str, code: Code) -> None:
    _add(parent, tag, {"csd-code": code.value, "codeSystemName": code.scheme,
                       "originalText": code.meaning})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")


def _failed(event: AuditEvent) -> bool:
    return event.outcome == Outcome.FAILURE or event.action == Action.LOGIN_FAILED


def _message(event: AuditEvent, source_id: str) -> ET.Element:
    codes = EVENT_CODES[Action(event.action)]
    failed = _failed(event)
    query = event.detail if event.action == Action.QUERY and not failed else ""
    query = query if query.strip() else ""
    detail = "" if query else event.detail
    root = ET.Element("AuditMessage")

    identification = _add(root, "EventIdentification", {
        "EventActionCode": codes.action_code, "EventDateTime": _iso(event.at),
        "EventOutcomeIndicator": "4" if failed else "0"})
    _add_code(identification, "EventID", codes.event_id)
    if codes.type_code is not None:
        _add_code(identification, "EventTypeCode", codes.type_code)
    if detail and (failed or not (event.study_uid or event.patient_id)):
        _add(identification, "EventOutcomeDescription", text=detail)
        detail = ""

    _add_requestor(root, event, codes.requestor_role)
    archive = _add(root, "ActiveParticipant", {"UserID": source_id, "UserIsRequestor": "false"})
    if codes.archive_role is not None:
        _add_code(archive, "RoleIDCode", codes.archive_role)
    source = _add(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _add(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    _add_objects(root, event, query=query, detail=detail)
    return root


def _add_objects(root: ET.Element, event: AuditEvent, *, query: str, detail: str) -> None:
    """Append the objects the event concerns; the first one carries ``detail`` and ``count``."""
    objects: list[tuple[str, str, str, Code]] = []  # ID, type, role, ID type
    if query:
        # PS3.15 A.5.3.11 names a C-FIND by its SOP class; a QIDO-RS query by its URI.
        first = query.split(maxsplit=1)[0]
        objects.append((first, "2", "24", _SOP_CLASS_UID if _UID.fullmatch(first) else _URI))
    if event.study_uid:
        objects.append((event.study_uid, "2", "3", _STUDY_UID))
    if event.patient_id:
        objects.append((event.patient_id, "1", "1", _PATIENT_NUMBER))
    for index, (object_id, type_code, role, id_type) in enumerate(objects):
        obj = _add(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role})
        # The schema fixes the order: ID type code, query, details, descriptions.
        _add_code(obj, "ParticipantObjectIDTypeCode", id_type)
        if index > 0:
            continue
        if query:
            _add(obj, "ParticipantObjectQuery", text=_b64(query))
        if detail:
            _add(obj, "ParticipantObjectDetail", {"type": "detail", "value": _b64(detail)})
        if event.count is not None and id_type is _STUDY_UID:
            description = _add(obj, "ParticipantObjectDescription")
            _add(description, "SOPClass", {"NumberOfInstances": str(event.count)})
        elif event.count is not None:
            _add(obj, "ParticipantObjectDetail",
                 {"type": "count", "value": _b64(str(event.count))})


def _add_requestor(root: ET.Element, event: AuditEvent, role: Code | None) -> None:
    attrs = {"UserID": event.actor or "anonymous"}
    if ActorKind(event.actor_kind) is ActorKind.AE and event.actor:
        attrs["AlternativeUserID"] = f"AETITLES={event.actor}"  # PS3.15 A.5.2.2
    attrs["UserIsRequestor"] = "true"
    if event.address:
        attrs["NetworkAccessPointID"] = event.address
        attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(event.address) else "1"
    participant = _add(root, "ActiveParticipant", attrs)
    if role is not None:
        _add_code(participant, "RoleIDCode", role)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


# -- syslog (RFC 5424) ----------------------------------------------------------------------

_FACILITY = 10  # security/authorization messages, PS3.15 A.7
_NOTICE, _WARNING = 5, 4
_MSGID = "DICOM+RFC3881"  # PS3.15 A.7
_BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: a UTF-8 MSG starts with the BOM


def _printable(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII, at most ``limit`` long, or ``-``."""
    value = "".join(c for c in text if "!" <= c <= "~")[:limit]
    return value or "-"


class SyslogSender:
    """Sends DICOM audit messages to an audit record repository over syslog.

    Parameters
    ----------
    host, port
        The repository (PS3.15 A.7: port 514 by default).
    transport
        ``"udp"`` (RFC 5426, one message per datagram) or ``"tcp"`` (RFC 6587 octet
        counting, ``LEN SP MSG``, the framing RFC 5425 uses over TLS).
    app_name
        The RFC 5424 APP-NAME.

    Raises
    ------
    ValueError
        For any other ``transport``.

    Notes
    -----
    The socket is opened by the first :meth:`send`; a dropped TCP connection is opened again
    once. A lock serialises sending, so threads may share one sender.
    """

    def __init__(self, host: str, port: int = 514, *, transport: str = "udp",
                 app_name: str = "pacs") -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"syslog transport must be 'udp' or 'tcp', not {transport!r}")
        self._address = (host, port)
        self._transport = transport
        self._app_name = _printable(app_name, 48)
        self._hostname = _printable(socket.gethostname(), 255)
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, event: AuditEvent, *, source_id: str) -> None:
        """Send ``event`` as one syslog message carrying :func:`audit_message`.

        Raises
        ------
        OSError
            When the repository cannot be reached.
        """
        message = self._frame(event, source_id)
        with self._lock:
            if self._transport == "udp":
                self._connected().send(message)
                return
            reused = self._socket is not None
            try:
                self._connected().sendall(message)
            except OSError:
                self._close()
                if not reused:
                    raise
                self._connected().sendall(message)  # the repository dropped an idle connection

    def close(self) -> None:
        """Close the socket; a later :meth:`send` opens a new one."""
        with self._lock:
            self._close()

    def __enter__(self) -> SyslogSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _frame(self, event: AuditEvent, source_id: str) -> bytes:
        pri = _FACILITY * 8 + (_WARNING if _failed(event) else _NOTICE)
        header = (f"<{pri}>1 {_iso(event.at)} {self._hostname} {self._app_name} "
                  f"{os.getpid()} {_MSGID} - ")
        message = header.encode("ascii") + _BOM + audit_message(event, source_id=source_id)
        if self._transport == "tcp":
            return f"{len(message)} ".encode("ascii") + message
        return message

    def _connected(self) -> socket.socket:
        if self._socket is None:
            kind = socket.SOCK_DGRAM if self._transport == "udp" else socket.SOCK_STREAM
            family, _, _, _, address = socket.getaddrinfo(*self._address, type=kind)[0]
            sock = socket.socket(family, kind)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self._socket = sock
        return self._socket

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
