#!/usr/bin/env python3
"""Viewer benchmark: what a radiologist waits for in OHIF, from the archive and from Orthanc.

What is measured
----------------
Per round (``--repeat``, medians shown), two generated CT studies of ``--slices`` 512×512
16-bit slices (one for a first visit, one for a returning user) are loaded into the archive
and into Orthanc 1.10.1 with its DICOMweb plugin (started as ../shared/ANCHORS.md says).
Headless Chromium (Debian's, driven by Playwright) opens the archive's OHIF Viewer on each
study through one same-origin reverse proxy on loopback: ``/viewer/`` always comes from the
archive, ``/dicom-web/`` from the server under test, so OHIF and the browser are the same for
both and only the DICOMweb answers differ. The one difference in configuration: against
Orthanc, OHIF fetches each frame of a stack with one plain request, since the archive's
progressive loading asks for HTJ2K byte ranges that only the archive serves (see
:class:`Proxy`). For each server, link and visit:

* **first image**: until the first slice is on screen (Cornerstone holds it), a labelled
  preview from the archive on the slow link;
* **first image at full quality**: until the slice on screen is the original;
* **whole series viewable**: until every slice of the series can be shown, the original or
  a labelled preview of it (OHIF prefetches the stack);

on loopback and on a provincial link emulated by Chromium (``Network.emulateNetworkConditions``:
10 Mbit/s each way, 100 ms latency), for

* a **first visit**: an empty browser cache, the study's link opened, so the viewer's own
  files (pre-gzipped, cached for a year once fetched) load first; timed from the navigation;
* a **returning user**: in the same browser (the viewer's files cached), the study list on
  screen and the other study's row clicked open; timed from the click on the button that
  opens it in the viewer.

Targets (issue 5): first image < 1 s on loopback and < 2 s on the slow link for a returning
user; the whole series viewable in under half of Orthanc's time on the slow link.

    python scripts/bench/viewer.py                   # 300 slices, 3 rounds
    python scripts/bench/viewer.py --slices 100 --repeat 1 --no-orthanc
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from web import DICOMWEB_PLUGIN, LOOPBACK, ORTHANC, Archive, Orthanc, generate_series, say

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SLOW_LINK = {"offline": False, "latency": 100, "downloadThroughput": 10e6 / 8,
             "uploadThroughput": 10e6 / 8}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade"}
FIRST_IMAGE = """() => { const e = window.cornerstone && window.cornerstone.getEnabledElements();
  const v = e && e.length && e[0].viewport; return Boolean(v && v.getCornerstoneImage()); }"""
#: Cornerstone3D's ImageQualityStatus.FULL_RESOLUTION: the frame itself, not a preview.
FIRST_ORIGINAL = """() => { const v = window.cornerstone.getEnabledElements()[0].viewport;
  const image = v.getCornerstoneImage(); return Boolean(image)
    && (image.imageQualityStatus === undefined || image.imageQualityStatus === 8); }"""
#: Seconds to wait for the whole series before calling it never loaded.
WHOLE_SERIES_LIMIT = 600
#: Every slice can be shown: the original or a (labelled) preview of it.
ALL_VIEWABLE = """() => { const v = window.cornerstone.getEnabledElements()[0].viewport;
  return v.getImageIds().every(id => window.cornerstone.cache.getImageQuality(id) !== undefined
    && window.cornerstone.cache.isLoaded(id)); }"""


# -- the same-origin proxy ----------------------------------------------------------------------


class Proxy(ThreadingHTTPServer):
    """``/dicom-web/…`` to ``dicomweb_port``, everything else to ``viewer_port``; requests
    to the archive carry its credentials (as a hospital's authenticating proxy would add).

    With ``plain_stacks``, the viewer's configuration loses the archive's progressive stack
    loading (HTJ2K byte ranges, which only the archive serves): OHIF fetches each frame of a
    stack with one plain request, as for a site that runs Orthanc. (OHIF's own default
    streams each frame instead, which gains nothing on uncompressed frames and, on the
    emulated slow link, stalled Orthanc's stack prefetch for good in two runs of three.)"""

    daemon_threads = True

    def __init__(self, viewer_port: int, dicomweb_port: int,
                 credentials: dict[int, dict[str, str]], *,
                 plain_stacks: bool = False) -> None:
        self.viewer_port, self.dicomweb_port = viewer_port, dicomweb_port
        self.credentials = credentials
        self.plain_stacks = plain_stacks
        super().__init__((LOOPBACK, 0), _Forward)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def do_GET(self) -> None:  # the name http.server calls
        port = self.server.dicomweb_port if self.path.startswith("/dicom-web/") \
            else self.server.viewer_port
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in HOP_BY_HOP}
        headers.update(self.server.credentials.get(port, {}))
        for attempt in (1, 2):  # an idle keep-alive connection may have been closed
            upstream = self._upstream(port, fresh=attempt == 2)
            try:
                upstream.request("GET", self.path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                break
            except (http.client.HTTPException, OSError):
                upstream.close()
                if attempt == 2:
                    raise
        if self.server.plain_stacks and self.path.startswith("/viewer/app-config.js"):
            body = _with_plain_stacks(body)
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _upstream(self, port: int, *, fresh: bool) -> http.client.HTTPConnection:
        upstreams: dict[int, http.client.HTTPConnection] = self.__dict__.setdefault(
            "upstreams", {})
        if fresh or port not in upstreams:
            upstreams[port] = http.client.HTTPConnection(LOOPBACK, port, timeout=300)
        return upstreams[port]

    def log_message(self, *_args: Any) -> None:
        pass


def _with_plain_stacks(app_config: bytes) -> bytes:
    """The archive's ``app-config.js`` with plain single requests for the frames of stacks."""
    prefix = b"window.config = "
    text, _, rest = app_config.partition(b";\n")
    config = json.loads(text.removeprefix(prefix))
    for source in config["dataSources"]:
        source["configuration"]["stackRetrieveOptions"] = {
            "$set": {"retrieveOptions": {"single": {"streaming": False}}}}
    return prefix + json.dumps(config).encode() + b";\n" + rest


# -- measuring ----------------------------------------------------------------------------------


def timed(context: Any, slow: bool,
          begin: Callable[[Any], float]) -> tuple[float, float, float]:
    """Seconds from ``begin(page)`` to the first image, to the first image at full quality
    (later than the first when that was a preview), and to the whole series viewable (NaN
    when the viewer never loaded all of it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = context.new_page()
    if slow:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", SLOW_LINK)
    start = begin(page)
    page.wait_for_function(FIRST_IMAGE, polling="raf", timeout=600_000)
    first = time.perf_counter() - start
    page.wait_for_function(FIRST_ORIGINAL, polling="raf", timeout=600_000)
    original = time.perf_counter() - start
    try:
        page.wait_for_function(ALL_VIEWABLE, polling=100, timeout=WHOLE_SERIES_LIMIT * 1000)
        whole = time.perf_counter() - start
    except PlaywrightTimeout:  # the viewer stopped fetching before the end of the series
        say(f"not every slice loaded within {WHOLE_SERIES_LIMIT} s")
        whole = math.nan
    page.close()
    return first, original, whole


def by_link(url: str) -> Callable[[Any], float]:
    """Open the study's link: the viewer itself loads first (a first visit)."""
    def begin(page: Any) -> float:
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        return start
    return begin


def from_the_list(root: str, study: str) -> Callable[[Any], float]:
    """Open the study from the study list already on screen (a returning user): its row
    clicked to show its series and the button that opens it in the viewer, then timed
    from the click on that button."""
    def begin(page: Any) -> float:
        page.goto(root, wait_until="networkidle")
        row = page.locator(f'[data-cy="studyRow-{study}"]')
        row.wait_for(timeout=120_000)
        row.click()
        button = page.locator(f'[data-cy="mode-viewer-{study}"]')
        button.wait_for(timeout=120_000)
        start = time.perf_counter()
        button.click()
        return start
    return begin


Results = dict[str, dict[str, list[tuple[float, float, float]]]]


def run(args: argparse.Namespace, scratch: Path) -> Results:
    """Every case, ``args.repeat`` rounds; each round opens two studies no server or browser
    has shown before (its own), the archive's turn then Orthanc's."""
    from playwright.sync_api import sync_playwright

    say(f"generating {2 * args.repeat} CT studies of {args.slices} slices ...")
    studies = [generate_series(args.slices) for _ in range(2 * args.repeat)]
    files = [item for _, _, series in studies for item in series]
    os.environ["PACS_VIEWER_DIR"] = str(ROOT / "var" / "viewer")
    archive = Archive(scratch / "pacs")
    servers: list[Any] = [archive]
    if not args.no_orthanc and os.access(ORTHANC, os.X_OK) and os.path.exists(DICOMWEB_PLUGIN):
        servers.append(Orthanc(scratch / "orthanc"))
    results: Results = {}
    try:
        archive.load(files)
        archive.start()
        for server in servers[1:]:
            server.start()
            server.load(files)
        say("servers loaded")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for round_number in range(args.repeat):
                first, returning = studies[2 * round_number], studies[2 * round_number + 1]
                for server in servers:
                    proxy = Proxy(archive.http_port, server.http_port,
                                  {archive.http_port: archive.credentials},
                                  plain_stacks=server is not archive)
                    root = f"http://{LOOPBACK}:{proxy.port}/viewer/"
                    for slow in (False, True):
                        link = "10 Mbit/s, 100 ms" if slow else "loopback"
                        context = browser.new_context(viewport={"width": 1400, "height": 900})
                        cases = (("first visit, study link", by_link(
                                     f"{root}viewer?StudyInstanceUIDs={first[0]}")),
                                 ("returning user, from the list", from_the_list(
                                     root, returning[0])))
                        for visit, begin in cases:
                            measured = timed(context, slow, begin)
                            results.setdefault(server.name, {}).setdefault(
                                f"{link}, {visit}", []).append(measured)
                            say(f"round {round_number + 1}, {server.name}, {link}, {visit}: "
                                f"first image {measured[0]:.2f} s (original "
                                f"{measured[1]:.2f} s), whole series {measured[2]:.1f} s")
                        context.close()
                    proxy.shutdown()
            browser.close()
    finally:
        for server in servers:
            server.stop()
    return results


def report(args: argparse.Namespace, results: Results) -> None:
    print(f"\nOHIF Viewer, a CT series of {args.slices} × 512×512 slices, medians of "
          f"{args.repeat} rounds, seconds: first image / first image at full quality / whole "
          "series viewable\n")
    print(f"{'link, visit':<50} {'archive':>20} {'Orthanc':>20}")
    medians = {name: {case: tuple(statistics.median(values) for values in zip(*runs, strict=True))
                      for case, runs in cases.items()} for name, cases in results.items()}
    for case in medians.get("archive", {}):
        cells = ["{:.2f} / {:.2f} / {:.1f}".format(*medians[name][case])
                 if case in medians.get(name, {}) else "-" for name in ("archive", "Orthanc")]
        print(f"{case:<50} {cells[0]:>20} {cells[1]:>20}")
    mine, theirs = medians.get("archive", {}), medians.get("Orthanc", {})
    returning = "returning user, from the list"
    print("\ntargets:")
    first = mine[f"loopback, {returning}"][0]
    print(f"  first image, loopback, returning user   {first:.2f} s < 1 s  "
          f"{'MET' if first < 1 else 'MISS'}")
    first = mine[f"10 Mbit/s, 100 ms, {returning}"][0]
    print(f"  first image, slow link, returning user  {first:.2f} s < 2 s  "
          f"{'MET' if first < 2 else 'MISS'}")
    if theirs:
        ratio = (mine[f"10 Mbit/s, 100 ms, {returning}"][2]
                 / theirs[f"10 Mbit/s, 100 ms, {returning}"][2])
        print(f"  whole series on the slow link / Orthanc  {ratio:.2f} < 0.5  "
              f"{'MET' if ratio < 0.5 else 'MISS'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300, help="slices per CT series")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are shown)")
    parser.add_argument("--no-orthanc", action="store_true", help="do not run Orthanc")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the data")
    args = parser.parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} missing (scripts/install_system_deps.sh)", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="pacs-viewer-bench-", dir=args.scratch))
    try:
        report(args, run(args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
