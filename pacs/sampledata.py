"""Deterministic synthetic sample studies: a CT chest, an MR brain and a DX chest radiograph.

The committed ``sample_dicom/`` folder is made by :func:`write_sample_studies` (through
``scripts/make_sample_data.py``), and a test regenerates it and compares the bytes, so the set
never drifts from this code. Everything here is therefore a pure function of its arguments:

- UIDs are name-based: ``2.25.`` followed by the RFC 4122 version-5 UUID of a fixed name
  (PS3.5 B.2), so they are valid, at most 44 characters and identical on every run;
- dates and times are fixed;
- the phantoms are drawn with additions, multiplications, divisions and square roots only
  (correctly rounded in IEEE 754, so identical on every platform) and integer noise from a
  seeded :func:`numpy.random.default_rng`;
- files are written in Explicit VR Little Endian with the project's implementation UID.

The three patients have Vietnamese names encoded in UTF-8 (SpecificCharacterSet ``ISO_IR 192``)
so every front end is exercised with non-ASCII person names. The images are synthetic
phantoms, not patient data, and say so in ImageComments.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from pacs.dicomfile import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = [
    "CT_SLICES",
    "DX_SIZE",
    "MR_SLICES",
    "PATIENTS",
    "SamplePatient",
    "ct_chest_series",
    "dx_chest_image",
    "mr_brain_series",
    "sample_uid",
    "write_sample_studies",
]

CT_SLICES = 24
"""Default number of axial CT slices (10 mm apart: apex to lung bases)."""
MR_SLICES = 8
"""Default number of axial MR slices (6 mm apart, through the lateral ventricles)."""
DX_SIZE = 512
"""Default rows and columns of the chest radiograph (the detector is always 409.6 mm wide)."""

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:filmless-pacs:sampledata")
_INSTITUTION = "Bệnh viện Đa khoa tỉnh Lào Cai"
_MANUFACTURER = "FILMLESS-PACS SYNTHETIC"
_COMMENT = "Synthetic phantom made by pacs.sampledata; not patient data"
_SEED = 20260315

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class SamplePatient:
    """One synthetic patient: the patient-level attributes of a sample study."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    weight_kg: str
    size_m: str


NGUYEN_VAN_AN = SamplePatient("Nguyễn^Văn An", "LC24001873", "19580412", "M", "067Y", "61", "1.66")
TRAN_THI_BICH = SamplePatient("Trần^Thị Bích", "LC25004512", "19710923", "F", "054Y", "52", "1.55")
LE_HOANG_MINH = SamplePatient("Lê^Hoàng Minh", "LC26000291", "19920207", "M", "034Y", "68", "1.72")
PATIENTS: tuple[SamplePatient, ...] = (NGUYEN_VAN_AN, TRAN_THI_BICH, LE_HOANG_MINH)
"""The sample patients, in the order of the CT, MR and DX studies."""


@dataclass(frozen=True)
class _Study:
    folder: str  # the study's folder under the output directory
    patient: SamplePatient
    accession: str
    study_id: str
    description: str
    date: str
    time: str
    referring: str
    series_number: int
    series_description: str
    modality: str
    body_part: str
    station: str
    model: str


_CT = _Study(
    folder="ct-chest",
    patient=NGUYEN_VAN_AN,
    accession="CT2603150021",
    study_id="21",
    description="CT ngực không cản quang",
    date="20260315",
    time="091230",
    referring="Phạm^Quốc Huy",
    series_number=2,
    series_description="Ngực 10mm",
    modality="CT",
    body_part="CHEST",
    station="LCAI-CT01",
    model="Phantom CT 64",
)
_MR = _Study(
    folder="mr-brain",
    patient=TRAN_THI_BICH,
    accession="MR2603160007",
    study_id="7",
    description="MRI sọ não không tiêm thuốc",
    date="20260316",
    time="143005",
    referring="Đỗ^Thị Lan",
    series_number=3,
    series_description="Ax T2 TSE",
    modality="MR",
    body_part="HEAD",
    station="LCAI-MR01",
    model="Phantom MR 1.5T",
)
_DX = _Study(
    folder="dx-chest",
    patient=LE_HOANG_MINH,
    accession="DX2603170113",
    study_id="113",
    description="X-quang ngực thẳng",
    date="20260317",
    time="080145",
    referring="Vũ^Minh Tuấn",
    series_number=1,
    series_description="Ngực thẳng PA",
    modality="DX",
    body_part="CHEST",
    station="LCAI-DX02",
    model="Phantom DR",
)


def sample_uid(*parts: object) -> UID:
    """A stable UID for a name made of ``parts``.

    Parameters
    ----------
    *parts
        The name, e.g. ``("ct-chest", "series", 2)``; the same parts always give the same UID.

    Returns
    -------
    pydicom.uid.UID
        ``2.25.`` followed by the integer of the name-based (version 5) UUID of ``parts``, as
        PS3.5 B.2 allows: digits and dots, at most 44 characters, no leading zeros.
    """
    name = "/".join(str(part) for part in parts)
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}")


# -- dataset building ---------------------------------------------------------------------


def _ds(value: float) -> str:
    """A decimal string (DS) for ``value``, at most 5 decimals, no trailing zeros."""
    text = f"{value:.5f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _add_seconds(hhmmss: str, seconds: int) -> str:
    total = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + seconds
    return f"{total // 3600 % 24:02d}{total // 60 % 60:02d}{total % 60:02d}"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _new_instance(study: _Study, sop_class: str, number: int, seconds: int) -> FileDataset:
    """A dataset with the file meta and the patient, study, series and equipment modules."""
    sop_uid = sample_uid(study.folder, "instance", study.series_number, number)
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
    content_time = _add_seconds(study.time, 120 + seconds)
    patient = study.patient

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] + ([] if study.modality == "DX" else ["AXIAL"])
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = content_time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = _add_seconds(study.time, 60)
    ds.AcquisitionTime = ds.ContentTime = content_time
    ds.AccessionNumber = study.accession
    ds.Modality = study.modality
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = _INSTITUTION
    ds.InstitutionAddress = "Đường Hoàng Liên, phường Bắc Cường, Lào Cai, Việt Nam"
    ds.ReferringPhysicianName = study.referring
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = study.series_description
    ds.InstitutionalDepartmentName = "Khoa Chẩn đoán hình ảnh"
    ds.ManufacturerModelName = study.model
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "BVDKLC"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = patient.age
    ds.PatientSize = patient.size_m
    ds.PatientWeight = patient.weight_kg
    ds.BodyPartExamined = study.body_part
    ds.DeviceSerialNumber = "SYN-0001"
    ds.SoftwareVersions = "pacs.sampledata 1"
    ds.StudyInstanceUID = sample_uid(study.folder, "study")
    ds.SeriesInstanceUID = sample_uid(study.folder, "series", study.series_number)
    ds.StudyID = study.study_id
    ds.SeriesNumber = study.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    ds.ImageComments = _COMMENT
    ds.BurnedInAnnotation = "NO"
    return ds


def _set_pixels(ds: Dataset, pixels: NDArray[np.integer], bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()


# -- drawing helpers (exact arithmetic only) ----------------------------------------------


def _grid(size: int, spacing: float) -> tuple[Array, Array]:
    """Pixel-centre coordinates in mm, centred on the image: (x to the right, y downwards)."""
    centres = (np.arange(size, dtype=np.float64) - (size - 1) / 2) * spacing
    return np.meshgrid(centres, centres)


def _ellipse_r2(x: Array, y: Array, cx: float, cy: float, ax: float, ay: float) -> Array:
    """Squared normalised radius: <= 1 inside the ellipse."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _ellipse(x: Array, y: Array, cx: float, cy: float, ax: float, ay: float) -> Mask:
    if ax <= 0 or ay <= 0:
        return np.zeros(x.shape, dtype=bool)
    return _ellipse_r2(x, y, cx, cy, ax, ay) <= 1.0


def _box_blur(image: NDArray[np.int64], radius: int) -> NDArray[np.int64]:
    """Mean over a (2r+1)² square, in integers, with edge padding."""
    size = 2 * radius + 1
    padded = np.pad(image, radius, mode="edge")
    rows = sum(padded[i : i + image.shape[0], :] for i in range(size))
    total = sum(rows[:, j : j + image.shape[1]] for j in range(size))
    return np.asarray(total, dtype=np.int64) // (size * size)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], spread: int) -> NDArray[np.int64]:
    """Bell-shaped integer noise: the sum of three uniform integers in [-spread, spread]."""
    return sum(
        (rng.integers(-spread, spread + 1, size=shape, dtype=np.int64) for _ in range(3)),
        start=np.zeros(shape, dtype=np.int64),
    )


def _fractions(count: int) -> list[float]:
    if count < 1:
        raise ValueError(f"at least one slice is needed, not {count}")
    return [0.5] if count == 1 else [i / (count - 1) for i in range(count)]


# -- CT chest -----------------------------------------------------------------------------

_CT_SIZE = 256
_CT_SPACING = 1.5625  # 400 mm field of view
_CT_THICKNESS = 10.0


def _ct_vessels(rng: np.random.Generator, count: int) -> NDArray[np.float64]:
    """Per vessel: u, v (in the unit lung disc), du, dv per unit of slice fraction, radius mm."""
    u = rng.integers(-85, 86, size=count) / 100
    v = rng.integers(-85, 86, size=count) / 100
    du = rng.integers(-30, 31, size=count) / 100
    dv = rng.integers(-30, 31, size=count) / 100
    radius = rng.integers(12, 32, size=count) / 10
    return np.stack([u, v, du, dv, radius], axis=1)


def _ct_phantom(x: Array, y: Array, t: float, vessels: NDArray[np.float64]) -> NDArray[np.int64]:
    """Hounsfield units of an axial chest slice; ``t`` runs from the apex (0) to the base (1).

    Patient coordinates (LPS): x to the patient's left (image right), y posterior (down).
    """
    hu = np.full(x.shape, -1000.0)
    body_ax, body_ay = 145.0 + 12.0 * t, 100.0 + 6.0 * t
    hu[_ellipse(x, y, 0.0, 8.0, body_ax, body_ay)] = -100.0  # subcutaneous fat
    hu[_ellipse(x, y, 0.0, 8.0, body_ax - 13.0, body_ay - 11.0)] = 40.0  # muscle, mediastinum
    table = (y >= 117.0 + 0.0006 * x * x) & (y <= 123.0 + 0.0006 * x * x) & (x * x < 180.0**2)
    hu[table] = 120.0

    # The lungs widen from the apex, then the diaphragm domes take their bases.
    if t < 0.55:
        growth = 0.4 + 0.6 * float(np.sqrt(t / 0.55))
    else:
        growth = 1.0 if t < 0.8 else 1.0 - 1.4 * (t - 0.8)
    for side in (-1.0, 1.0):  # patient right, patient left
        cx, cy, ax, ay = 62.0 * side, 2.0, 46.0 * growth, 68.0 * growth
        lung = _ellipse(x, y, cx, cy, ax, ay)
        hu[lung] = -850.0
        for u, v, du, dv, radius in vessels[::2] if side < 0 else vessels[1::2]:
            vx, vy = cx + (u + du * t) * ax * 0.9, cy + (v + dv * t) * ay * 0.9
            hu[lung & _ellipse(x, y, vx, vy, radius, radius)] = 35.0

    if 0.12 < t < 0.4:  # trachea, then the two main bronchi
        hu[_ellipse(x, y, 0.0, -18.0, 9.0, 8.0)] = -1000.0
    elif 0.4 <= t < 0.5:
        for side in (-1.0, 1.0):
            hu[_ellipse(x, y, 16.0 * side, -12.0, 6.0, 5.5)] = -1000.0
    if 0.15 < t < 0.5:  # ascending aorta and pulmonary trunk above the heart
        hu[_ellipse(x, y, -8.0, -38.0, 15.0, 15.0)] = 42.0
        hu[_ellipse(x, y, 22.0, -30.0, 13.0, 12.0)] = 38.0
    if t > 0.12:  # descending aorta beside the spine
        hu[_ellipse(x, y, 22.0, 42.0, 12.0, 12.0)] = 42.0

    heart_scale = 1.0 - ((t - 0.66) / 0.3) ** 2
    if heart_scale > 0:
        h = float(np.sqrt(heart_scale))
        hu[_ellipse(x, y, 24.0, -22.0, 62.0 * h + 3.0, 50.0 * h + 3.0)] = -80.0  # fat
        hu[_ellipse(x, y, 24.0, -22.0, 62.0 * h, 50.0 * h)] = 40.0
    if t > 0.72:  # liver dome under the right lung
        s = (t - 0.72) / 0.28
        hu[_ellipse(x, y, -52.0, 12.0, 95.0 * s, 72.0 * s)] = 60.0

    # Ribs: oval cross-sections on an ellipse inside the body wall, sloping down with t.
    for k in range(-4, 5):
        w = k / 4.2 + 0.06 * t
        cos_a, sin_a = (1 - w * w) / (1 + w * w), 2 * w / (1 + w * w)
        for side in (-1.0, 1.0):
            rx = side * cos_a * (body_ax - 19.0)
            ry = 8.0 + sin_a * (body_ay - 16.0)
            hu[_ellipse(x, y, rx, ry, 5.0, 4.0)] = 750.0
    if 0.1 < t < 0.85:  # sternum
        hu[_ellipse(x, y, 0.0, -body_ay + 20.0, 15.0, 6.0)] = 500.0
    # Vertebra: cortex, cancellous body, spinal canal, neural arch and spinous process.
    hu[_ellipse(x, y, 0.0, 62.0, 19.0, 17.0)] = 1100.0
    hu[_ellipse(x, y, 0.0, 62.0, 16.5, 14.5)] = 700.0
    hu[_ellipse(x, y, 0.0, 93.0, 14.0, 13.0)] = 900.0
    hu[_ellipse(x, y, 0.0, 112.0, 4.5, 11.0) & (y < 104.0 + body_ay * 0.3)] = 900.0
    hu[_ellipse(x, y, 0.0, 91.0, 8.0, 8.0)] = 15.0
    return np.rint(hu).astype(np.int64)


def ct_chest_series(slices: int = CT_SLICES) -> list[FileDataset]:
    """An axial chest CT series of patient Nguyễn Văn An, apex to bases.

    Each slice is 256 x 256 pixels, 1.5625 mm apart (400 mm field of view), 10 mm thick,
    16-bit signed with RescaleSlope 1 and RescaleIntercept -1024, so stored values map to
    Hounsfield units: air -1000, lung about -850, fat -100, soft tissue and blood about 40,
    vertebrae 700 to 1100. Two VOI windows are given: mediastinum (40/400) and lung
    (-600/1500). ImagePositionPatient, SliceLocation and the shared FrameOfReferenceUID agree.

    Parameters
    ----------
    slices
        Number of slices; the phantom always spans apex to bases, so fewer slices sample it
        more coarsely.

    Returns
    -------
    list of pydicom.dataset.FileDataset
        CT Image Storage instances (PS3.3 A.3), InstanceNumber 1 at the top.

    Raises
    ------
    ValueError
        If ``slices`` is less than 1.
    """
    fractions = _fractions(slices)
    rng = np.random.default_rng([_SEED, 1])
    vessels = _ct_vessels(rng, 40)
    x, y = _grid(_CT_SIZE, _CT_SPACING)
    origin = -(_CT_SIZE - 1) / 2 * _CT_SPACING
    instances = []
    for index, t in enumerate(fractions):
        number = index + 1
        hu = _box_blur(_ct_phantom(x, y, t, vessels), 1) + _noise(rng, x.shape, 7)
        z = -20.0 - index * _CT_THICKNESS
        ds = _new_instance(_CT, CTImageStorage, number, seconds=index)
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = _ds(_CT_THICKNESS)
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ProtocolName = "Ngực thường quy"
        ds.ReconstructionDiameter = "400"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "140"
        ds.XRayTubeCurrent = 180
        ds.ConvolutionKernel = "B40f"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = sample_uid(_CT.folder, "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [_ds(origin), _ds(origin), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(z)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [_ds(_CT_SPACING), _ds(_CT_SPACING)]
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        _set_pixels(ds, np.clip(hu + 1024, 0, 4095).astype(np.int16), 16)
        instances.append(ds)
    return instances


# -- MR brain -----------------------------------------------------------------------------

_MR_SIZE = 192
_MR_SPACING = 1.25  # 240 mm field of view
_MR_THICKNESS = 5.0
_MR_GAP = 1.0


def _chebyshev_cos(cos_a: Array, order: int) -> Array:
    """cos(order * a) from cos(a) by the Chebyshev recurrence (exact arithmetic only)."""
    previous, current = np.ones_like(cos_a), cos_a
    for _ in range(order - 1):
        previous, current = current, 2 * cos_a * current - previous
    return current


def _mr_phantom(x: Array, y: Array, z: float) -> NDArray[np.int64]:
    """T2-like signal of an axial head slice at height ``z`` mm above the head's centre.

    Bright CSF, grey matter brighter than white matter, dark skull, bright scalp fat.
    """
    signal = np.zeros(x.shape)
    scale = float(np.sqrt(max(0.0, 1.0 - (z / 98.0) ** 2)))
    ax, ay, cy = 74.0 * scale, 92.0 * scale, 4.0
    rho = np.sqrt(_ellipse_r2(x, y, 0.0, cy, ax, ay))
    # The angle around the head, turned by atan(4/3) so the folds are not mirror images.
    nx, ny = x / ax, (y - cy) / ay
    distance = np.sqrt(nx * nx + ny * ny) + 1e-9
    cos_a = (0.6 * nx + 0.8 * ny) / distance
    fine, coarse = _chebyshev_cos(cos_a, 23), _chebyshev_cos(cos_a, 11)
    gyri = 0.6 * fine + 0.4 * coarse
    signal[rho <= 1.0] = 1500.0  # scalp
    signal[rho <= 0.96] = 70.0  # skull
    signal[rho <= 0.9] = 2500.0  # CSF over the convexity
    cortex = rho <= 0.885 - 0.02 * (gyri > 0.5)
    signal[cortex] = 1250.0
    signal[cortex & (rho > 0.72) & ((fine < -0.8) | (coarse < -0.92))] = 2300.0  # sulci
    white = rho <= 0.74 + 0.05 * gyri
    signal[white] = 640.0
    # Interhemispheric fissure with the falx, in front of and behind the ventricles.
    midline = cortex & (np.abs(x) < 1.8) & ((ny < -0.3) | (ny > 0.45))
    signal[midline] = 2200.0
    signal[midline & (np.abs(x) < 0.7)] = 250.0
    # Lateral ventricles, largest at the level of the bodies (z about 20 mm).
    size = 1.0 - ((z - 20.0) / 26.0) ** 2
    if size > 0:
        for side in (-1.0, 1.0):
            horn = _ellipse(x, y, 8.5 * side, cy - 8.0, 4.5 * size + 1.2, 20.0 * size)
            atrium = _ellipse(x, y, 12.5 * side, cy + 13.0 * size, 5.0 * size, 8.0 * size)
            signal[horn | atrium] = 2600.0
    if z < 16.0:  # third ventricle
        signal[_ellipse(x, y, 0.0, cy + 2.0, 2.2, 10.0)] = 2600.0
    bias = 1.0 - 0.0012 * (y - cy)  # the receive coil's falloff towards the front
    return np.rint(signal * bias).astype(np.int64)


def mr_brain_series(slices: int = MR_SLICES) -> list[FileDataset]:
    """An axial T2-weighted brain MR series of patient Trần Thị Bích.

    Each slice is 192 x 192 pixels, 1.25 mm apart (240 mm field of view), 5 mm thick with a
    1 mm gap, unsigned 16-bit with 12 bits stored, MONOCHROME2. The phantom has scalp, skull,
    CSF, folded cortex, white matter, a falx and lateral ventricles that grow and shrink as
    the slices ascend.

    Parameters
    ----------
    slices
        Number of slices, from 2 mm above the centre of the head upwards, 6 mm apart.

    Returns
    -------
    list of pydicom.dataset.FileDataset
        MR Image Storage instances (PS3.3 A.4), InstanceNumber 1 at the bottom.

    Raises
    ------
    ValueError
        If ``slices`` is less than 1.
    """
    _fractions(slices)
    rng = np.random.default_rng([_SEED, 2])
    x, y = _grid(_MR_SIZE, _MR_SPACING)
    origin = -(_MR_SIZE - 1) / 2 * _MR_SPACING
    instances = []
    for index in range(slices):
        number = index + 1
        z = 2.0 + index * (_MR_THICKNESS + _MR_GAP)
        clean = _box_blur(_mr_phantom(x, y, z), 1)
        signal = np.abs(clean + _noise(rng, x.shape, 14))  # magnitude image: Rician-like floor
        ds = _new_instance(_MR, MRImageStorage, number, seconds=index * 9)
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tse2d1_15"
        ds.SliceThickness = _ds(_MR_THICKNESS)
        ds.RepetitionTime = "4500"
        ds.EchoTime = "98"
        ds.NumberOfAverages = "2"
        ds.ImagingFrequency = "63.676"
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = 1
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _ds(_MR_THICKNESS + _MR_GAP)
        ds.EchoTrainLength = 15
        ds.ProtocolName = "t2_tse_tra"
        ds.ReceiveCoilName = "Head 8"
        ds.FlipAngle = "150"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = sample_uid(_MR.folder, "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [_ds(origin), _ds(origin), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(z)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [_ds(_MR_SPACING), _ds(_MR_SPACING)]
        ds.WindowCenter = "1250"
        ds.WindowWidth = "2500"
        _set_pixels(ds, np.clip(signal, 0, 4095).astype(np.uint16), 12)
        instances.append(ds)
    return instances


# -- DX chest -----------------------------------------------------------------------------

_DX_WIDTH_MM = 409.6


def _smoothstep(value: Array) -> Array:
    s = np.clip(value, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _dx_phantom(size: int, texture: NDArray[np.int64]) -> NDArray[np.int64]:
    """A PA chest radiograph in presentation values (bright = attenuating), 12 bits.

    Coordinates are normalised to [-1, 1]: u to the image right (the patient's left in a PA
    view read as usual), v downwards. ``texture`` is smooth noise for the lung markings.
    """
    u, v = _grid(size, 2.0 / size)
    # Thorax outline: neck, rounded shoulders, then the chest wall narrowing to the waist.
    half_width = 0.17 + 0.66 * _smoothstep((v + 0.9) / 0.32) - 0.08 * _smoothstep((v - 0.2) / 0.8)
    body = np.abs(u) < half_width
    across = np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0)
    value = np.where(body, 1500.0 + 800.0 * np.sqrt(across), 160.0)

    # Lungs: dark where air replaces tissue, darkest where the lung is thickest; the right
    # hemidiaphragm (image left) is higher, the costophrenic angles deep and sharp.
    air = np.zeros(u.shape)
    lungs = np.zeros(u.shape, dtype=bool)
    for side in (-1.0, 1.0):
        su = side * u
        r2 = _ellipse_r2(su, v, 0.37, -0.04, 0.3, 0.64)
        dome = 0.43 - 0.15 * np.clip(1.0 - ((su - 0.37) / 0.3) ** 2, 0.0, 1.0)
        dome = dome - (0.04 if side < 0 else 0.0)
        lung = (r2 <= 1.0) & (v <= dome) & (su > 0.085)
        lungs |= lung
        depth = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) * 0.5 + 0.5
        air = np.where(lung, depth * _smoothstep((dome - v) / 0.04), air)
        hilum = _ellipse_r2(su, v, 0.16, -0.04, 0.08, 0.13)
        air = np.where(hilum <= 1.0, air * (0.75 + 0.25 * hilum), air)
    heart = _ellipse_r2(u, v, 0.09, 0.21, 0.3, 0.2)
    air = np.where(heart <= 1.0, 0.0, air)
    knob = _ellipse_r2(u, v, 0.1, -0.3, 0.06, 0.05)
    air = np.where(knob <= 1.0, air * 0.3, air)
    value -= 1250.0 * air
    value += np.where(lungs, texture, 0)

    # Mediastinum and a faint spine with darker disc spaces.
    dense = np.maximum(_smoothstep((0.11 - np.abs(u)) / 0.03), _smoothstep((v - 0.3) / 0.12))
    value += 250.0 * np.maximum(dense, heart <= 1.0) * body
    spine = (np.abs(u) < 0.05) & (v > -0.95)
    discs = np.fmod(v + 2.0, 0.075) < 0.012
    value += np.where(spine, np.where(discs, 40.0, 150.0), 0.0)

    # Ribs: posterior arcs rising from the spine then falling laterally, fainter anterior
    # arcs falling towards the sternum; both show best over the lungs.
    inside = body & (v < 0.45) & (np.abs(u) < half_width - 0.03)
    over_lung = np.where(lungs, 1.0, np.where(heart <= 1.0, 0.25, 0.45))
    for k in range(10):
        base = -0.62 + k * 0.1
        for side in (-1.0, 1.0):
            du = np.clip(side * u - 0.06, 0.0, 1.0)
            back = base - 0.35 * du + 1.1 * du * du
            band = (np.abs(v - back) < 0.016 + 0.01 * du) & inside & (side * u > 0.06)
            value += np.where(band, 230.0 * over_lung, 0.0)
            front = base + 0.16 + 0.3 * du - 0.45 * du * du
            band = (np.abs(v - front) < 0.012) & inside & (side * u > 0.14) & (k < 6)
            value += np.where(band, 90.0 * over_lung, 0.0)
    # Clavicles, rising towards the shoulders.
    for side in (-1.0, 1.0):
        su = side * u
        line = np.abs(v - (-0.58 - 0.25 * (su - 0.07) + 0.15 * (su - 0.07) ** 2))
        value += np.where((line < 0.024) & (su > 0.07) & (su < 0.6), 380.0, 0.0)
    # Gas in the stomach under the left hemidiaphragm.
    value -= np.where(_ellipse(u, v, 0.34, 0.5, 0.09, 0.05), 450.0, 0.0)
    return np.rint(value).astype(np.int64)


def dx_chest_image(size: int = DX_SIZE) -> FileDataset:
    """A PA chest radiograph of patient Lê Hoàng Minh, for presentation.

    MONOCHROME2 (bone bright), 12 bits stored in 16, on a 409.6 mm square detector, with the
    lungs, heart, mediastinum, spine, ribs, clavicles and a gastric bubble.

    Parameters
    ----------
    size
        Rows and columns; the pixel spacing is 409.6 mm divided by ``size``.

    Returns
    -------
    pydicom.dataset.FileDataset
        A Digital X-Ray Image Storage - For Presentation instance (PS3.3 A.26).

    Raises
    ------
    ValueError
        If ``size`` is less than 64.
    """
    if size < 64:
        raise ValueError(f"the radiograph needs at least 64 x 64 pixels, not {size}")
    rng = np.random.default_rng([_SEED, 3])
    texture = _box_blur(_box_blur(rng.integers(-220, 221, (size, size), dtype=np.int64), 3), 3)
    clean = _box_blur(_box_blur(_dx_phantom(size, texture), 2), 1)
    pixels = np.clip(clean + _noise(rng, clean.shape, 10), 0, 4095).astype(np.uint16)
    spacing = _ds(_DX_WIDTH_MM / size)
    ds = _new_instance(_DX, DigitalXRayImageStorageForPresentation, 1, seconds=0)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.KVP = "125"
    ds.DistanceSourceToDetector = "1800"
    ds.ExposureTime = 8
    ds.XRayTubeCurrent = 320
    ds.Exposure = 3
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.ProtocolName = "Ngực PA"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = [_code("43799004", "Chest")]
    ds.ViewCodeSequence = [_code("399348003", "postero-anterior")]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [spacing, spacing]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = "1700"
    ds.WindowWidth = "2400"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = []
    _set_pixels(ds, pixels, 12)
    return ds


# -- writing ------------------------------------------------------------------------------

_LAYOUT = re.compile(r"^[0-9]+/[0-9]+\.dcm$")


def write_sample_studies(
    out_dir: Path,
    *,
    ct_slices: int = CT_SLICES,
    mr_slices: int = MR_SLICES,
    dx_size: int = DX_SIZE,
) -> list[Path]:
    """Write the three sample studies as Part-10 files under ``out_dir``.

    The layout is ``<study>/<series number>/<instance number>.dcm`` with the study folders
    ``ct-chest``, ``mr-brain`` and ``dx-chest``; only these fixed names are used, never a
    value from a dataset. Files of that layout left in those folders by an earlier run (with
    more slices, say) are removed, so the folder holds exactly one set. The same arguments
    give byte-identical files.

    Parameters
    ----------
    out_dir
        The folder to write into; created if missing.
    ct_slices, mr_slices, dx_size
        See :func:`ct_chest_series`, :func:`mr_brain_series` and :func:`dx_chest_image`.

    Returns
    -------
    list of pathlib.Path
        The files written, CT first, then MR, then DX.

    Raises
    ------
    ValueError
        If a size is out of range (nothing is written then).
    """
    studies = [
        (_CT, ct_chest_series(ct_slices)),
        (_MR, mr_brain_series(mr_slices)),
        (_DX, [dx_chest_image(dx_size)]),
    ]
    written: list[Path] = []
    for study, instances in studies:
        study_dir = out_dir / study.folder
        for ds in instances:
            path = study_dir / f"{study.series_number}" / f"{int(ds.InstanceNumber):04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
        keep = set(written)
        for old in sorted(study_dir.glob("*/*.dcm")):
            if old not in keep and _LAYOUT.match(old.relative_to(study_dir).as_posix()):
                old.unlink()
    return written
