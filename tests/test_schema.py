"""The index schema: created on first start, completed on later ones."""

from __future__ import annotations

from sqlalchemy import inspect, text

from pacs.services import open_services


def test_an_index_added_since_the_database_was_made_is_created_at_start(backend):
    services = open_services(backend)
    with services.db.writing() as conn:
        conn.execute(text("DROP INDEX ix_series_modality_study_pk"))
    services.close()

    reopened = open_services(backend)
    try:
        indexes = {index["name"] for index in inspect(reopened.db.engine).get_indexes("series")}
    finally:
        reopened.close()
    assert "ix_series_modality_study_pk" in indexes


def test_a_column_added_since_the_database_was_made_is_added_at_start(backend):
    services = open_services(backend)
    with services.db.writing() as conn:
        conn.execute(text("ALTER TABLE instances DROP COLUMN pixel_data_length"))
    services.close()

    reopened = open_services(backend)
    try:
        columns = {column["name"] for column in inspect(reopened.db.engine).get_columns(
            "instances")}
    finally:
        reopened.close()
    assert "pixel_data_length" in columns
