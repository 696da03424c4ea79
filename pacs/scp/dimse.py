"""C-STORE request and response messages decoded and encoded by hand.

pynetdicom decodes every command set into a pydicom ``Dataset``, copies it element by element
into a primitive, and encodes each response by building a ``Dataset`` twice (once to measure
the group length, once to send it). For a C-STORE that is ~0.25 ms to read the request and
~0.8 ms to answer it: more than all the socket work of a 0.5 MB instance.

A C-STORE command set is small and fixed (PS3.7 9.3.1, always Implicit VR Little Endian,
PS3.7 6.3.1), so :class:`ReceiverDIMSE` reads and writes it directly:

* a C-STORE-RQ whose command arrives in one fragment is parsed by :func:`parse_command` and
  its dataset fragments are collected in a list and joined once at the end (pynetdicom grows a
  ``BytesIO`` fragment by fragment); the result is the same :class:`C_STORE` primitive, with
  every value set through pynetdicom's own validating setters;
* a C-STORE-RSP is encoded by :func:`encode_store_response`, byte for byte what pynetdicom
  would send (``tests/test_scp_dimse.py`` compares them).

Handlers bound to ``EVT_DIMSE_RECV`` / ``EVT_DIMSE_SENT`` still see each C-STORE message, as
pynetdicom's message classes whose command set is built only if the handler reads it
(:class:`StoreRequestMessage`, :class:`StoreResponseMessage`): a handler that only looks at
the message type costs nothing. Anything else (C-ECHO, a command split over fragments, a
response with an Offending Element, pynetdicom's chunked-to-file mode, pynetdicom's own
logging handlers bound because its logger is at INFO) takes pynetdicom's own path unchanged.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import _config, dimse_messages, evt
from pynetdicom._handlers import standard_dimse_recv_handler, standard_dimse_sent_handler
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

Buffer = bytes | bytearray | memoryview

LOGGER = logging.getLogger("pynetdicom.dimse")

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RSP = 0x8020
NO_DATASET = 0x0101
HAS_DATASET = 0x0001
_COMMAND = 0x01  # message control header bits (PS3.8 E.2)
_LAST = 0x02
_COMMAND_LAST = bytes([_COMMAND | _LAST])
_DATASET_LAST = bytes([_LAST])

# Command elements (group 0000) by element number.
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_RESPONDED_TO = 0x0120
_MOVE_ORIGINATOR_AET = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031
_PRIORITY = 0x0700
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE = 0x1000

_ELEMENT_HEADER = struct.Struct("<HHL")
_PDU_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LB")
_US = struct.Struct("<H")


def parse_command(data: Buffer) -> dict[int, bytes] | None:
    """The elements of an encoded command set, by element number; None if it is malformed.

    Parameters
    ----------
    data
        A command set in Implicit VR Little Endian (PS3.7 6.3.1): group 0000 only.

    Returns
    -------
    dict or None
        ``{element: value bytes}``, or ``None`` if an element is outside group 0000 or runs
        past the end of ``data``.
    """
    view = memoryview(data)
    elements: dict[int, bytes] = {}
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(view, offset)
        offset += 8
        if group != 0x0000 or length > end - offset:
            return None
        elements[element] = bytes(view[offset : offset + length])
        offset += length
    return elements


def _us(elements: dict[int, bytes], element: int) -> int | None:
    value = elements.get(element)
    return _US.unpack(value)[0] if value is not None and len(value) == 2 else None


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", errors="replace")


def store_request(elements: dict[int, bytes]) -> C_STORE | None:
    """The C-STORE-RQ primitive (without its dataset) for parsed command elements.

    Returns ``None`` if the command is not a C-STORE request with a dataset, or lacks one of
    its mandatory elements (PS3.7 Table 9.3-1); pynetdicom's own decoder then deals with it.
    Values go through pynetdicom's setters, which validate them (``ValueError`` if invalid).
    """
    if _us(elements, _COMMAND_FIELD) != C_STORE_RQ:
        return None
    dataset_type = _us(elements, _DATASET_TYPE)
    message_id = _us(elements, _MESSAGE_ID)
    priority = _us(elements, _PRIORITY)
    if dataset_type is None or dataset_type == NO_DATASET or message_id is None:
        return None
    if priority is None or _AFFECTED_SOP_CLASS not in elements:
        return None
    if _AFFECTED_SOP_INSTANCE not in elements:
        return None
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = _text(elements[_AFFECTED_SOP_CLASS])
    request.AffectedSOPInstanceUID = _text(elements[_AFFECTED_SOP_INSTANCE])
    request.Priority = priority
    if _MOVE_ORIGINATOR_AET in elements:
        request.MoveOriginatorApplicationEntityTitle = _text(elements[_MOVE_ORIGINATOR_AET])
    move_id = _us(elements, _MOVE_ORIGINATOR_ID)
    if move_id is not None:
        request.MoveOriginatorMessageID = move_id
    return request


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _lo(value: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_response_command(
    command_field: int,
    responded_to: int,
    status: int,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    has_dataset: bool = False,
    error_comment: str | None = None,
) -> bytes:
    """The command set of a DIMSE-C response without an Offending Element (PS3.7 9.3).

    Affected SOP Class UID, Command Field, Message ID Being Responded To, Command Data Set
    Type (0x0001 with a dataset, 0x0101 without, as pynetdicom writes them), Status, Error
    Comment and Affected SOP Instance UID, in tag order, after the Command Group Length.
    ``error_comment`` must be ASCII.
    """
    body = []
    if sop_class_uid:
        body.append(_element(_AFFECTED_SOP_CLASS, _uid(sop_class_uid)))
    body.append(_element(_COMMAND_FIELD, _US.pack(command_field)))
    body.append(_element(_RESPONDED_TO, _US.pack(responded_to)))
    body.append(_element(_DATASET_TYPE, _US.pack(HAS_DATASET if has_dataset else NO_DATASET)))
    body.append(_element(_STATUS, _US.pack(status)))
    if error_comment is not None:
        body.append(_element(_ERROR_COMMENT, _lo(error_comment)))
    if sop_instance_uid:
        body.append(_element(_AFFECTED_SOP_INSTANCE, _uid(sop_instance_uid)))
    encoded = b"".join(body)
    return _element(_GROUP_LENGTH, struct.pack("<L", len(encoded))) + encoded


def encode_store_response(response: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP (PS3.7 Table 9.3-2), or None if it cannot be done
    here.

    Returns ``None`` for a response carrying an Offending Element or non-ASCII text;
    pynetdicom encodes those itself.
    """
    if response.OffendingElement is not None or response.Status is None:
        return None
    if response.MessageIDBeingRespondedTo is None:
        return None
    comment = response.ErrorComment
    if comment is not None and not comment.isascii():
        return None
    return encode_response_command(
        C_STORE_RSP,
        response.MessageIDBeingRespondedTo,
        response.Status,
        sop_class_uid=response.AffectedSOPClassUID,
        sop_instance_uid=response.AffectedSOPInstanceUID,
        error_comment=comment,
    )


class PDataRun(P_DATA):
    """Several P-DATA-TF PDUs handed to the DUL as one primitive, written in one go.

    ``pdus`` holds each PDU's presentation data values (``[context ID, control header +
    fragment]``, as in :attr:`P_DATA.presentation_data_value_list`) and ``encoded`` the PDUs
    on the wire, one after the other. The receiver's DUL writes ``encoded`` with one socket
    call (:meth:`pacs.scp.reactor.ReceiverDUL.send_run`) instead of taking each PDU through
    its queue, its state machine and a socket call of its own.
    """

    def __init__(self, pdus: list[list[list[Any]]], encoded: bytes) -> None:
        super().__init__()
        self.pdus = pdus
        self.encoded = encoded
        self.presentation_data_value_list = [value for pdu in pdus for value in pdu]


def encode_p_data_tf(values: list[list[Any]]) -> bytes:
    """One P-DATA-TF PDU (PS3.8 9.3.5) of ``[context ID, control header + fragment]`` values."""
    items = [_PDV_HEADER.pack(len(data) + 1, context_id) + data for context_id, data in values]
    return _PDU_HEADER.pack(0x04, 0x00, sum(map(len, items))) + b"".join(items)


class PDataBatch:
    """DIMSE messages in P-DATA-TF PDUs no larger than the peer accepts, sent in runs.

    pynetdicom sends each fragment of each message as a PDU of its own, each taken through
    the DUL's queue, state machine and a socket call: a C-FIND answer of a thousand small
    matches was two thousand PDUs and as many wake-ups of the DUL thread. Here a message's
    command and dataset fragments share a PDU as far as the peer's maximum allows (PS3.8
    9.3.5: a P-DATA-TF holds one or more presentation data values), and the PDUs of
    consecutive messages go to the DUL together as one :class:`PDataRun`, when
    :data:`RUN_SIZE` bytes are waiting or on :meth:`flush`.

    A PDU never holds fragments of two messages: DCMTK 3.6.7's ``findscu`` crashes on one
    that does, and pynetdicom never sends one.

    Parameters
    ----------
    dul
        The association's DUL provider (``send_pdu`` takes a P-DATA primitive).
    maximum_pdu_size
        The peer's Maximum Length Received (0: no limit; PDUs are then cut at
        :data:`UNLIMITED_PDU_SIZE`).
    """

    #: Size of the PDUs sent to a peer that set no limit.
    UNLIMITED_PDU_SIZE = 64 * 1024
    #: Bytes gathered before a run goes to the DUL, so that a long answer streams.
    RUN_SIZE = 256 * 1024
    #: Per presentation data value: item length (4), context ID (1), control header (1).
    PDV_OVERHEAD = 6

    def __init__(self, dul: Any, maximum_pdu_size: int) -> None:
        self.dul = dul
        self.limit = maximum_pdu_size or self.UNLIMITED_PDU_SIZE
        self._pdus: list[list[list[Any]]] = []
        self._encoded: list[bytes] = []
        self._bytes = 0
        self._values: list[list[Any]] = []  # the PDU being filled
        self._size = 0

    def add(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        """Queue one message: its command set, and its dataset if it has one."""
        size = 2 * self.PDV_OVERHEAD + len(command) + len(dataset or b"")
        if size <= self.limit:  # the usual case: the whole message in one PDU
            values = [[context_id, _COMMAND_LAST + command]]
            if dataset is not None:
                values.append([context_id, _DATASET_LAST + dataset])
            self._pdus.append(values)
            self._encoded.append(encode_p_data_tf(values))
            self._bytes += size + 6
        else:
            self._add_fragments(context_id, _COMMAND, command)
            if dataset is not None:
                self._add_fragments(context_id, 0x00, dataset)
            self._close_pdu()
        if self._bytes >= self.RUN_SIZE:
            self.flush()

    def flush(self) -> None:
        """Send what is queued."""
        self._close_pdu()
        if self._pdus:
            self.dul.send_pdu(PDataRun(self._pdus, b"".join(self._encoded)))
            self._pdus, self._encoded, self._bytes = [], [], 0

    def _close_pdu(self) -> None:
        if self._values:
            encoded = encode_p_data_tf(self._values)
            self._pdus.append(self._values)
            self._encoded.append(encoded)
            self._bytes += len(encoded)
            self._values, self._size = [], 0

    def _add_fragments(self, context_id: int, kind: int, data: bytes) -> None:
        room = max(self.limit - self.PDV_OVERHEAD, 1)
        offset = 0
        while True:
            chunk = data[offset : offset + room]
            offset += len(chunk)
            last = offset >= len(data)
            if self._size + self.PDV_OVERHEAD + len(chunk) > self.limit:
                self._close_pdu()
            self._values.append([context_id, bytes([kind | (_LAST if last else 0)]) + chunk])
            self._size += self.PDV_OVERHEAD + len(chunk)
            if last:
                return


@dataclass
class _IncomingStore:
    """A C-STORE-RQ whose dataset fragments are still arriving."""

    context_id: int
    request: C_STORE
    command: bytes
    fragments: list[Buffer] = field(default_factory=list)


class StoreRequestMessage(dimse_messages.C_STORE_RQ):
    """A received C-STORE-RQ as ``EVT_DIMSE_RECV`` handlers see it: pynetdicom's message
    class, with the command set decoded only if a handler reads it."""

    def __init__(self, command: bytes, context_id: int, dataset: BytesIO) -> None:
        # Not DIMSEMessage.__init__: it builds a command set Dataset nobody may read.
        self.context_id = context_id
        self.encoded_command_set = BytesIO(command)
        self.data_set = dataset
        self._data_set_path = None
        self._data_set_file = None
        self._command_set: Dataset | None = None

    @property  # type: ignore[override]
    def command_set(self) -> Dataset:
        """The command set, decoded on first use (Implicit VR Little Endian)."""
        if self._command_set is None:
            raw = BytesIO(self.encoded_command_set.getvalue())
            self._command_set = decode(raw, True, True)
        return self._command_set

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self._command_set = value


class _LazyResponseMessage:
    """A response as ``EVT_DIMSE_SENT`` handlers see it, with the command set built only if
    a handler reads it (building it costs more than sending it).

    ``response`` is the response primitive, or a function that makes it (so that a C-FIND
    match need not build one unless a handler looks).
    """

    _message_class: type[dimse_messages.DIMSEMessage]

    def __init__(self, response: Any, context_id: int, dataset: bytes = b"") -> None:
        # Not DIMSEMessage.__init__: it builds a command set Dataset nobody may read.
        self.context_id = context_id
        self.encoded_command_set = BytesIO()
        self.data_set = BytesIO(dataset)
        self._data_set_path = None
        self._data_set_file = None
        self._response = response
        self._command_set: Dataset | None = None

    @property
    def command_set(self) -> Dataset:
        """The command set pynetdicom would have built for the response."""
        if self._command_set is None:
            primitive = self._response() if callable(self._response) else self._response
            message = self._message_class()
            message.primitive_to_message(primitive)
            self._command_set = message.command_set
        return self._command_set

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self._command_set = value


class StoreResponseMessage(_LazyResponseMessage, dimse_messages.C_STORE_RSP):
    """A C-STORE-RSP as ``EVT_DIMSE_SENT`` handlers see it: pynetdicom's message class."""

    _message_class = dimse_messages.C_STORE_RSP


class FindResponseMessage(_LazyResponseMessage, dimse_messages.C_FIND_RSP):
    """A C-FIND-RSP as ``EVT_DIMSE_SENT`` handlers see it: pynetdicom's message class."""

    _message_class = dimse_messages.C_FIND_RSP


class ReceiverDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with C-STORE requests and responses handled by hand."""

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._store: _IncomingStore | None = None

    # -- receiving --------------------------------------------------------------------------

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Process a P-DATA primitive: one presentation data value at a time."""
        for context_id, data in primitive.presentation_data_value_list:
            self._receive_pdv(context_id, data)

    def _receive_pdv(self, context_id: int, data: Buffer) -> None:
        view = memoryview(data)
        if self._store is None and self.message is None and self._own_path():
            self._store = self._start_store(context_id, view)
            if self._store is not None:
                return
        if self._store is None:  # pynetdicom's own decoder
            single = P_DATA()
            single.presentation_data_value_list = []
            single.presentation_data_value_list.append((context_id, data))  # type: ignore[arg-type]
            super().receive_primitive(single)
            return
        if view[0] & _COMMAND:  # a new command before the dataset ended
            LOGGER.error("Received a command fragment inside a C-STORE dataset")
            self._store = None
            self.dul.event_queue.put("Evt19")
            return
        self._store.fragments.append(view[1:])
        if view[0] & _LAST:
            self._finish_store()

    def _own_path(self) -> bool:
        return not _config.STORE_RECV_CHUNKED_DATASET and not self._logging(
            evt.EVT_DIMSE_RECV, standard_dimse_recv_handler
        )

    def _logging(self, event: Any, standard: Any) -> bool:
        """True if pynetdicom's own logging handler is bound to ``event`` (its INFO logger
        is on): then pynetdicom's codec runs, so that it logs exactly what it always does."""
        bound = cast(list[tuple[Any, Any]], self.assoc.get_handlers(event))
        return any(handler is standard for handler, _args in bound)

    def _start_store(self, context_id: int, view: memoryview) -> _IncomingStore | None:
        """A C-STORE-RQ started by this fragment, or None to let pynetdicom decode it."""
        if len(view) < 1 or view[0] & (_COMMAND | _LAST) != _COMMAND | _LAST:
            return None
        elements = parse_command(view[1:])
        if elements is None:
            return None
        try:
            request = store_request(elements)
        except (ValueError, TypeError):
            return None  # pynetdicom's decoder refuses it again, and reports it its own way
        if request is None:
            return None
        return _IncomingStore(context_id, request, bytes(view[1:]))

    def _finish_store(self) -> None:
        store = cast(_IncomingStore, self._store)
        self._store = None
        request = store.request
        request.DataSet = BytesIO(b"".join(store.fragments))  # shares the joined bytes
        request._context_id = store.context_id
        if self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            message = StoreRequestMessage(store.command, store.context_id, request.DataSet)
            evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        self.msg_queue.put((store.context_id, request))  # type: ignore[arg-type]

    # -- sending ----------------------------------------------------------------------------

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message; a C-STORE response is encoded here, the rest by pynetdicom."""
        if isinstance(primitive, C_STORE) and not self._logging(
            evt.EVT_DIMSE_SENT, standard_dimse_sent_handler
        ):
            command = encode_store_response(primitive)
            limit = self.maximum_pdu_size
            # One PDV item: length (4), context ID (1), control header (1), command.
            if command is not None and (not limit or len(command) + 6 <= limit):
                if self.assoc.get_handlers(evt.EVT_DIMSE_SENT):  # before sending, as pynetdicom
                    message = StoreResponseMessage(primitive, context_id)
                    evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
                pdata = P_DATA()
                pdata.presentation_data_value_list = [
                    [context_id, bytes([_COMMAND | _LAST]) + command]  # type: ignore[list-item]
                ]
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)
