"""The sample studies: deterministic, committed as generated, small, valid and archivable."""

from __future__ import annotations

import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.uid import ExplicitVRLittleEndian

from pacs import sampledata
from pacs.dicomfile import IMPLEMENTATION_CLASS_UID
from pacs.ingest import IngestStatus, Origin

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "sample_dicom"
SCRIPT = ROOT / "scripts" / "make_sample_data.py"
SIZE_LIMIT = 5_000_000
PATIENT_NAMES = {"Nguyễn^Văn An", "Trần^Thị Bích", "Lê^Hoàng Minh"}
UID_COMPONENT = re.compile(r"^(0|[1-9][0-9]*)$")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.dcm")}


def _is_valid_uid(value: str) -> bool:
    components = value.split(".")
    return len(value) <= 64 and all(UID_COMPONENT.match(c) for c in components)


def _hu(ds: FileDataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _box_mean(ds: FileDataset, x_mm: float, y_mm: float, half_mm: float = 5.0) -> float:
    """Mean HU of a square around a point in patient coordinates (axial slice)."""
    ipp = [float(v) for v in ds.ImagePositionPatient]
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    col, row = round((x_mm - ipp[0]) / col_spacing), round((y_mm - ipp[1]) / row_spacing)
    half = round(half_mm / col_spacing)
    return float(_hu(ds)[row - half : row + half + 1, col - half : col + half + 1].mean())


@pytest.fixture(scope="module")
def committed() -> list[Path]:
    paths = sorted(SAMPLE_DIR.rglob("*.dcm"))
    assert paths, f"no sample files in {SAMPLE_DIR}; run {SCRIPT.relative_to(ROOT)}"
    return paths


@pytest.fixture(scope="module")
def datasets(committed: list[Path]) -> dict[str, FileDataset]:
    return {p.relative_to(SAMPLE_DIR).as_posix(): dcmread(p) for p in committed}


@pytest.fixture(scope="module")
def ct_slices(datasets: dict[str, FileDataset]) -> list[FileDataset]:
    ct = [ds for name, ds in sorted(datasets.items()) if name.startswith("ct-chest/")]
    return sorted(ct, key=lambda ds: int(ds.InstanceNumber))


def test_generation_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first = sampledata.write_sample_studies(tmp_path / "a", ct_slices=4, mr_slices=2, dx_size=128)
    sampledata.write_sample_studies(tmp_path / "b", ct_slices=4, mr_slices=2, dx_size=128)
    assert len(first) == 7
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_committed_samples_match_the_script_with_default_options(
    tmp_path: Path, committed: list[Path]
) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated, stored = _tree(tmp_path), _tree(SAMPLE_DIR)
    assert sorted(generated) == sorted(stored)
    drifted = [name for name in generated if generated[name] != stored[name]]
    assert not drifted, f"sample_dicom/ is stale; rerun {SCRIPT.relative_to(ROOT)}"


def test_committed_samples_total_less_than_5_mb() -> None:
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total < SIZE_LIMIT


def test_samples_are_laid_out_as_study_series_instance(committed: list[Path]) -> None:
    names = {p.relative_to(SAMPLE_DIR).as_posix() for p in committed}
    assert {name.split("/")[0] for name in names} == {"ct-chest", "mr-brain", "dx-chest"}
    assert all(re.fullmatch(r"[a-z-]+/[0-9]+/[0-9]{4}\.dcm", name) for name in names)


def test_every_sample_is_explicit_vr_little_endian_part10(
    datasets: dict[str, FileDataset],
) -> None:
    for name, ds in datasets.items():
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian, name
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID, name
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, name
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID, name


def test_every_sample_uid_is_digits_and_dots_at_most_64_without_leading_zeros(
    datasets: dict[str, FileDataset],
) -> None:
    keywords = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
    for name, ds in datasets.items():
        uids = [str(ds[k].value) for k in keywords]
        uids += [str(ds.FrameOfReferenceUID)] if "FrameOfReferenceUID" in ds else []
        for uid in uids:
            assert _is_valid_uid(uid), f"{name}: {uid!r}"


def test_every_instance_has_its_own_sop_instance_uid(datasets: dict[str, FileDataset]) -> None:
    uids = [str(ds.SOPInstanceUID) for ds in datasets.values()]
    assert len(set(uids)) == len(uids)


def test_patient_names_decode_to_vietnamese(datasets: dict[str, FileDataset]) -> None:
    assert {ds.SpecificCharacterSet for ds in datasets.values()} == {"ISO_IR 192"}
    assert {str(ds.PatientName) for ds in datasets.values()} == PATIENT_NAMES


def test_ct_lungs_are_much_darker_than_soft_tissue(ct_slices: list[FileDataset]) -> None:
    middle = ct_slices[len(ct_slices) // 2]
    for lung_x in (-80.0, 85.0):  # each lung, lateral to the heart
        assert _box_mean(middle, lung_x, 10.0) < -500
    assert _box_mean(middle, 24.0, -22.0) > -100  # the heart


def test_ct_slices_share_one_frame_of_reference_and_step_down_in_z(
    ct_slices: list[FileDataset],
) -> None:
    assert len({str(ds.FrameOfReferenceUID) for ds in ct_slices}) == 1
    assert len({tuple(ds.ImageOrientationPatient) for ds in ct_slices}) == 1
    z = [float(ds.ImagePositionPatient[2]) for ds in ct_slices]
    assert z == [float(ds.SliceLocation) for ds in ct_slices]
    steps = {round(a - b, 3) for a, b in pairwise(z)}
    assert steps == {float(ct_slices[0].SliceThickness)}


def test_consecutive_ct_slices_show_different_anatomy(ct_slices: list[FileDataset]) -> None:
    def blocks(ds: FileDataset) -> np.ndarray:  # 8x8 means: noise of about 1 HU remains
        return _hu(ds).reshape(32, 8, 32, 8).mean(axis=(1, 3))

    for before, after in pairwise(ct_slices):
        assert np.abs(blocks(before) - blocks(after)).max() > 30


def test_writing_fewer_slices_removes_the_stale_ones(tmp_path: Path) -> None:
    sampledata.write_sample_studies(tmp_path, ct_slices=3, mr_slices=2, dx_size=64)
    written = sampledata.write_sample_studies(tmp_path, ct_slices=2, mr_slices=1, dx_size=64)
    assert sorted(tmp_path.rglob("*.dcm")) == sorted(written)


@pytest.mark.parametrize("option", [{"ct_slices": 0}, {"mr_slices": 0}, {"dx_size": 32}])
def test_writing_refuses_sizes_out_of_range(tmp_path: Path, option: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        sampledata.write_sample_studies(tmp_path, **option)
    assert not list(tmp_path.rglob("*.dcm"))


def test_samples_are_stored_by_the_ingest_path(services, committed: list[Path]) -> None:
    results = [services.ingest(p.read_bytes(), Origin("import", p.name)) for p in committed]
    studies = services.index.list_studies()
    assert [r.reason for r in results if r.status is not IngestStatus.STORED] == []
    assert len(studies) == 3
    assert {s.patient_name for s in studies} == PATIENT_NAMES
