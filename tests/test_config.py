"""Settings: defaults are the embedded setup; bad values fail at start naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.config import Settings, SettingsError


def test_defaults_are_the_embedded_setup():
    settings = Settings.load(environ={})
    assert settings.object_store == "filesystem"
    assert settings.data_dir == Path("var")
    assert settings.index_url.startswith("sqlite:///") and settings.index_url.endswith(
        "var/index.sqlite"
    )
    assert settings.objects_path == Path("var/objects")


def test_environment_variables_set_fields():
    settings = Settings.load(
        environ={"PACS_DATA_DIR": "/srv/pacs", "PACS_AET": "HANOI_PACS", "PACS_DICOM_PORT": "104",
                 "PACS_S3_SECURE": "yes"}
    )
    assert settings.data_dir == Path("/srv/pacs")
    assert settings.aet == "HANOI_PACS"
    assert settings.dicom_port == 104
    assert settings.s3_secure is True


def test_toml_file_is_read_and_environment_wins(tmp_path):
    config = tmp_path / "pacs.toml"
    config.write_text('aet = "FROM_TOML"\ndicom_port = 11200\n')
    settings = Settings.load(environ={"PACS_CONFIG": str(config), "PACS_DICOM_PORT": "11300"})
    assert settings.aet == "FROM_TOML"
    assert settings.dicom_port == 11300


def test_command_line_overrides_win_over_environment():
    settings = Settings.load(environ={"PACS_AET": "ENV"}, aet="CLI", dicom_port=None)
    assert settings.aet == "CLI"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PACS_DICOM_PORT": "eleven"}, "dicom_port"),
        ({"PACS_DICOM_PORT": "70000"}, "dicom_port"),
        ({"PACS_AET": "A_TITLE_LONGER_THAN_16"}, "aet"),
        ({"PACS_AET": "BAD\\AE"}, "aet"),
        ({"PACS_OBJECT_STORE": "tape"}, "object_store"),
        ({"PACS_OBJECT_STORE": "s3"}, "s3_endpoint"),
        ({"PACS_DATABASE_URL": "mysql://db/pacs"}, "database_url"),
        ({"PACS_MAX_ASSOCIATIONS": "0"}, "max_associations"),
        ({"PACS_S3_SECURE": "maybe"}, "s3_secure"),
        ({"PACS_LOG_LEVEL": "LOUD"}, "log_level"),
    ],
)
def test_invalid_setting_fails_naming_it(environ, named):
    with pytest.raises(SettingsError, match=named):
        Settings.load(environ=environ)


def test_secret_in_toml_file_is_refused(tmp_path):
    config = tmp_path / "pacs.toml"
    config.write_text('s3_secret_key = "hunter2"\n')
    with pytest.raises(SettingsError, match=r"s3_secret_key.*environment"):
        Settings.load(environ={}, toml_path=config)


def test_unknown_key_in_toml_file_is_refused(tmp_path):
    config = tmp_path / "pacs.toml"
    config.write_text('dicom_prot = 104\n')
    with pytest.raises(SettingsError, match="dicom_prot"):
        Settings.load(environ={}, toml_path=config)


def test_describe_masks_secrets():
    settings = Settings.load(
        environ={"PACS_S3_SECRET_KEY": "hunter2",
                 "PACS_DATABASE_URL": "postgresql+psycopg://pacs:pw@db/pacs"}
    )
    described = settings.describe()
    assert "hunter2" not in str(described)
    assert "pw@" not in described["index_url"]


def test_describe_masks_the_database_password():
    settings = Settings.load(
        environ={"PACS_DATABASE_URL": "postgresql+psycopg://pacs:hunter2@db/pacs"}
    )
    described = settings.describe()
    assert "hunter2" not in described["database_url"]
    assert "hunter2" not in described["index_url"]
