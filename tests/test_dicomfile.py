"""Part-10 framing: the file meta written for received datasets, and where the dataset starts."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from factories import make_instance
from pacs.dicomfile import (
    IMPLEMENTATION_CLASS_UID,
    dataset_offset,
    part10_header,
)
from pacs.errors import InvalidInstance

SOP_UID = "1.2.826.0.1.3680043.8.498.7"


def test_part10_header_is_read_back_by_pydicom_as_the_file_meta():
    data = make_instance(SOPInstanceUID=SOP_UID)
    dataset = data[dataset_offset(data):]
    header = part10_header(sop_class_uid=CTImageStorage, sop_instance_uid=SOP_UID,
                           transfer_syntax_uid=ExplicitVRLittleEndian, source_aet="CT01")
    ds = dcmread(BytesIO(header + dataset))
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == SOP_UID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.SourceApplicationEntityTitle == "CT01"
    assert ds.SOPInstanceUID == SOP_UID
    assert dataset_offset(header + dataset) == len(header)


@pytest.mark.parametrize("uid", ["", "../../etc/passwd", "1.2.3\x00x", "1." * 40, "1.2.ệ"])
def test_part10_header_refuses_a_hostile_uid(uid):
    with pytest.raises(InvalidInstance):
        part10_header(sop_class_uid=CTImageStorage, sop_instance_uid=uid,
                      transfer_syntax_uid=ExplicitVRLittleEndian)


def test_part10_header_refuses_a_non_ascii_ae_title():
    with pytest.raises(InvalidInstance):
        part10_header(sop_class_uid=CTImageStorage, sop_instance_uid=SOP_UID,
                      transfer_syntax_uid=ExplicitVRLittleEndian, source_aet="MÁY CT")


def test_dataset_offset_of_a_cut_file_meta_is_refused():
    data = make_instance()
    with pytest.raises(InvalidInstance, match="file meta is cut short"):
        dataset_offset(data[:140])
