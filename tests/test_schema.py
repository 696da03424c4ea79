"""The index schema: created on first start, completed on later ones."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import inspect, text

from pacs.services import open_services


@contextmanager
def inspected_after_restart(backend, change: str):
    """Make the database older with ``change``, start again, and inspect what start made."""
    services = open_services(backend)
    with services.db.writing() as conn:
        conn.execute(text(change))
    services.close()
    reopened = open_services(backend)
    try:
        yield inspect(reopened.db.engine)
    finally:
        reopened.close()


def test_an_index_added_since_the_database_was_made_is_created_at_start(backend):
    with inspected_after_restart(backend, "DROP INDEX ix_series_modality_study_pk") as found:
        indexes = {index["name"] for index in found.get_indexes("series")}
    assert "ix_series_modality_study_pk" in indexes


def test_a_column_added_since_the_database_was_made_is_added_at_start(backend):
    with inspected_after_restart(
            backend, "ALTER TABLE instances DROP COLUMN pixel_data_length") as found:
        columns = {column["name"] for column in found.get_columns("instances")}
    assert "pixel_data_length" in columns
