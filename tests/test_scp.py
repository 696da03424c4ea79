"""The DICOM receiver against real DCMTK peers (echoscu, storescu), on each backend pair."""

from __future__ import annotations

import subprocess
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from factories import make_dataset, make_instance, to_part10
from pacs.dicomfile import dataset_offset
from pacs.scp.server import DicomReceiver
from peers import free_port, wait_for_port
from test_pydicom_corpus import CORPUS, REFUSED

pytestmark = pytest.mark.dcmtk

SAMPLE_DICOM = Path(__file__).resolve().parent.parent / "sample_dicom"


@pytest.fixture
def receiver(services):
    settings = services.settings.with_overrides(dicom_host="127.0.0.1", dicom_port=free_port())
    server = DicomReceiver(settings, services)
    server.start()
    yield server
    server.stop(grace=5)


def _header(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _storescu_config(files: Iterable[Path], config: Path) -> None:
    """A storescu profile proposing each file's own SOP class and transfer syntax, so that
    storescu sends every file as it is (DCMTK's default profile lacks JPEG 2000 and JPEG-LS)."""
    pairs = sorted({(str(_header(f).SOPClassUID),
                     str(_header(f).file_meta.TransferSyntaxUID)) for f in files})
    syntaxes = sorted({ts for _sop, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for number, ts in enumerate(syntaxes):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for number, (sop, ts) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{number} = {sop}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Test]", "PresentationContexts = Contexts"]
    config.write_text("\n".join(lines) + "\n")


def storescu(dcmtk, port: int, files: list[Path], config: Path, *extra: str):
    _storescu_config(files, config)
    return subprocess.run(
        [dcmtk.storescu, "-aet", "MODALITY1", "-aec", "PACS", "-xf", str(config), "Test",
         *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=300, env={"TCP_NODELAY": "1"},
    )


def valid_corpus_files() -> list[Path]:
    """pydicom's valid test files, one per SOP Instance UID."""
    chosen: dict[str, Path] = {}
    for path in CORPUS:
        if path.name not in REFUSED:
            chosen.setdefault(str(_header(path).SOPInstanceUID), path)
    return sorted(chosen.values())


def sample_files() -> list[Path]:
    return sorted(SAMPLE_DICOM.rglob("*.dcm"))


def what_storescu_sends(dcmtk, files: list[Path], config: Path, folder: Path) -> dict[str, bytes]:
    """The datasets storescu puts on the wire for ``files``, by SOP Instance UID.

    storescu re-encodes some datasets as it sends them (sequence lengths, padding, group
    lengths), so "byte for byte" is checked against what DCMTK's own storescp receives in
    bit-preserving mode from the same storescu and profile.
    """
    port = free_port()
    folder.mkdir()
    storescp = subprocess.Popen(
        [dcmtk.storescp, "--bit-preserving", "+xa", "-aet", "PACS", "-od", str(folder),
         str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        result = storescu(dcmtk, port, files, config)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        storescp.terminate()
        storescp.wait(30)
    sent = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        sent[str(_header(path).SOPInstanceUID)] = data[dataset_offset(data):]
    return sent


def assert_datasets_arrived_byte_for_byte(services, sent: dict[str, bytes]) -> None:
    assert sent
    for sop_instance_uid, dataset in sent.items():
        stored = services.index.find_instance(sop_instance_uid)
        assert stored is not None, f"{sop_instance_uid} was not archived"
        with services.store.open(stored.object_key) as stream:
            received = stream.read()
        assert received[dataset_offset(received):] == dataset, sop_instance_uid


def test_echoscu_succeeds(dcmtk, receiver):
    result = subprocess.run(
        [dcmtk.echoscu, "-aec", "PACS", "127.0.0.1", str(receiver.port)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_wrong_called_ae_title_is_rejected(dcmtk, receiver):
    result = subprocess.run(
        [dcmtk.echoscu, "-aec", "NOT_PACS", "127.0.0.1", str(receiver.port)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr


def test_storescu_sends_sample_studies_over_one_association(dcmtk, receiver, services,
                                                            tmp_path):
    files = sample_files()
    assert files, "sample_dicom/ is empty"
    result = storescu(dcmtk, receiver.port, files, tmp_path / "storescu.cfg")
    assert result.returncode == 0, result.stderr
    assert services.index.counts()["instances"] == len(files)
    sent = what_storescu_sends(dcmtk, files, tmp_path / "storescu.cfg", tmp_path / "sent")
    assert_datasets_arrived_byte_for_byte(services, sent)


def test_storescu_sends_every_transfer_syntax_of_pydicom_corpus(dcmtk, receiver, services,
                                                                tmp_path):
    files = valid_corpus_files()
    result = storescu(dcmtk, receiver.port, files, tmp_path / "storescu.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert services.index.counts()["instances"] == len(files)
    sent = what_storescu_sends(dcmtk, files, tmp_path / "storescu.cfg", tmp_path / "sent")
    assert_datasets_arrived_byte_for_byte(services, sent)


def test_four_associations_at_once_lose_nothing(dcmtk, receiver, services, tmp_path):
    files = sample_files() + valid_corpus_files()
    groups: dict[int, list[Path]] = defaultdict(list)
    for number, path in enumerate(files):
        groups[number % 4].append(path)
    processes = []
    for number, group in groups.items():
        config = tmp_path / f"storescu{number}.cfg"
        _storescu_config(group, config)
        processes.append(subprocess.Popen(
            [dcmtk.storescu, "-aet", f"MODALITY{number}", "-aec", "PACS", "-xf", str(config),
             "Test", "127.0.0.1", str(receiver.port), *map(str, group)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert services.index.counts()["instances"] == len(files)
    sent = what_storescu_sends(dcmtk, files, tmp_path / "all.cfg", tmp_path / "sent")
    assert_datasets_arrived_byte_for_byte(services, sent)


def _send_raw(port: int, path: Path) -> pydicom.Dataset:
    """C-STORE a Part-10 file with pynetdicom, sending its dataset bytes without decoding."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = False


def test_non_dicom_payload_gets_a_failure_status_and_the_server_keeps_serving(
    dcmtk, receiver, services, tmp_path
):
    good = make_instance()
    header_end = dataset_offset(good)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(good[:header_end] + b"\xff\xfe this is not a dataset \x00" * 50)
    status = _send_raw(receiver.port, garbage)
    assert status.Status == 0xC000
    assert status.ErrorComment
    test_echoscu_succeeds(dcmtk, receiver)
    assert services.index.counts()["instances"] == 0


@pytest.mark.parametrize(
    ("uid", "words"),
    [("../../etc/passwd", "not a valid UID"), ("1.2..3", "not a valid UID"),
     ("1." + "2" * 70, "characters long")],
)
def test_hostile_uid_gets_a_failure_status_with_the_reason(
    dcmtk, receiver, services, tmp_path, uid, words
):
    services.ingest(make_instance(), _origin())  # something stored before must stay
    hostile = tmp_path / "hostile.dcm"
    hostile.write_bytes(to_part10(make_dataset(StudyInstanceUID=uid)))
    status = _send_raw(receiver.port, hostile)
    assert status.Status == 0xC000
    assert words in status.ErrorComment
    assert services.index.counts()["instances"] == 1
    assert len(list(services.store.list("instances/"))) == 1
    test_echoscu_succeeds(dcmtk, receiver)


def test_storescu_reports_a_refused_file_and_sends_the_rest(dcmtk, receiver, services,
                                                            tmp_path):
    hostile = tmp_path / "hostile.dcm"
    hostile.write_bytes(to_part10(make_dataset(SeriesInstanceUID="1.2.3.x")))
    good = tmp_path / "good.dcm"
    good.write_bytes(make_instance())
    result = storescu(
        dcmtk, receiver.port, [hostile, good], tmp_path / "storescu.cfg", "-v", "--no-halt"
    )
    output = result.stdout + result.stderr
    assert "Store SCU Failed" not in output
    assert "Error: CannotUnderstand" in output
    assert services.index.counts()["instances"] == 1


def _origin():
    from pacs.ingest import Origin

    return Origin("import", "test")
