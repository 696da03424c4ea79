"""How sub-operations are planned, and the pynetdicom behaviour they rely on (pinned).

The end-to-end behaviour (stored bytes on the wire, transcoding, failures listed) is checked
against DCMTK in ``test_scp_retrieve.py``.
"""

from __future__ import annotations

import inspect
import queue

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider

from pacs.scp.suboperations import ResponseQueue, proposed_contexts
from pacs.storage.index import StoredInstance

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def instance(sop_class: str, syntax: str, number: int = 1) -> StoredInstance:
    return StoredInstance(f"1.2.3.{number}", sop_class, "1.2.3", "1.2.3.0", syntax,
                          "instances/abc/abc", 1, "0" * 64)


def offered(contexts) -> list[tuple[str, list[str]]]:
    return [(cx.abstract_syntax, list(cx.transfer_syntax)) for cx in contexts]


def test_each_stored_syntax_and_both_uncompressed_ones_get_their_own_context():
    contexts = proposed_contexts([instance(CT, JPEG2000Lossless, 1),
                                  instance(CT, ExplicitVRLittleEndian, 2),
                                  instance(MR, ImplicitVRLittleEndian, 3)])
    assert offered(contexts) == [
        (CT, [JPEG2000Lossless]), (CT, [ExplicitVRLittleEndian]), (CT, [ImplicitVRLittleEndian]),
        (MR, [ImplicitVRLittleEndian]), (MR, [ExplicitVRLittleEndian]),
    ]


def test_past_128_contexts_each_sop_class_offers_its_syntaxes_in_one_context():
    classes = [f"1.2.840.10008.5.1.4.1.1.{number}" for number in range(50)]
    contexts = proposed_contexts([instance(uid, JPEG2000Lossless, n)
                                  for n, uid in enumerate(classes)])
    assert offered(contexts)[0] == (
        classes[0], [JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assert len(contexts) == 50


def test_nothing_to_send_proposes_verification_alone():
    assert [uid for uid, _ in offered(proposed_contexts([]))] == ["1.2.840.10008.1.1"]


def test_response_queue_gives_nothing_to_a_poll_and_everything_to_a_waiting_caller():
    responses = ResponseQueue()
    responses.put((1, "C-STORE-RSP"))
    with pytest.raises(queue.Empty):
        responses.get(block=False)
    assert responses.get(timeout=1) == (1, "C-STORE-RSP")


def test_pynetdicom_reactor_polls_and_requests_wait_as_response_queue_assumes():
    # ResponseQueue relies on the reactor being the only non-blocking reader of the queue.
    reactor = inspect.getsource(Association._run_reactor)
    assert "self.dimse.get_msg(block=False)" in reactor
    assert "self.dimse.get_msg(block=True)" in inspect.getsource(Association.send_c_store)
    assert "block=block" in inspect.getsource(DIMSEServiceProvider.get_msg)


def test_pynetdicom_announces_a_message_before_encoding_it_as_the_byte_swap_assumes():
    source = inspect.getsource(DIMSEServiceProvider.send_msg)
    assert source.index("EVT_DIMSE_SENT") < source.index("encode_msg(")
