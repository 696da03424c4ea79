"""The OHIF Viewer, installed from the npm registry and made servable under ``/viewer/``.

The field's standard web viewer ships prebuilt: the ``@ohif/app`` package holds a built
``dist/`` (``npm install`` of it fails on an unpublished dependency, so the tarball is
fetched with ``npm pack``). :func:`install_ohif` takes one pinned release, checks the
tarball against the SHA-512 recorded here (the registry's own ``dist.integrity``), and
unpacks ``dist/`` into ``<viewer_dir>/ohif-<version>/``, a folder that is never committed.

Two changes make it servable from the archive:

* **the mount point.** The build loads its chunks, workers and icons from ``/``; the
  archive's own pages live there, so every absolute reference is moved under ``/viewer/``:
  ``href``/``src`` in ``index.html`` and ``manifest.json``, ``window.PUBLIC_URL``, ``url(/…)``
  in the style sheets, and the webpack runtime's public path in each bundle
  (``__webpack_require__.p``). A release whose
  files no longer hold these patterns fails the install loudly rather than half-working;
* **pre-compression.** Each text and WebAssembly file gets a ``.gz`` twin, so a first visit
  over a provincial link downloads ~4× fewer bytes without compressing on every request.

``app-config.js`` is not taken from the package: :mod:`pacs.web.viewer` writes it per
request from the settings (the DICOMweb root, the archive's name).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

#: The pinned release, and its tarball's SHA-512 (npm's ``dist.integrity``).
OHIF_VERSION = "3.13.2"
OHIF_INTEGRITY = ("sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKx"
                  "Ffpq+jd5xXZB9E8EA==")
MOUNT = "/viewer/"
#: Files given a ``.gz`` twin (source maps are left as they are: only debuggers fetch them).
COMPRESSED_SUFFIXES = (".js", ".css", ".html", ".json", ".svg", ".wasm", ".mjs", ".txt")
_INSTALLED_MARK = ".installed"
_PUBLIC_PATH = '__webpack_require__.p = "/";'


class ViewerInstallError(RuntimeError):
    """The viewer could not be fetched, checked or unpacked; the message says which."""


def viewer_folder(viewer_dir: Path) -> Path:
    """Where the pinned release is (or would be) installed."""
    return Path(viewer_dir) / f"ohif-{OHIF_VERSION}"


def is_installed(viewer_dir: Path) -> bool:
    """True when the pinned release is unpacked and patched under ``viewer_dir``."""
    return (viewer_folder(viewer_dir) / _INSTALLED_MARK).is_file()


def install_ohif(viewer_dir: Path, *, tarball: Path | None = None) -> Path:
    """Install the pinned OHIF release under ``viewer_dir`` (nothing to do when it is).

    Parameters
    ----------
    viewer_dir
        The ``viewer_dir`` setting.
    tarball
        An already downloaded ``ohif-app-<version>.tgz``; fetched with ``npm pack`` when
        None.

    Returns
    -------
    Path
        The folder served under ``/viewer/``.

    Raises
    ------
    ViewerInstallError
        If npm is missing or fails, the tarball's hash is not the pinned one, or the
        release's files do not have the shape the patches expect.
    """
    target = viewer_folder(viewer_dir)
    if is_installed(viewer_dir):
        return target
    Path(viewer_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=viewer_dir, prefix=".ohif-") as scratch:
        work = Path(scratch)
        archive = tarball or _npm_pack(work)
        _check_integrity(archive)
        unpacked = work / "dist"
        _unpack_dist(archive, unpacked)
        _move_under_mount(unpacked)
        _precompress(unpacked)
        (unpacked / _INSTALLED_MARK).write_text(f"@ohif/app {OHIF_VERSION}\n")
        if target.exists():  # a half-finished earlier attempt
            shutil.rmtree(target)
        os.replace(unpacked, target)
    log.info("OHIF Viewer %s installed in %s", OHIF_VERSION, target)
    return target


def _npm_pack(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerInstallError("npm is not installed: it fetches the OHIF Viewer "
                                 "(Debian: apt-get install npm)")
    done = subprocess.run(
        [npm, "pack", f"@ohif/app@{OHIF_VERSION}", "--pack-destination", str(folder)],
        capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise ViewerInstallError(f"npm pack @ohif/app@{OHIF_VERSION} failed: "
                                 f"{done.stderr.strip()[-500:]}")
    found = sorted(folder.glob("ohif-app-*.tgz"))
    if not found:
        raise ViewerInstallError("npm pack left no tarball")
    return found[0]


def _check_integrity(archive: Path) -> None:
    digest = hashlib.sha512()
    with archive.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    integrity = "sha512-" + base64.b64encode(digest.digest()).decode("ascii")
    if integrity != OHIF_INTEGRITY:
        raise ViewerInstallError(f"{archive.name}: SHA-512 {integrity} is not the pinned "
                                 f"{OHIF_INTEGRITY}; not installed")


def _unpack_dist(archive: Path, destination: Path) -> None:
    """Only regular files and folders under ``package/dist/``, no links, nothing outside."""
    destination.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not name.startswith("package/dist/") or not (member.isfile() or member.isdir()):
                continue
            relative = Path(name[len("package/dist/"):])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise ViewerInstallError(f"{archive.name}: unsafe member {name!r}")
            path = destination / relative
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise ViewerInstallError(f"{archive.name}: cannot read {name!r}")
            with source, path.open("wb") as out:
                shutil.copyfileobj(source, out)


def _move_under_mount(dist: Path) -> None:
    """Rewrite the build's absolute references from ``/`` to :data:`MOUNT`."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    patched = (html.replace('href="/', f'href="{MOUNT}').replace('src="/', f'src="{MOUNT}')
               .replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{MOUNT}"'))
    if f'window.PUBLIC_URL="{MOUNT}"' not in patched or f'src="{MOUNT}app.bundle.' not in patched:
        raise ViewerInstallError("index.html of this OHIF release has an unexpected shape")
    index.write_text(patched, encoding="utf-8")
    manifest = dist / "manifest.json"
    if manifest.is_file():
        manifest.write_text(manifest.read_text(encoding="utf-8").replace('"/', f'"{MOUNT}'),
                            encoding="utf-8")
    for sheet in dist.glob("*.css"):  # fonts: url(/a34f….woff2)
        text = sheet.read_text(encoding="utf-8")
        sheet.write_text(text.replace("url(/", f"url({MOUNT}"), encoding="utf-8")
    bundles = 0
    for script in dist.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        if _PUBLIC_PATH in text:
            script.write_text(text.replace(_PUBLIC_PATH,
                                           f'__webpack_require__.p = "{MOUNT}";'),
                              encoding="utf-8")
            bundles += 1
    if not any(dist.glob("app.bundle.*.js")) or bundles == 0:
        raise ViewerInstallError("no webpack public path found in this OHIF release's bundles")


def _precompress(dist: Path) -> None:
    files = [path for path in dist.rglob("*")
             if path.is_file() and path.suffix in COMPRESSED_SUFFIXES]

    def compress(path: Path) -> None:
        data = path.read_bytes()
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, compresslevel=9,
                                                                    mtime=0))

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:  # zlib lets go of the GIL
        list(pool.map(compress, files))
