"""The SQL index: what is stored, where, and the attributes queries match on.

Adding instances is atomic, and several go in one transaction (:meth:`Index.add_instances`):
the ingest path's group commit hands over every instance that arrived while the previous
commit ran, and the statements are per study and per series, not per instance. If a shared
transaction fails, its instances are written again one by one, so one bad instance cannot fail
its neighbours.

The rules for attributes that differ from what is already indexed are deliberate and the same
for every front end:

* **Identity never moves.** A study stays with the patient it was first indexed under, a series
  with its study. An instance that names another patient for an indexed study is still stored
  (the modality's bytes are kept as sent) but the index does not re-file the study; the
  mismatch is logged as a warning for the staff to reconcile. Silently moving a study between
  patients would be a clinical-safety hazard.
* **First value wins, blanks are filled.** A patient, study or series attribute keeps the value
  it was first indexed with; an attribute that was empty is filled by a later instance that has
  it. Differences are logged at debug level. A sequence attribute (ProcedureCodeSequence...)
  is kept whole, from the first instance of the study or series that has one.
* **One SOP Instance UID is one instance.** The first copy is kept; later copies are reported as
  already stored and not indexed again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Dialect, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pacs.errors import IndexConflict
from pacs.storage.schema import instances, patients, sequence_items, series, studies
from pacs.storage.sql import CompiledStatement, Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index stores for one instance, already read from its header."""

    patient_key: str
    patient: Mapping[str, Any]
    study: Mapping[str, Any]
    series: Mapping[str, Any]
    instance: Mapping[str, Any]
    transfer_syntax_uid: str
    object_key: str
    size: int
    sha256: str
    metadata_json: str
    origin: str
    pixel_data_offset: int | None = None
    pixel_data_length: int | None = None
    study_sequences: Sequence[Mapping[str, Any]] = ()
    series_sequences: Sequence[Mapping[str, Any]] = ()


#: Where an instance's bytes are, as the instance row holds it: the fields of StoredInstance
#: after its UIDs, in their order.
STORAGE_COLUMNS = (
    instances.c.transfer_syntax_uid,
    instances.c.object_key,
    instances.c.size,
    instances.c.sha256,
    instances.c.pixel_data_offset,
    instances.c.pixel_data_length,
)

CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class StoredInstance:
    """Where an indexed instance's bytes are and what they hash to."""

    sop_instance_uid: str
    sop_class_uid: str | None
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int
    sha256: str
    pixel_data_offset: int | None = None
    """Where the Pixel Data value starts in the object; None when unknown."""
    pixel_data_length: int | None = None
    """Its length; None when encapsulated or unknown."""


@dataclass(frozen=True)
class StudySummary:
    """One line of a study list."""

    study_uid: str
    patient_name: str | None
    patient_id: str | None
    study_date: str | None
    study_description: str | None
    accession_number: str | None
    modalities: str
    num_series: int
    num_instances: int


class _HotStatements:
    """The statements every indexed instance runs, compiled for the database's dialect."""

    def __init__(self, dialect: Dialect, *, study: Any, patient: Any, by_key: Mapping[str, Any],
                 instance_pk: Any, insert_instance: Any, recount_series: Any,
                 recount_study: Any) -> None:
        self.dialect = dialect
        self.instance_pk = CompiledStatement(instance_pk, dialect)
        self.study = CompiledStatement(study, dialect)
        self.patient = CompiledStatement(patient, dialect)
        self.by_key = {name: CompiledStatement(query, dialect) for name, query in by_key.items()}
        self.recount_series = CompiledStatement(recount_series, dialect)
        self.recount_study = CompiledStatement(recount_study, dialect)
        self._insert_instance = insert_instance
        self._inserts: dict[tuple[str, ...], CompiledStatement] = {}
        # Raw statements bypass SQLAlchemy's type processing: timestamps are converted here,
        # as SQLAlchemy would (SQLite keeps them as text in its own format).
        impl = instances.c.received_at.type.dialect_impl(dialect)
        self._stamp = impl.bind_processor(dialect)

    def insert_instance(self, row: Mapping[str, Any]) -> CompiledStatement:
        """The INSERT for a row with these columns (every record has the same ones)."""
        columns = tuple(row)
        compiled = self._inserts.get(columns)
        if compiled is None:
            compiled = self._inserts[columns] = CompiledStatement(self._insert_instance,
                                                          self.dialect, columns)
        return compiled

    def once(self, statement: Any, cursor: Any) -> Any:
        """Run a statement of the rare paths (a new study, blanks filled...), compiled for
        this call, with the values it carries; return the cursor."""
        return CompiledStatement(statement, self.dialect).run(cursor, {})

    def stamp(self, moment: datetime) -> Any:
        """``moment`` as the driver takes it for a timestamp column."""
        return self._stamp(moment) if self._stamp else moment


class Index:
    """Patients, studies, series and instances in SQL (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = sqlite.insert if db.is_sqlite else postgresql.insert
        # Statements of the hot path, built once so each call only binds parameters.
        study_query = select(studies).where(studies.c.study_uid == bindparam("uid"))
        self._select_study_locked = study_query.with_for_update()  # SQLite: no-op
        self._select_patient_by_pk = select(patients).where(patients.c.pk == bindparam("pk"))
        self._insert_instance = (
            self._insert(instances)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(instances.c.sop_instance_uid)
        )
        self._select_instance_pk = select(instances.c.pk).where(
            instances.c.sop_instance_uid == bindparam("uid")
        )
        # Every WADO path and rendered frame looks an instance up by its UID.
        self._select_stored_instance = (
            select(
                instances.c.sop_instance_uid,
                instances.c.sop_class_uid,
                studies.c.study_uid,
                series.c.series_uid,
                *STORAGE_COLUMNS,
            )
            .join(series, instances.c.series_pk == series.c.pk)
            .join(studies, series.c.study_pk == studies.c.pk)
            .where(instances.c.sop_instance_uid == bindparam("uid"))
        )
        self._select_stored_instance_metadata = self._select_stored_instance.add_columns(
            instances.c.metadata_json)
        self._select_by_key = {
            table.name: select(table).where(table.c[column] == bindparam("key"))
            for table, column in ((patients, "patient_key"), (studies, "study_uid"),
                                  (series, "series_uid"))
        }
        # Counts are recounted from the rows (one index range scan), not incremented.
        self._recount_series = (
            update(series).where(series.c.pk == bindparam("series_pk")).values(
                num_instances=select(func.count()).select_from(instances)
                .where(instances.c.series_pk == bindparam("series_pk")).scalar_subquery()
            )
        )
        study_instances = (
            select(func.coalesce(func.sum(series.c.num_instances), 0))
            .where(series.c.study_pk == bindparam("study_pk")).scalar_subquery()
        )
        study_series = (
            select(func.count()).select_from(series)
            .where(series.c.study_pk == bindparam("study_pk"), series.c.num_instances > 0)
            .scalar_subquery()
        )
        self._recount_study = (
            update(studies).where(studies.c.pk == bindparam("study_pk")).values(
                num_instances=study_instances, num_series=study_series,
                updated_at=bindparam("now"),
            )
        )
        self._sql = _HotStatements(
            db.engine.dialect, study=self._select_study_locked,
            patient=self._select_patient_by_pk, by_key=self._select_by_key,
            instance_pk=self._select_instance_pk,
            insert_instance=self._insert_instance, recount_series=self._recount_series,
            recount_study=self._recount_study,
        )

    # -- writing --------------------------------------------------------------------------

    def add_instances(self, records: Sequence[InstanceRecord]) -> list[bool | Exception]:
        """Index several instances in one transaction; if it fails, each in its own.

        One bad instance therefore cannot keep its neighbours out of the index.

        Returns
        -------
        list
            For each record, in order: True if added, False if its SOP Instance UID was
            already indexed (the first copy is kept, also within ``records``), or the
            exception that kept it out (:class:`IndexUnavailable`, :class:`StorageFull`...).
        """
        if len(records) > 1:
            try:
                with self.db.writing_cursor() as cursor:
                    return list(self._write(cursor, records))
            except Exception:
                log.debug("group of %d instances failed; writing them one by one", len(records))
        outcomes: list[bool | Exception] = []
        for record in records:
            try:
                outcomes.append(self._add_alone(record))
            except Exception as exc:  # handed to the caller that owns this record
                outcomes.append(exc)
        return outcomes

    def indexed_instances(self, sop_instance_uids: Sequence[str]) -> set[str]:
        """The SOP Instance UIDs among ``sop_instance_uids`` that are indexed already."""
        indexed = set()
        with self.db.querying() as cursor:
            for uid in sop_instance_uids:
                if self._sql.instance_pk.first(cursor, {"uid": uid}) is not None:
                    indexed.add(uid)
        return indexed

    def _add_alone(self, record: InstanceRecord) -> bool:
        """One instance in its own transaction, retried when PostgreSQL breaks a deadlock."""
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with self.db.writing_cursor() as cursor:
                    return self._write(cursor, [record])[0]
            except IndexConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                log.debug("index write conflict, attempt %d; retrying", attempt)
        raise AssertionError("unreachable")

    def _write(self, cursor: Any, records: Sequence[InstanceRecord]) -> list[bool]:
        """Index ``records`` in the open transaction; True for each one added.

        The statements are per study and per series, not per instance: a group of slices of
        one series costs one study lookup, one series lookup, one INSERT per instance and
        one recount, whatever its size.
        """
        now = self._sql.stamp(datetime.now(UTC))
        by_study: dict[str, dict[str, list[int]]] = {}
        for position, record in enumerate(records):
            by_study.setdefault(record.study["study_uid"], {}).setdefault(
                record.series["series_uid"], []).append(position)
        added = [False] * len(records)
        # One order for every writer (by study, the first row each transaction locks) keeps
        # concurrent transactions from locking the same rows in opposite orders.
        for study_uid in sorted(by_study):
            in_study = [records[i] for positions in by_study[study_uid].values()
                        for i in positions]
            study_row = self._study_row(cursor, study_uid, in_study, now)
            new_series = False
            for series_uid, positions in by_study[study_uid].items():
                in_series = [records[i] for i in positions]
                series_row = self._get_or_create(
                    cursor, series, "series_uid", series_uid,
                    {**_first_values(record.series for record in in_series),
                     "study_pk": study_row["pk"], "num_instances": 0, "created_at": now},
                )
                if series_row["study_pk"] != study_row["pk"]:
                    log.warning("series %s belongs to another study than instance %s says; "
                                "not re-filed", series_uid,
                                in_series[0].instance["sop_instance_uid"])
                inserted = self._insert_instances(cursor, series_row["pk"], in_series, now)
                first = True
                for position in positions:
                    sop_uid = records[position].instance["sop_instance_uid"]
                    if sop_uid in inserted:
                        inserted.discard(sop_uid)  # a second copy in the group is not added
                        added[position] = True
                        if first and not series_row["num_instances"]:
                            # The series' first instance (perhaps the study's) brings the
                            # sequence items, as it brings every other first value.
                            self._add_sequence_items(cursor, "STUDY", study_row["pk"],
                                                     records[position].study_sequences)
                            self._add_sequence_items(cursor, "SERIES", series_row["pk"],
                                                     records[position].series_sequences)
                        first = False
                if not first:
                    # Recounted from the rows, not incremented, under the study's lock: a
                    # count can then never drift, whatever retries and concurrent writers
                    # did (an increment once drifted by one under two PostgreSQL writers).
                    self._sql.recount_series.run(cursor, {"series_pk": series_row["pk"]})
                    new_series = new_series or not series_row["num_instances"]
            if any(added[i] for positions in by_study[study_uid].values() for i in positions):
                self._sql.recount_study.run(cursor, {"study_pk": study_row["pk"], "now": now})
            if new_series:
                self._update_modalities(cursor, study_row["pk"])
        return added

    def _study_row(self, cursor: Any, study_uid: str, records: Sequence[InstanceRecord],
                   now: Any) -> dict[str, Any]:
        """The study's row, locked (created with its patient if new, blanks filled)."""
        first = records[0]
        study_row = self._sql.study.first(cursor, {"uid": study_uid})
        if study_row is None:
            patient_row = self._get_or_create(
                cursor, patients, "patient_key", first.patient_key,
                {**_first_values(r.patient for r in records
                                 if r.patient_key == first.patient_key),
                 "patient_key": first.patient_key, "created_at": now},
            )
            study_row = self._get_or_create(
                cursor, studies, "study_uid", study_uid,
                {**_first_values(record.study for record in records),
                 "patient_pk": patient_row["pk"], "modalities_in_study": "",
                 "num_series": 0, "num_instances": 0, "created_at": now,
                 "updated_at": now},
            )
            if not self.db.is_sqlite:
                # Another writer may have created the study meanwhile (SQLite's single writer
                # cannot): lock it as the branch below does, so that every transaction on this
                # study queues on the same row lock, and take the patient it was filed under.
                study_row = self._sql.study.one(cursor, {"uid": study_uid})
                patient_row = self._sql.patient.one(cursor, {"pk": study_row["patient_pk"]})
        else:
            patient_row = self._sql.patient.one(cursor, {"pk": study_row["patient_pk"]})
            study_row = self._fill_blanks(cursor, studies, study_row,
                                          _first_values(record.study for record in records))
        patient_key = patient_row["patient_key"]
        for record in records:
            if record.patient_key != patient_key:
                log.warning(
                    "study %s is indexed under patient key %r but instance %s names %r; "
                    "the study is not re-filed", study_uid, patient_key,
                    record.instance["sop_instance_uid"], record.patient_key,
                )
        self._fill_blanks(cursor, patients, patient_row,
                          _first_values(r.patient for r in records if r.patient_key == patient_key))
        return study_row

    def _insert_instances(self, cursor: Any, series_pk: int,
                          records: Sequence[InstanceRecord], now: Any) -> set[str]:
        """Insert the instance rows; return the SOP Instance UIDs actually inserted (a UID
        already indexed, by anyone, is left as it is: the first copy wins)."""
        inserted: set[str] = set()
        for record in records:
            row = {
                **record.instance,
                "series_pk": series_pk,
                "transfer_syntax_uid": record.transfer_syntax_uid,
                "object_key": record.object_key,
                "size": record.size,
                "sha256": record.sha256,
                "metadata_json": record.metadata_json,
                "pixel_data_offset": record.pixel_data_offset,
                "pixel_data_length": record.pixel_data_length,
                "origin": record.origin,
                "received_at": now,
            }
            inserted.update(uid for (uid,) in self._sql.insert_instance(row).run(cursor, row))
        return inserted

    def _update_modalities(self, cursor: Any, study_pk: int) -> None:
        """A new series in the study: perhaps a new modality in ModalitiesInStudy."""
        query = (select(series.c.modality)
                 .where(series.c.study_pk == study_pk, series.c.modality.is_not(None))
                 .distinct())
        modalities = {modality for (modality,) in self._sql.once(query, cursor).fetchall()}
        self._sql.once(update(studies).where(studies.c.pk == study_pk)
                       .values(modalities_in_study="\\".join(sorted(modalities))), cursor)

    def _add_sequence_items(self, cursor: Any, level: str, owner_pk: int,
                            rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep the sequence items of a study or series, unless it has some already.

        The first instance that has them wins, as for every other attribute; this runs under
        the study's lock, so two writers cannot both add them.
        """
        if not rows:
            return
        held = self._sql.once(
            select(sequence_items.c.pk)
            .where(sequence_items.c.level == level, sequence_items.c.owner_pk == owner_pk)
            .limit(1), cursor).fetchall()
        if not held:
            for row in rows:
                self._sql.once(insert(sequence_items).values(
                    **row, level=level, owner_pk=owner_pk), cursor)

    def _get_or_create(
        self, cursor: Any, table: Table, key_column: str, key: str, values: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Get the row with ``key`` (filling its blanks from ``values``) or create it."""
        query = self._sql.by_key[table.name]
        row = query.first(cursor, {"key": key})
        if row is not None:
            return self._fill_blanks(cursor, table, row, values)
        # ON CONFLICT: another process may create the same row between our SELECT and INSERT.
        self._sql.once(
            self._insert(table).values(**values).on_conflict_do_nothing(index_elements=[key_column]),
            cursor)
        return query.one(cursor, {"key": key})

    def _fill_blanks(
        self, cursor: Any, table: Table, row: dict[str, Any], values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Set the row's empty attributes that ``values`` has; keep every other value."""
        blanks = {
            column: value
            for column, value in values.items()
            if value is not None and column in row and row[column] is None
        }
        if not blanks:
            return row
        self._sql.once(update(table).where(table.c.pk == row["pk"]).values(**blanks), cursor)
        return {**row, **blanks}

    # -- reading --------------------------------------------------------------------------

    def find_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """The stored instance with this SOP Instance UID, or None."""
        with self.db.reading() as conn:
            row = conn.execute(self._select_stored_instance, {"uid": sop_instance_uid}).first()
        return StoredInstance(**row._mapping) if row else None

    def find_instance_metadata(self, sop_instance_uid: str) -> tuple[StoredInstance, str] | None:
        """The stored instance with this SOP Instance UID and its stored DICOM JSON, or None."""
        with self.db.reading() as conn:
            row = conn.execute(self._select_stored_instance_metadata,
                               {"uid": sop_instance_uid}).first()
        if row is None:
            return None
        *stored, metadata = row
        return StoredInstance(*stored), metadata

    def list_studies(self, limit: int = 100) -> list[StudySummary]:
        """The most recently updated studies, newest first."""
        query = (
            select(
                studies.c.study_uid,
                patients.c.patient_name,
                patients.c.patient_id,
                studies.c.study_date,
                studies.c.study_description,
                studies.c.accession_number,
                studies.c.modalities_in_study.label("modalities"),
                studies.c.num_series,
                studies.c.num_instances,
            )
            .join(patients, studies.c.patient_pk == patients.c.pk)
            .order_by(studies.c.updated_at.desc(), studies.c.pk.desc())
            .limit(limit)
        )
        with self.db.reading() as conn:
            return [StudySummary(**row._mapping) for row in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """How many patients, studies, series and instances are indexed."""
        with self.db.reading() as conn:
            return {
                table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (patients, studies, series, instances)
            }

    def study_owner(self, study_uid: str) -> tuple[str | None, str | None] | None:
        """The patient ID and institution name of a study, or None when it is not indexed
        (for the audit trail and for requesters limited to some institutions)."""
        with self.db.reading() as conn:
            row = conn.execute(
                select(patients.c.patient_id, studies.c.institution_name)
                .join(patients, patients.c.pk == studies.c.patient_pk)
                .where(studies.c.study_uid == study_uid)).first()
        return None if row is None else (row.patient_id, row.institution_name)

    def totals(self) -> tuple[int, int, int]:
        """Studies, instances and bytes archived (the last one a scan of every instance)."""
        with self.db.reading() as conn:
            return (
                conn.execute(select(func.count()).select_from(studies)).scalar_one(),
                conn.execute(select(func.coalesce(func.sum(studies.c.num_instances), 0)))
                .scalar_one(),
                conn.execute(select(func.coalesce(func.sum(instances.c.size), 0))).scalar_one(),
            )

    def all_object_keys(self) -> set[str]:
        """Every object key the index refers to (for the sweep of unreferenced objects)."""
        with self.db.reading() as conn:
            return set(conn.execute(select(instances.c.object_key)).scalars())


def _first_values(levels: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One level's attributes over several instances: for each, the first value that is not
    None, in arrival order (the rule "first value wins, blanks are filled")."""
    merged: dict[str, Any] = {}
    for values in levels:
        for column, value in values.items():
            if merged.get(column) is None:
                merged[column] = value
    return merged
