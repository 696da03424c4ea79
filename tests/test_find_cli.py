"""``pacs find``: C-FIND matching on the local index, printed as a table for IT staff."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("find") / "var"
    assert main(["import", "--quiet", "--data-dir", str(folder), str(SAMPLES)]) == 0
    return folder


def find(data_dir, capsys, *args):
    capsys.readouterr()
    code = main(["find", "--data-dir", str(data_dir), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fuzzy_find_matches_an_accentless_name_and_prints_it_in_utf8(data_dir, capsys):
    code, out, _ = find(data_dir, capsys, "-k", "PatientName=nguyen*", "--fuzzy")
    assert code == 0
    assert "Nguyễn^Văn An" in out
    assert "(no matches)" not in out


def test_without_fuzzy_an_accentless_name_does_not_match(data_dir, capsys):
    code, out, _ = find(data_dir, capsys, "-k", "PatientName=nguyen*")
    assert code == 0
    assert "(no matches)" in out


def test_bare_key_adds_a_column(data_dir, capsys):
    code, out, _ = find(data_dir, capsys, "--level", "SERIES", "-k", "Modality=CT",
                        "-k", "BodyPartExamined")
    assert code == 0
    header, *rows = out.splitlines()
    assert "BodyPartExamined" in header.split()
    assert rows and all(" CT " in f" {row} " for row in rows)


def test_date_range_selects_studies(data_dir, capsys):
    _, everything, _ = find(data_dir, capsys)
    _, none, _ = find(data_dir, capsys, "-k", "StudyDate=19000101-19000102")
    assert len(everything.splitlines()) > 1
    assert "(no matches)" in none


def test_malformed_range_fails_with_the_reason(data_dir, capsys):
    code, _, err = find(data_dir, capsys, "-k", "StudyDate=2026-01-01-2026")
    assert code == 2
    assert "StudyDate" in err and "range" in err


def test_unknown_keyword_fails_naming_it(data_dir, capsys):
    code, _, err = find(data_dir, capsys, "-k", "Bogus=1")
    assert code == 2
    assert "'Bogus' is not a DICOM keyword" in err


def test_limit_caps_the_rows_and_says_so(data_dir, capsys):
    code, out, _ = find(data_dir, capsys, "--level", "IMAGE", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 + 2 + 1
    assert "only the first 2 matches" in lines[-1]
