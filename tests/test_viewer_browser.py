"""The OHIF Viewer served by ``pacs serve``, driven in headless Chromium like a radiologist.

Real peers only: the pinned OHIF release installed by ``pacs viewer install`` (npm), Debian's
Chromium (``/usr/bin/chromium``) driven by Playwright, and ``pacs serve`` with the sample
studies imported. What the viewer draws is checked through Cornerstone (which OHIF exposes
as ``window.cornerstone``): the decoded pixel values of the image on screen are compared
with the stored file's, not only a canvas that is not blank. Screenshots go to
``build/test-artifacts/`` (``PACS_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from webclient import PASSWORD

from pacs.sampledata import ct_chest_series
from peers import VIEWER_DIR, free_port, require_peer, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_dicom"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = Path(os.environ.get("PACS_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
CT_STUDY = "2.25.123310908792150242595810694833455775405"
LONG_CT_SLICES = 300
#: A provincial link: 10 Mbit/s each way, 100 ms before the first byte of each answer.
SLOW_LINK = {"offline": False, "latency": 100, "downloadThroughput": 10e6 / 8,
             "uploadThroughput": 10e6 / 8}
VIEWPORT = ".cornerstone-viewport-element, [data-cy=viewport-pane]"
#: What the page reads off the image on screen (the first viewport).
SHOWN_IMAGE = """() => {
  const viewport = window.cornerstone.getEnabledElements()[0].viewport;
  const image = viewport.getCornerstoneImage();
  return {imageId: viewport.getCurrentImageId(), index: viewport.getCurrentImageIdIndex(),
          count: viewport.getImageIds().length, rows: image.rows, columns: image.columns,
          scaled: Boolean(image.preScale && image.preScale.scaled),
          pixels: Array.from(image.getPixelData())};
}"""


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_peer(False, "Playwright (pip install playwright)")
    require_peer(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module")
def archive(ohif_viewer, tmp_path_factory) -> str:
    """``pacs serve`` with the sample studies, its web root URL."""
    yield from serve(tmp_path_factory.mktemp("viewer") / "var", SAMPLES)


@pytest.fixture(scope="module")
def long_ct_archive(ohif_viewer, tmp_path_factory) -> str:
    """``pacs serve`` holding one 300-slice chest CT."""
    folder = tmp_path_factory.mktemp("ct300")
    files = folder / "files"
    files.mkdir()
    for number, dataset in enumerate(ct_chest_series(LONG_CT_SLICES), start=1):
        dataset.save_as(files / f"{number:04d}.dcm", enforce_file_format=True)
    yield from serve(folder / "var", files)


def serve(data_dir: Path, studies: Path):
    """Import ``studies``, run ``pacs serve`` on them, add a radiologist, yield its web root
    URL (which knows the first admin's password, printed once by ``pacs serve``)."""
    subprocess.run([sys.executable, "-m", "pacs.cli", "import", "--quiet", "--data-dir",
                    str(data_dir), str(studies)], capture_output=True, check=False)
    port = free_port()
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_HTTP_PORT": str(port),
           "PACS_DICOM_PORT": str(free_port()), "PACS_DICOM_HOST": "127.0.0.1",
           "PACS_WORKERS": "1", "PACS_HTTP_WORKERS": "2", "PACS_VIEWER_DIR": str(VIEWER_DIR),
           "PACS_HTTP_ACCESS_LOG": str(data_dir.parent / ACCESS_LOG)}
    with (data_dir.parent / "serve.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pacs.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        printed = (data_dir.parent / "serve.log").read_text()
        admin_password = re.search(r"created user 'admin' with password (\S+)", printed).group(1)
        subprocess.run([sys.executable, "-m", "pacs.cli", "user", "add", READER, "--role",
                        "radiologist", "--password-stdin", "--data-dir", str(data_dir)],
                       input=PASSWORD + "\n", capture_output=True, text=True, check=True)
        yield Served(f"http://127.0.0.1:{port}", data_dir.parent / ACCESS_LOG, admin_password)
    finally:
        stop_process(process)


ACCESS_LOG = "access.log"
READER = "bs.lan"  # the radiologist the browser signs in as


def sign_in(page, archive: str, username: str = READER, password: str = PASSWORD) -> None:
    """Sign in through the login page, as a person would."""
    page.goto(f"{archive}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login" not in page.url, "signing in failed"


class Served(str):
    """The web root URL of a running ``pacs serve``, which also knows its request log."""

    def __new__(cls, url: str, access_log: Path, admin_password: str) -> Served:
        served = super().__new__(cls, url)
        served.access_log = access_log
        served.admin_password = admin_password
        return served

    def requests_so_far(self) -> int:
        """How many requests the archive has logged: a mark for
        :meth:`failed_dicomweb_requests`."""
        return len(self._logged())

    def failed_dicomweb_requests(self, since: int = 0) -> list[str]:
        """Every DICOMweb request the archive answered with a 4xx or 5xx, so far (after the
        first ``since`` requests).

        Read from the archive's side: the viewer fetches frames and thumbnails from web
        workers, whose requests the page's own events do not show.
        """
        return [line for line in self._logged()[since:]
                if re.search(r'"GET /dicom-web/\S* HTTP/[0-9.]+" [45]\d\d ', line)]

    def _logged(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


class Session:
    """One browser tab and every DICOMweb answer it got."""

    def __init__(self, browser, archive: str | None = None, locale: str = "en-US") -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900},
                                           locale=locale)
        self.page = self.context.new_page()
        # The archive's request log up to here belongs to earlier tests.
        self.mark = archive.requests_so_far() if isinstance(archive, Served) else 0
        if archive is not None:
            sign_in(self.page, archive)
        self.failures: list[str] = []
        self.page.on("response", self._answered)
        self.page.on("requestfailed", lambda request: self.failures.append(
            f"{request.url}: {request.failure}") if "/dicom-web/" in request.url else None)

    def _answered(self, response) -> None:
        if response.status >= 400:
            self.failures.append(f"{response.url}: {response.status}")

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser, archive):
    opened = Session(browser, archive)
    yield opened
    opened.close()


def search_by_patient_name(session: Session, archive: str, typed: str) -> None:
    page = session.page
    page.goto(f"{archive}/viewer/", wait_until="networkidle")
    page.wait_for_selector("[data-cy^=studyRow-]", timeout=60_000)
    page.locator("input").first.fill(typed)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-cy^=studyRow-]').length === 1", timeout=30_000)


def open_ct(session: Session, archive: str) -> None:
    search_by_patient_name(session, archive, "nguyen van an")
    session.page.locator("[data-cy^=studyRow-]").first.click()
    session.page.click(f"[data-cy=\"mode-viewer-{CT_STUDY}\"]")
    wait_for_image(session)


def wait_for_image(session: Session) -> None:
    """Until the first viewport holds an image at full quality, not a preview (the
    first-visit tour dismissed)."""
    from playwright.sync_api import TimeoutError as NotShown

    skip = session.page.get_by_text("Skip all")
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except NotShown:  # no tour on this visit
        pass
    session.page.wait_for_function(
        """() => { const elements = window.cornerstone && window.cornerstone.getEnabledElements();
                   const viewport = elements && elements.length && elements[0].viewport;
                   const image = viewport && viewport.getCornerstoneImage();
                   return Boolean(image) && (image.imageQualityStatus === undefined
                                             || image.imageQualityStatus >= 8); }""",
        timeout=60_000)


def scroll(session: Session, notches: int, shown: dict) -> dict:
    """Turn the mouse wheel over the viewport; what it shows once it has left ``shown``."""
    session.page.locator(VIEWPORT).first.hover()
    for _ in range(notches):
        session.page.mouse.wheel(0, 120)
    session.page.wait_for_function(
        "index => window.cornerstone.getEnabledElements()[0].viewport"
        ".getCurrentImageIdIndex() !== index", arg=shown["index"], timeout=60_000)
    wait_for_image(session)
    return session.page.evaluate(SHOWN_IMAGE)


def stored_pixels(image_id: str, scaled: bool) -> np.ndarray:
    """The pixel values of the sample file that ``image_id`` names, as Cornerstone holds
    them (modality values when it pre-scaled them)."""
    sop = re.search(r"/instances/([0-9.]+)/frames/", image_id).group(1)
    for path in SAMPLES.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        if dataset.SOPInstanceUID == sop:
            pixels = dataset.pixel_array.astype(np.float64)
            if scaled:
                pixels = pixels * float(dataset.get("RescaleSlope", 1)) \
                    + float(dataset.get("RescaleIntercept", 0))
            return pixels
    raise AssertionError(f"{sop} is not a sample instance")


def test_the_study_list_finds_a_vietnamese_name_typed_without_accents(session, archive):
    search_by_patient_name(session, archive, "nguyen van an")
    rows = session.page.locator("[data-cy^=studyRow-]")
    assert "Nguyễn" in rows.first.inner_text()
    session.screenshot("study-list-nguyen-van-an")
    assert session.failures == []
    assert archive.failed_dicomweb_requests(since=session.mark) == []


def test_the_opened_ct_shows_the_stored_pixel_values(session, archive):
    open_ct(session, archive)
    shown = session.page.evaluate(SHOWN_IMAGE)
    session.screenshot("ct-first-image")
    pixels = np.array(shown["pixels"], dtype=np.float64).reshape(shown["rows"], shown["columns"])
    assert np.array_equal(pixels, stored_pixels(shown["imageId"], shown["scaled"]))
    assert pixels.std() > 0  # an image, not a blank frame
    assert session.failures == []
    assert archive.failed_dicomweb_requests(since=session.mark) == []


def test_scrolling_shows_another_slice(session, archive):
    open_ct(session, archive)
    first = session.page.evaluate(SHOWN_IMAGE)
    later = scroll(session, 5, first)
    session.screenshot("ct-after-scrolling")
    assert later["imageId"] != first["imageId"]
    assert later["pixels"] != first["pixels"]
    pixels = np.array(later["pixels"], dtype=np.float64).reshape(later["rows"], later["columns"])
    assert np.array_equal(pixels, stored_pixels(later["imageId"], later["scaled"]))
    assert session.failures == []
    assert archive.failed_dicomweb_requests(since=session.mark) == []


@pytest.mark.parametrize("typed", ["nguyen van an", "tran thi bich", "le hoang minh"])
def test_every_sample_study_opens_with_each_series_drawn(session, archive, typed):
    search_by_patient_name(session, archive, typed)
    row = session.page.locator("[data-cy^=studyRow-]").first
    study = row.get_attribute("data-cy").removeprefix("studyRow-")
    row.click()
    session.page.click(f"[data-cy=\"mode-viewer-{study}\"]")
    wait_for_image(session)
    thumbnails = session.page.locator("[data-cy=study-browser-thumbnail]")
    count = thumbnails.count()
    assert count >= 1
    for number in range(count):
        thumbnails.nth(number).dblclick()
        wait_for_image(session)
        shown = session.page.evaluate(SHOWN_IMAGE)
        pixels = np.array(shown["pixels"], dtype=np.float64)
        assert np.array_equal(pixels.reshape(shown["rows"], shown["columns"]),
                              stored_pixels(shown["imageId"], shown["scaled"]))
    session.screenshot(f"study-{typed.replace(' ', '-')}")
    assert session.failures == []
    assert archive.failed_dicomweb_requests(since=session.mark) == []


def test_the_interface_follows_a_vietnamese_browser(browser, archive):
    vietnamese = Session(browser, archive, locale="vi-VN")
    try:
        vietnamese.page.goto(f"{archive}/viewer/", wait_until="networkidle")
        vietnamese.page.wait_for_selector("text=Tên Bệnh nhân", timeout=60_000)
        vietnamese.screenshot("study-list-vietnamese")
        assert vietnamese.failures == []
        assert archive.failed_dicomweb_requests(since=vietnamese.mark) == []
    finally:
        vietnamese.close()


def test_the_landing_page_leads_into_the_viewer(session, archive):
    session.page.goto(archive + "/", wait_until="networkidle")
    assert session.page.locator("#studies").inner_text() == "3"
    session.page.click("a.open")
    session.page.wait_for_selector("[data-cy^=studyRow-]", timeout=60_000)
    assert session.page.url.rstrip("/") == f"{archive}/viewer"
    session.screenshot("landing-page-to-viewer")


def test_a_300_slice_ct_over_a_slow_link_draws_and_scrolls(browser, long_ct_archive):
    slow = Session(browser, long_ct_archive)
    try:
        cdp = slow.context.new_cdp_session(slow.page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", SLOW_LINK)
        slow.page.goto(f"{long_ct_archive}/viewer/viewer?StudyInstanceUIDs={CT_STUDY}")
        wait_for_image(slow)
        first = slow.page.evaluate(SHOWN_IMAGE)
        assert first["count"] == LONG_CT_SLICES
        later = scroll(slow, 3, first)
        slow.screenshot("ct-300-slices-slow-link")
        assert later["pixels"] != first["pixels"]
        assert slow.failures == []
        assert long_ct_archive.failed_dicomweb_requests(since=slow.mark) == []
    finally:
        slow.close()


#: Every render of a viewport: the quality of the image drawn (null before there is one) and
#: whether the preview label was on (read after the archive's own listener has set it).
RECORD_RENDERS = """window.pacsRenders = [];
document.addEventListener("CORNERSTONE_IMAGE_RENDERED", (event) => setTimeout(() => {
  const image = window.cornerstone.getEnabledElement(event.target).viewport.getCornerstoneImage();
  const label = event.target.querySelector(":scope > [data-pacs-preview]");
  window.pacsRenders.push({quality: image ? (image.imageQualityStatus ?? 8) : null,
                           labelled: Boolean(label) && label.style.display !== "none",
                           text: label ? label.textContent : ""});
}), true);"""


def test_over_a_slow_link_a_preview_is_labelled_until_the_original_is_drawn(browser, archive):
    """The radiograph (512×512, ~210 KB as HTJ2K) is drawn first from its first 64 KB: every
    render of that preview carries the label, and the original, drawn next with the stored
    pixel values, carries none."""
    dx_study = next(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
                    for path in (SAMPLES / "dx-chest").rglob("*.dcm"))
    slow = Session(browser, archive)
    try:
        slow.page.add_init_script(RECORD_RENDERS)
        cdp = slow.context.new_cdp_session(slow.page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", SLOW_LINK)
        slow.page.goto(f"{archive}/viewer/viewer?StudyInstanceUIDs={dx_study}")
        slow.page.wait_for_function(
            "() => window.pacsRenders.some(render => render.quality !== null "
            "&& render.quality < 8)", timeout=60_000)
        slow.screenshot("dx-preview-slow-link")
        wait_for_image(slow)
        slow.page.wait_for_function(
            "() => window.pacsRenders.at(-1).quality === 8", timeout=60_000)
        renders = slow.page.evaluate("window.pacsRenders")
        previews = [render for render in renders if (render["quality"] or 8) < 8]
        assert previews and all(render["labelled"] for render in previews)
        assert "PREVIEW" in previews[0]["text"]
        assert not renders[-1]["labelled"]
        shown = slow.page.evaluate(SHOWN_IMAGE)
        pixels = np.array(shown["pixels"], dtype=np.float64)
        assert np.array_equal(pixels.reshape(shown["rows"], shown["columns"]),
                              stored_pixels(shown["imageId"], shown["scaled"]))
        assert slow.failures == []
        assert archive.failed_dicomweb_requests(since=slow.mark) == []
    finally:
        slow.close()


def other_study() -> str:
    """A sample study other than the CT."""
    for path in SAMPLES.rglob("*.dcm"):
        uid = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
        if uid != CT_STUDY:
            return uid
    raise AssertionError("only one sample study")


def test_a_radiologist_shares_a_study_that_a_second_browser_opens_alone(browser, archive):
    """The issue's scenario: an admin creates a radiologist, who signs in, opens a study and
    shares it for 24 hours; a second browser opens the link and sees only that study; the
    admin sees all of it in the audit page."""
    admin = Session(browser)
    radiologist = Session(browser)
    consultant = Session(browser)  # a doctor in another province: no account
    try:
        sign_in(admin.page, archive, "admin", archive.admin_password)
        admin.page.goto(f"{archive}/admin")
        admin.page.fill("#user-username", "bs.tuan")
        admin.page.fill("#user-password", PASSWORD)
        admin.page.select_option("#user-role", "radiologist")
        admin.page.click("#user-submit")
        admin.page.wait_for_selector('tr[data-username="bs.tuan"]')

        sign_in(radiologist.page, archive, "bs.tuan", PASSWORD)
        open_ct(radiologist, archive)
        radiologist.page.goto(f"{archive}/shares")
        radiologist.page.fill("#share-study-uid", CT_STUDY)
        radiologist.page.select_option("#share-hours", "24")
        radiologist.page.click("#share-submit")
        radiologist.page.wait_for_function(
            "() => document.querySelector('#share-url').value.includes('/share/')")
        link = radiologist.page.input_value("#share-url")
        radiologist.screenshot("share-link-created")

        consultant.page.goto(link)
        wait_for_image(consultant)
        shown = consultant.page.evaluate(SHOWN_IMAGE)
        pixels = np.array(shown["pixels"], dtype=np.float64)
        assert np.array_equal(pixels.reshape(shown["rows"], shown["columns"]),
                              stored_pixels(shown["imageId"], shown["scaled"]))
        consultant.screenshot("share-link-opened")
        consultant.page.goto(f"{archive}/viewer/", wait_until="networkidle")
        consultant.page.wait_for_selector("[data-cy^=studyRow-]", timeout=60_000)
        assert consultant.page.locator("[data-cy^=studyRow-]").count() == 1
        other = consultant.page.request.get(f"{archive}/dicom-web/studies/{other_study()}/series")
        assert other.status == 403

        admin.page.goto(f"{archive}/admin")
        admin.page.click("#audit-submit")
        admin.page.wait_for_selector("#audit-body tr")
        trail = admin.page.inner_text("#audit-body")
        admin.screenshot("audit-page")
        for expected in ("share-create", "share-use", "login", "bs.tuan", "view", "admin"):
            assert expected in trail
    finally:
        for opened in (admin, radiologist, consultant):
            opened.close()


def test_a_deidentified_share_link_shows_the_images_and_no_name(browser, archive):
    radiologist = Session(browser, archive)
    consultant = Session(browser)
    try:
        created = radiologist.page.request.post(
            f"{archive}/api/shares", data={"study_uid": CT_STUDY, "hours": 2, "deidentify": True},
            headers={"X-CSRF-Token": csrf_of(radiologist.page, archive)})
        assert created.status == 201, created.text()
        consultant.page.goto(created.json()["url"])
        wait_for_image(consultant)
        consultant.page.wait_for_selector("[data-cy=study-browser-thumbnail]", timeout=60_000)
        shown = consultant.page.evaluate(SHOWN_IMAGE)
        assert np.array(shown["pixels"]).std() > 0
        assert CT_STUDY not in shown["imageId"]  # the viewer works on remapped UIDs
        consultant.screenshot("deidentified-share-opened")
        page_text = consultant.page.inner_text("body")
        assert "Nguyễn" not in page_text and "15-Mar-2026" not in page_text
        assert consultant.failures == []
        assert archive.failed_dicomweb_requests(since=radiologist.mark) == []
    finally:
        radiologist.close()
        consultant.close()


def csrf_of(page, archive: str) -> str:
    """The CSRF token of the page's session, as the share page gives it to its script."""
    page.goto(f"{archive}/shares")
    return page.get_attribute('meta[name="csrf-token"]', "content")
