"""Small DICOM instances made in memory for tests, with any attribute overridden."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"


def make_dataset(**attributes: Any) -> Dataset:
    """A 16x16 CT image of patient Nguyễn Văn An; keyword arguments replace attributes
    (``None`` deletes one)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientName = "Nguyễn^Văn An"
    ds.PatientID = "BN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyDate = "20260315"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.StudyDescription = "CT ngực"
    ds.ReferringPhysicianName = "Trần^Bình"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(256, dtype=np.uint16).tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def to_part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Encode ``ds`` as a Part-10 file without any validation of its values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CTImageStorage)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_instance(**attributes: Any) -> bytes:
    """A Part-10 file of :func:`make_dataset` with the given overrides."""
    return to_part10(make_dataset(**attributes))


def study_instance(study: str, number: int = 1, **attributes: Any) -> bytes:
    """Instance ``number`` of series 1 of ``study``: UIDs ``{study}.1`` and ``{study}.1.N``."""
    return make_instance(StudyInstanceUID=study, SeriesInstanceUID=f"{study}.1",
                         SOPInstanceUID=f"{study}.1.{number}", **attributes)
