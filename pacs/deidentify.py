"""On-the-fly de-identification of studies served through time-limited share links.

DICOM PS3.15 Annex E: the Basic Application Level Confidentiality Profile with the Retain
Longitudinal Temporal Information with Modified Dates option (every date moves by the same
number of days, so intervals survive) and the Retain Patient Characteristics option (sex, age,
size and weight, which dose and SUV need).

Table E.1-1 lists what to remove, but cannot list what a vendor may add, so :data:`RULES` works
the other way round: an explicit KEEP list of attributes that are non-identifying and needed to
display and measure images. Everything else is removed: private attributes, curve (50xx) and
overlay (60xx) groups, person names, free text. A kept attribute is kept as is, or, by VR:
UIDs are replaced with :meth:`Deidentifier.uid` unless the standard defines them (class UIDs,
SOP Class and Transfer Syntax, are kept even when private: they name a kind of object, and a
remapped private class would make it unreadable); dates (DA, DT) are shifted, and removed when
malformed since they cannot be; sequences are kept with each item filtered by the same table.

One table drives both walkers (DICOM JSON and pydicom), so metadata and files agree. All that
is derived from the link's secret is deterministic: the same link serves the same study on
every request without a stored mapping. Pixel data is kept (no Clean Pixel Data Option);
:func:`has_burned_in_annotation` tells the archive which instances' pixels not to serve.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

__all__ = ["RULES", "Action", "Deidentifier", "has_burned_in_annotation"]


class Action(Enum):
    """What happens to a kept attribute."""

    KEEP = "keep"
    UID = "uid"
    CLASS_UID = "class uid"
    DATE = "date"
    DATETIME = "datetime"
    SEQUENCE = "sequence"


@dataclass(frozen=True)
class Rule:
    """The action for a kept attribute, and the VRs it may have (else, e.g. UN, it is removed)."""

    action: Action
    vrs: frozenset[str]


_KEEP = """
    FileMetaInformationVersion MediaStorageSOPClassUID MediaStorageSOPInstanceUID
    TransferSyntaxUID SpecificCharacterSet SOPClassUID SOPInstanceUID StudyInstanceUID
    SeriesInstanceUID FrameOfReferenceUID SynchronizationFrameOfReferenceUID ImageType Modality
    ModalitiesInStudy SeriesNumber InstanceNumber AcquisitionNumber NumberOfStudyRelatedSeries
    NumberOfStudyRelatedInstances NumberOfSeriesRelatedInstances StudyDate SeriesDate
    AcquisitionDate ContentDate AcquisitionDateTime StudyTime SeriesTime AcquisitionTime
    ContentTime
    PatientSex PatientAge PatientSize PatientWeight BodyPartExamined PatientPosition
    PatientOrientation Laterality ImageLaterality ViewPosition PresentationIntentType
    BurnedInAnnotation LossyImageCompression LossyImageCompressionRatio
    LossyImageCompressionMethod SamplesPerPixel PhotometricInterpretation PlanarConfiguration
    Rows Columns BitsAllocated BitsStored HighBit PixelRepresentation NumberOfFrames
    FrameIncrementPointer PixelAspectRatio SmallestImagePixelValue LargestImagePixelValue
    PixelPaddingValue PixelPaddingRangeLimit PixelData FloatPixelData DoubleFloatPixelData
    ExtendedOffsetTable ExtendedOffsetTableLengths PresentationLUTShape
    PixelIntensityRelationship PixelIntensityRelationshipSign
    RedPaletteColorLookupTableDescriptor GreenPaletteColorLookupTableDescriptor
    BluePaletteColorLookupTableDescriptor RedPaletteColorLookupTableData
    GreenPaletteColorLookupTableData BluePaletteColorLookupTableData
    SegmentedRedPaletteColorLookupTableData SegmentedGreenPaletteColorLookupTableData
    SegmentedBluePaletteColorLookupTableData PaletteColorLookupTableUID
    PixelSpacing ImagerPixelSpacing SliceThickness SpacingBetweenSlices ImagePositionPatient
    ImageOrientationPatient SliceLocation RescaleIntercept RescaleSlope RescaleType
    ModalityLUTSequence ModalityLUTType LUTDescriptor LUTData VOILUTSequence WindowCenter
    WindowWidth VOILUTFunction KVP XRayTubeCurrent ExposureTime Exposure ExposureInuAs
    ConvolutionKernel DataCollectionDiameter ReconstructionDiameter GantryDetectorTilt
    TableHeight RotationDirection SpiralPitchFactor CTDIvol DistanceSourceToDetector
    DistanceSourceToPatient EstimatedRadiographicMagnificationFactor PositionerPrimaryAngle
    PositionerSecondaryAngle ScanningSequence SequenceVariant ScanOptions MRAcquisitionType
    RepetitionTime EchoTime InversionTime EchoTrainLength NumberOfAverages ImagingFrequency
    ImagedNucleus EchoNumbers MagneticFieldStrength FlipAngle PercentSampling
    PercentPhaseFieldOfView PixelBandwidth AcquisitionMatrix InPlanePhaseEncodingDirection Units
    DecayCorrection CorrectedImage SeriesType DecayFactor FrameReferenceTime ActualFrameDuration
    RadiopharmaceuticalInformationSequence RadionuclideTotalDose RadionuclideHalfLife
    RadiopharmaceuticalStartTime RadiopharmaceuticalStartDateTime
    ReferencedImageSequence ReferencedSOPClassUID ReferencedSOPInstanceUID ReferencedFrameNumber
    SharedFunctionalGroupsSequence PerFrameFunctionalGroupsSequence PixelMeasuresSequence
    PlanePositionSequence PlaneOrientationSequence PixelValueTransformationSequence
    FrameVOILUTSequence FrameContentSequence FrameAcquisitionNumber FrameReferenceDateTime
    FrameAcquisitionDateTime FrameAcquisitionDuration StackID InStackPositionNumber
    TemporalPositionIndex DimensionIndexValues MREchoSequence EffectiveEchoTime
    DimensionOrganizationSequence DimensionOrganizationUID DimensionOrganizationType
    DimensionIndexSequence DimensionIndexPointer FunctionalGroupPointer
"""

#: Kept verbatim even when private: they name a kind of object or an encoding.
_CLASS_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID",
               "TransferSyntaxUID"}
_ACTION_BY_VR = {"UI": Action.UID, "DA": Action.DATE, "DT": Action.DATETIME, "SQ": Action.SEQUENCE}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a DICOM keyword")
    return tag


def _rule(keyword: str) -> tuple[int, Rule]:
    tag = _tag(keyword)
    vr = dictionary_VR(tag)
    action = Action.CLASS_UID if keyword in _CLASS_UIDS else _ACTION_BY_VR.get(vr, Action.KEEP)
    # "OB or OW" style entries: any of the alternatives, or the unresolved form itself.
    return tag, Rule(action, frozenset(vr.split(" or ")) | {vr})


#: The one table of rules: tag -> action. An attribute not in it is removed.
RULES: dict[int, Rule] = dict(_rule(keyword) for keyword in _KEEP.split())

_DEIDENTIFICATION_METHOD = "PS3.15 Basic Profile; Modified Dates; Patient Characteristics"
#: CID 7050 De-identification Method codes (PS3.16), scheme DCM.
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
_DA = re.compile(r"(\d{8})()")
_DT = re.compile(r"(\d{8})((?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?:[+-]\d{4})?)")
_UID_SHAPE = re.compile(r"\d+(?:\.\d+)+")

# See has_burned_in_annotation. Classes are suffixes of _STORAGE: ultrasound (3, 3.1, 6, 6.x),
# secondary capture (7, 7.x), visible light (77.x) and encapsulated documents (104.x).
_BURNED_IN_MODALITIES = {"US", "IVUS", "OT", "DOC", "XC", "ES", "GM", "SM"}
_STORAGE = "1.2.840.10008.5.1.4.1.1."
_BURNED_IN_CLASSES = {"3", "3.1", "6", "6.1", "6.2", "7"}
_BURNED_IN_CLASS_PREFIXES = ("7.", "77.", "104.")


class Deidentifier:
    """De-identifies DICOM JSON and pydicom datasets for one share link.

    Parameters
    ----------
    secret : bytes
        The share link's key (32 random bytes). UIDs, the date shift and the pseudonyms are
        HMAC-SHA256 values keyed with it, so they are stable for the link and cannot be
        reversed or linked across links without it.

    Raises
    ------
    ValueError
        If ``secret`` is shorter than 16 bytes, which would make the pseudonyms guessable.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the de-identification secret must be at least 16 bytes")
        self._secret = bytes(secret)

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    @property
    def date_shift_days(self) -> int:
        """Days added to every date: between -3650 and -365, derived from the secret."""
        n = int.from_bytes(self._mac(b"date-shift")[:8], "big")
        return -(365 + n % (3650 - 365 + 1))

    def uid(self, original: str) -> str:
        """The replacement for an instance-identifying UID (PS3.15 E.1-1 action U).

        Parameters
        ----------
        original : str
            The UID to replace; trailing padding is ignored.

        Returns
        -------
        str
            ``2.25.<decimal of the first 128 bits of HMAC-SHA256(secret, original)>``: a valid
            UID of at most 44 characters (PS3.5 B.2), the same for the same secret and UID.
        """
        digest = self._mac(original.strip(" \0").encode("ascii", "replace"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def original_uid(self, remapped: str, candidates: Iterable[str]) -> str | None:
        """The candidate whose :meth:`uid` is ``remapped``, or None if there is none.

        Parameters
        ----------
        remapped : str
            A UID from a request on the de-identified link.
        candidates : iterable of str
            The stored UIDs it may stand for, e.g. the shared study's UIDs.
        """
        remapped = remapped.strip(" \0")
        return next((c for c in candidates if self.uid(c) == remapped), None)

    def pseudonym(self) -> tuple[str, str]:
        """The de-identified patient's name and ID, derived from the secret only.

        Returns
        -------
        tuple of str
            ``("ANONYMOUS^<8 hex>", "ANON-<12 hex>")``.
        """
        name = self._mac(b"patient-name").hex()[:8].upper()
        return f"ANONYMOUS^{name}", f"ANON-{self._mac(b'patient-id').hex()[:12].upper()}"

    def _values(self, action: Action, values: list[Any]) -> list[Any] | None:
        """Apply an action to an element's values; None means remove the element."""
        if action in (Action.KEEP, Action.CLASS_UID):
            # Scalars only: a nested object under a kept tag would smuggle in anything.
            scalar = all(v is None or isinstance(v, str | int | float | bytes) for v in values)
            return copy.deepcopy(values) if scalar else None
        if not all(isinstance(value, str) for value in values):
            return None
        if action is Action.UID:
            return [self._any_uid(value.strip(" \0")) for value in values]
        out = [self._date(value.strip(" \0"), action is Action.DATETIME) for value in values]
        return None if None in out else out

    def _any_uid(self, value: str) -> str:
        """A UID defined by the standard as it is, any other one remapped; empty stays empty."""
        return value if not value or value in UID_dictionary else self.uid(value)

    def _date(self, value: str, with_time: bool) -> str | None:
        """A DA (or DT, time and offset kept) moved by the date shift; None if malformed."""
        if not value:
            return value
        match = _DT.fullmatch(value) if with_time else _DA.fullmatch(value)
        if match is None:
            return None
        date, rest = match.group(1), match.group(2) or ""
        try:
            shifted = datetime.date(int(date[:4]), int(date[4:6]), int(date[6:]))
            shifted += datetime.timedelta(days=self.date_shift_days)
        except (ValueError, OverflowError):
            return None
        return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}{rest}"

    def _uri(self, uri: str) -> str | None:
        """A BulkDataURI with each UID in its path or query remapped, the host left alone."""
        try:
            parts = urlsplit(uri)
        except ValueError:  # e.g. a malformed IPv6 host: drop the element, do not fail
            return None
        path = "/".join(self._any_uid(s) if _UID_SHAPE.fullmatch(s) else s
                        for s in parts.path.split("/"))
        query = urlencode([(k, self._any_uid(v) if _UID_SHAPE.fullmatch(v) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)])
        return urlunsplit(parts._replace(path=path, query=query))

    def _additions(self) -> list[tuple[str, str, Any]]:
        """Attributes the profile adds or replaces at the top level: (keyword, VR, value)."""
        name, patient_id = self.pseudonym()
        codes = [[("CodeValue", "SH", value), ("CodingSchemeDesignator", "SH", "DCM"),
                  ("CodeMeaning", "LO", meaning)] for value, meaning in _METHOD_CODES]
        return [
            ("PatientName", "PN", name),
            ("PatientID", "LO", patient_id),
            # Type 2 in the General Study module, and OHIF shows them: present but empty.
            ("StudyID", "SH", None),
            ("AccessionNumber", "SH", None),
            ("PatientIdentityRemoved", "CS", "YES"),
            ("DeidentificationMethod", "LO", _DEIDENTIFICATION_METHOD),
            ("DeidentificationMethodCodeSequence", "SQ", codes),
            ("LongitudinalTemporalInformationModified", "CS", "MODIFIED"),
        ]

    def json_dataset(self, dataset: dict[str, Any]) -> dict[str, Any]:
        """A de-identified copy of a DICOM JSON dataset (PS3.18 Annex F).

        Parameters
        ----------
        dataset : dict
            ``{"GGGGEEEE": {"vr": ..., "Value" | "BulkDataURI" | "InlineBinary": ...}}``;
            it is not modified.

        Returns
        -------
        dict
            A new dataset holding only the kept attributes (UIDs remapped, dates shifted,
            sequences filtered item by item) plus the attributes the profile adds, with
            upper-case keys in tag order.
        """
        out = self._json(dataset)
        for keyword, vr, value in self._additions():
            out[f"{_tag(keyword):08X}"] = _json_element(vr, value)
        return dict(sorted(out.items()))

    def _json(self, dataset: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, element in dataset.items():
            tag = int(key, 16) if re.fullmatch(r"[0-9A-Fa-f]{8}", key) else None
            rule = RULES.get(tag) if tag is not None else None
            if rule is None or not isinstance(element, dict) or element.get("vr") not in rule.vrs:
                continue
            new: dict[str, Any] = {"vr": element["vr"]}
            if rule.action is Action.SEQUENCE:
                items = [self._json(i) for i in element.get("Value") or [] if isinstance(i, dict)]
                if items:
                    new["Value"] = items
            elif isinstance(element.get("Value"), list) and element["Value"]:
                values = self._values(rule.action, list(element["Value"]))
                if values is None:
                    continue
                new["Value"] = values
            elif rule.action is not Action.KEEP:
                pass  # a UID or date as bulk data could not be remapped or shifted: no value
            elif isinstance(element.get("BulkDataURI"), str):
                uri = self._uri(element["BulkDataURI"])
                if uri is None:
                    continue
                new["BulkDataURI"] = uri
            elif "InlineBinary" in element:
                new["InlineBinary"] = element["InlineBinary"]
            out[f"{tag:08X}"] = new
        return dict(sorted(out.items()))

    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of a pydicom dataset, file meta included.

        Parameters
        ----------
        ds : pydicom.Dataset
            Not modified. Its file meta, if any, is filtered by the same rules (so
            MediaStorageSOPInstanceUID is remapped like SOPInstanceUID).

        Returns
        -------
        pydicom.Dataset
            A new dataset that ``dcmwrite`` can write with or without
            ``enforce_file_format``; Pixel Data is copied unchanged.
        """
        out = self._dataset(ds)
        for keyword, vr, value in self._additions():
            out.add(_data_element(keyword, vr, value))
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            out.file_meta = FileMetaDataset(self._dataset(meta, file_meta=True))
            # The original implementation UID names the software that wrote the original.
            out.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            out.preamble = b"\0" * 128  # the original preamble is application-defined content
        implicit, little = ds.original_encoding
        out.set_original_encoding(implicit, little, ds.original_character_set)
        return out

    def _dataset(self, ds: Dataset, file_meta: bool = False) -> Dataset:
        out = Dataset()
        # Looking a tag up before reading its element keeps private and unknown values encoded.
        for tag in sorted(ds.keys()):
            rule = RULES.get(tag)
            # Group 0002 belongs in the file meta only; pydicom refuses it in the body.
            if rule is None or (Tag(tag).group == 2) != file_meta:
                continue
            elem = ds[tag]
            if elem.VR not in rule.vrs:
                continue
            if rule.action is Action.SEQUENCE:
                value: Any = Sequence([self._dataset(item) for item in elem.value or []])
            else:
                raw = elem.value
                many = isinstance(raw, list | MultiValue)
                empty = raw is None or (isinstance(raw, str) and not raw)
                values = list(raw) if many else ([] if empty else [raw])
                if rule.action in (Action.UID, Action.DATE, Action.DATETIME):
                    # With config.datetime_conversion, DA/DT are date objects; str() is the text.
                    values = ["" if v is None else str(v) for v in values]
                kept = self._values(rule.action, values)
                if kept is None:
                    continue
                value = kept if many else (kept[0] if kept else raw)
            new = DataElement(tag, elem.VR, value)
            # Encapsulated Pixel Data must stay undefined length to be written back.
            new.is_undefined_length = elem.is_undefined_length
            out.add(new)
        return out


def _json_element(vr: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {"vr": vr}
    if vr == "SQ":
        items = [{f"{_tag(k):08X}": _json_element(v, x) for k, v, x in item}
                 for item in value]
        return {"vr": vr, "Value": items}
    return {"vr": vr, "Value": [{"Alphabetic": value} if vr == "PN" else value]}


def _data_element(keyword: str, vr: str, value: Any) -> DataElement:
    if vr == "SQ":
        value = Sequence([_item(item) for item in value])
    return DataElement(_tag(keyword), vr, "" if value is None else value)


def _item(elements: list[tuple[str, str, Any]]) -> Dataset:
    ds = Dataset()
    for element in elements:
        ds.add(_data_element(*element))
    return ds


def has_burned_in_annotation(dataset: dict[str, Any] | Dataset) -> bool:
    """Whether an instance's pixels may show identifying text, so must not be shared.

    PS3.15 E.3.1 notes that burned-in annotation is rare in most modalities (CT) but routine
    in others (ultrasound). An explicit BurnedInAnnotation (0028,0301) of "YES" or "NO" is
    trusted. Without it, the answer is True for the modalities and SOP classes that commonly
    carry text or recognisable content in their pixels: ultrasound (US, IVUS), secondary
    capture (screen grabs, scanned documents; modality OT), encapsulated documents (DOC),
    visible light photography, endoscopy, video and microscopy (XC, ES, GM, SM: photographs
    and slide labels). Projection X-ray (CR, DX, XA, RF) is not included: its pixels come from
    the detector, and annotated screen captures from those systems are secondary captures.

    Parameters
    ----------
    dataset : dict or pydicom.Dataset
        The instance's header as DICOM JSON or as a pydicom dataset.

    Returns
    -------
    bool
        True when pixel data should not be served through a de-identified link.
    """
    def first(keyword: str) -> str:
        if isinstance(dataset, Dataset):
            value = dataset.get(keyword)
        else:
            values = dataset.get(f"{_tag(keyword):08X}", {}).get("Value") or [None]
            value = values[0]
        return str(value or "").strip().upper()

    burned_in = first("BurnedInAnnotation")
    if burned_in in ("YES", "NO"):
        return burned_in == "YES"
    sop_class = first("SOPClassUID")
    suffix = sop_class.removeprefix(_STORAGE)
    return first("Modality") in _BURNED_IN_MODALITIES or (
        sop_class.startswith(_STORAGE)
        and (suffix in _BURNED_IN_CLASSES or suffix.startswith(_BURNED_IN_CLASS_PREFIXES)))
