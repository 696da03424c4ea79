"""The viewer's files and configuration under /viewer/, and the landing page at /."""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from webclient import signed_in

from pacs.ingest import Origin
from pacs.web import create_app
from pacs.web.accept import frame_choices
from peers import VIEWER_DIR

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"


@pytest.fixture
def installed(ohif_viewer) -> Path:
    return ohif_viewer


@pytest.fixture
def client(installed, tmp_path):
    from pacs.config import Settings

    settings = Settings.load(environ={}, data_dir=tmp_path / "var", viewer_dir=VIEWER_DIR)
    client = signed_in(create_app(settings))
    client.get = functools.partial(client.get, buffered=True)  # files closed once read
    return client


def app_bundle(installed: Path) -> str:
    (bundle,) = installed.glob("app.bundle.*.js")
    return bundle.name


def test_the_viewer_page_loads_its_files_from_under_viewer(client):
    response = client.get("/viewer/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'window.PUBLIC_URL="/viewer/"' in html
    assert not re.search(r'(src|href)="/(?!viewer/)', html)


def test_the_configuration_points_the_viewer_at_this_archive(client):
    response = client.get("/viewer/app-config.js", base_url="https://pacs.benhvien.vn")
    config = config_of(response)
    (source,) = config["dataSources"]
    settings = source["configuration"]
    assert settings["qidoRoot"] == settings["wadoRoot"] == "https://pacs.benhvien.vn/dicom-web"
    assert settings["supportsFuzzyMatching"] is True and settings["supportsWildcard"] is True
    assert settings["thumbnailRendering"] == "thumbnail"
    assert config["routerBasename"] == "/viewer"
    assert response.headers["Cache-Control"] == "no-cache"


def config_of(response) -> dict:
    """The ``window.config`` object of an ``app-config.js`` answer."""
    text, _, _ = response.get_data(as_text=True).partition(";\n")
    return json.loads(text.removeprefix("window.config = "))


def test_stacks_are_fetched_as_htj2k_previews_then_the_rest_of_the_same_bytes(client):
    config = config_of(client.get("/viewer/app-config.js"))
    (source,) = config["dataSources"]
    stack = source["configuration"]["stackRetrieveOptions"]["$set"]
    assert [stage["retrieveType"] for stage in stack["stages"]] == ["singleFast", "singleFinal"]
    fast, final = stack["retrieveOptions"]["singleFast"], stack["retrieveOptions"]["singleFinal"]
    assert (fast["rangeIndex"], fast["chunkSize"], final["rangeIndex"]) == (0, 65536, -1)
    accept = parse_qs(fast["urlArguments"])["accept"][0]
    assert final["urlArguments"] == fast["urlArguments"]
    assert [(choice.syntax, choice.single_part) for choice in frame_choices(accept)] == [
        ("1.2.840.10008.1.2.4.202", True), ("*", False)]


def test_the_configuration_comes_with_the_preview_label(client):
    text = client.get("/viewer/app-config.js").get_data(as_text=True)
    assert 'addEventListener("CORNERSTONE_IMAGE_RENDERED"' in text
    assert "data-pacs-preview" in text


def test_every_viewer_answer_is_cross_origin_isolated(client, installed):
    for url in ("/viewer/", "/viewer/app-config.js", f"/viewer/{app_bundle(installed)}"):
        response = client.get(url)
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def test_a_hashed_bundle_is_immutable_and_sent_gzipped_to_a_browser(client, installed):
    name = app_bundle(installed)
    response = client.get(f"/viewer/{name}", headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.content_type.startswith("text/javascript")
    assert gzip.decompress(response.data) == (installed / name).read_bytes()
    plain = client.get(f"/viewer/{name}")
    assert "Content-Encoding" not in plain.headers
    assert plain.data == (installed / name).read_bytes()


def test_a_route_of_the_viewer_gets_its_page(client):
    response = client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert response.status_code == 200
    assert 'window.PUBLIC_URL="/viewer/"' in response.get_data(as_text=True)


@pytest.mark.parametrize("path", [
    "/viewer/missing.bundle.js", "/viewer/%2e%2e/%2e%2e/pyproject.toml",
    "/viewer/..%2f..%2fpyproject.toml", "/viewer/index.html.gz"])
def test_a_file_outside_the_viewer_or_missing_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json["error"]


def test_without_the_viewer_installed_the_answer_says_how_to_install_it(tmp_path):
    from pacs.config import Settings

    settings = Settings.load(environ={}, data_dir=tmp_path / "var",
                             viewer_dir=tmp_path / "no-viewer")
    response = signed_in(create_app(settings)).get("/viewer/")
    assert response.status_code == 503
    assert "pacs viewer install" in response.json["error"]


def test_a_site_with_its_own_viewer_is_sent_there(tmp_path):
    from pacs.config import Settings

    settings = Settings.load(environ={}, data_dir=tmp_path / "var",
                             viewer_url="https://viewer.benhvien.vn/")
    response = signed_in(create_app(settings)).get("/viewer/viewer?StudyInstanceUIDs=1.2")
    assert response.status_code == 302
    assert response.headers["Location"] == "https://viewer.benhvien.vn/viewer?StudyInstanceUIDs=1.2"


def test_the_landing_page_names_the_archive_and_counts_what_it_holds(services, tmp_path):
    for path in sorted(SAMPLES.rglob("*.dcm")):
        assert services.ingest(path.read_bytes(), Origin("import", "test")).ok
    settings = replace(services.settings, archive_name="Bệnh viện Lào Cai", viewer_dir=VIEWER_DIR)
    page = signed_in(create_app(settings, services)).get("/").get_data(as_text=True)
    assert "Bệnh viện Lào Cai" in page
    assert '<dd id="studies">3</dd>' in page
    assert '<dd id="instances">33</dd>' in page
    assert 'href="/viewer/"' in page or "pacs viewer install" in page
    assert "Nguyễn" not in page  # counts only: nothing that names a patient
