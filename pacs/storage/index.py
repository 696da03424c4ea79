"""The SQL index: what is stored, where, and the attributes queries match on.

Adding an instance is atomic (:meth:`Index.add_instance`), and callers that arrive together
share a transaction: *group commit*. While one caller commits (an fsync on SQLite, a round
trip and a WAL flush on PostgreSQL), the others queue; the next of them to run writes the whole
queue in one transaction. Each caller still returns only after the transaction holding its
instance has committed. If a shared transaction fails, its instances are written again one by
one, so one bad instance cannot fail its neighbours.

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
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pacs.errors import IndexConflict
from pacs.storage.schema import instances, patients, sequence_items, series, studies
from pacs.storage.sql import Database

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


@dataclass
class _Pending:
    """One caller's record waiting for a group commit, and then its outcome."""

    record: InstanceRecord
    done: bool = False
    added: bool = False
    error: BaseException | None = field(default=None, repr=False)


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

MAX_GROUP = 64  # instances per shared transaction; bounds how long the write lock is held
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


class Index:
    """Patients, studies, series and instances in SQL (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = sqlite.insert if db.is_sqlite else postgresql.insert
        # Statements of the hot path, built once so each call only binds parameters.
        study_query = select(studies).where(studies.c.study_uid == bindparam("uid"))
        self._select_study_locked = (
            study_query if db.is_sqlite else study_query.with_for_update()
        )
        self._select_patient_by_pk = select(patients).where(patients.c.pk == bindparam("pk"))
        self._insert_instance = self._insert(instances).on_conflict_do_nothing(
            index_elements=["sop_instance_uid"]
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
        self._group = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False

    # -- writing --------------------------------------------------------------------------

    def add_instance(self, record: InstanceRecord) -> bool:
        """Index one instance; return once the transaction holding it has committed.

        Returns
        -------
        bool
            True if the instance was added, False if its SOP Instance UID was already indexed
            (the first copy is kept).

        Raises
        ------
        IndexUnavailable, StorageFull
            If the database fails; nothing of this instance is then indexed.
        """
        pending = _Pending(record)
        with self._group:
            self._queue.append(pending)
        while True:
            with self._group:
                while self._committing and not pending.done:
                    self._group.wait()
                if pending.done:
                    break
                # Nobody is committing: lead, oldest first (this caller's own record may
                # need more than one round when more than MAX_GROUP are queued).
                batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                self._committing = True
            try:
                self._commit_group(batch)
            finally:
                with self._group:
                    self._committing = False
                    self._group.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.added

    def _commit_group(self, batch: Sequence[_Pending]) -> None:
        """Write ``batch`` in one transaction; on failure, write each alone."""
        # One order for every writer (by study, the first row each instance locks) keeps
        # concurrent transactions from locking the same rows in opposite orders.
        batch = sorted(batch, key=lambda pending: pending.record.study["study_uid"])
        if len(batch) > 1:
            try:
                with self.db.writing() as conn:
                    added = [self._add(conn, pending.record) for pending in batch]
            except Exception:
                log.debug("group commit of %d instances failed; retrying one by one", len(batch))
            else:
                for pending, was_added in zip(batch, added, strict=True):
                    pending.added, pending.done = was_added, True
                return
        for pending in batch:
            try:
                pending.added = self._add_alone(pending.record)
            except Exception as exc:  # handed to the caller that owns this record
                pending.error = exc
            pending.done = True

    def _add_alone(self, record: InstanceRecord) -> bool:
        """One instance in its own transaction, retried when PostgreSQL breaks a deadlock."""
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with self.db.writing() as conn:
                    return self._add(conn, record)
            except IndexConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                log.debug("index write conflict, attempt %d; retrying", attempt)
        raise AssertionError("unreachable")

    def _add(self, conn: Connection, record: InstanceRecord) -> bool:
        now = datetime.now(UTC)
        sop_uid = record.instance["sop_instance_uid"]
        study_uid = record.study["study_uid"]
        study_row = conn.execute(self._select_study_locked, {"uid": study_uid}).first()
        if study_row is None:
            patient_row = self._get_or_create(
                conn, patients, "patient_key", record.patient_key,
                {**record.patient, "patient_key": record.patient_key, "created_at": now},
            )
            study_row = self._get_or_create(
                conn, studies, "study_uid", study_uid,
                {**record.study, "patient_pk": patient_row.pk, "modalities_in_study": "",
                 "num_series": 0, "num_instances": 0, "created_at": now,
                 "updated_at": now},
            )
            if not self.db.is_sqlite:
                # Another writer may have created the study meanwhile (SQLite's single writer
                # cannot): lock it as the branch below does, so that every transaction on this
                # study queues on the same row lock, and take the patient it was filed under.
                study_row = conn.execute(self._select_study_locked, {"uid": study_uid}).one()
                patient_row = conn.execute(
                    self._select_patient_by_pk, {"pk": study_row.patient_pk}
                ).one()
        else:
            patient_row = conn.execute(
                self._select_patient_by_pk, {"pk": study_row.patient_pk}
            ).one()
            study_row = self._fill_blanks(conn, studies, study_row, record.study)
        if patient_row.patient_key != record.patient_key:
            log.warning(
                "study %s is indexed under patient key %r but instance %s names %r; "
                "the study is not re-filed", study_uid, patient_row.patient_key, sop_uid,
                record.patient_key,
            )
        else:
            self._fill_blanks(conn, patients, patient_row, record.patient)
        series_row = self._get_or_create(
            conn, series, "series_uid", record.series["series_uid"],
            {**record.series, "study_pk": study_row.pk, "num_instances": 0,
             "created_at": now},
        )
        if series_row.study_pk != study_row.pk:
            log.warning(
                "series %s belongs to another study than instance %s says; not re-filed",
                record.series["series_uid"], sop_uid,
            )
        inserted = conn.execute(
            self._insert_instance,
            {
                **record.instance,
                "series_pk": series_row.pk,
                "transfer_syntax_uid": record.transfer_syntax_uid,
                "object_key": record.object_key,
                "size": record.size,
                "sha256": record.sha256,
                "metadata_json": record.metadata_json,
                "pixel_data_offset": record.pixel_data_offset,
                "pixel_data_length": record.pixel_data_length,
                "origin": record.origin,
                "received_at": now,
            },
        )
        if inserted.rowcount == 0:
            return False  # a concurrent writer indexed the same SOP Instance UID first
        if not series_row.num_instances:  # the series' first instance, perhaps the study's
            self._add_sequence_items(conn, "STUDY", study_row.pk, record.study_sequences)
            self._add_sequence_items(conn, "SERIES", series_row.pk, record.series_sequences)
        self._count_instance(conn, series_row, now)
        return True

    @staticmethod
    def _add_sequence_items(conn: Connection, level: str, owner_pk: int,
                            rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep the sequence items of a study or series, unless it has some already.

        The first instance that has them wins, as for every other attribute; this runs under
        the study's lock, so two writers cannot both add them.
        """
        if not rows:
            return
        held = conn.execute(
            select(sequence_items.c.pk)
            .where(sequence_items.c.level == level, sequence_items.c.owner_pk == owner_pk)
            .limit(1)
        ).first()
        if held is None:
            conn.execute(insert(sequence_items),
                         [{**row, "level": level, "owner_pk": owner_pk} for row in rows])

    def _get_or_create(
        self, conn: Connection, table: Table, key_column: str, key: str,
        values: Mapping[str, Any],
    ) -> Row[Any]:
        """Get the row with ``key`` (filling its blanks from ``values``) or create it."""
        query = self._select_by_key[table.name]
        row = conn.execute(query, {"key": key}).first()
        if row is not None:
            return self._fill_blanks(conn, table, row, values)
        # ON CONFLICT: another process may create the same row between our SELECT and INSERT.
        conn.execute(
            self._insert(table).values(**values).on_conflict_do_nothing(index_elements=[key_column])
        )
        return conn.execute(query, {"key": key}).one()

    @staticmethod
    def _fill_blanks(
        conn: Connection, table: Table, row: Row[Any], values: Mapping[str, Any]
    ) -> Row[Any]:
        """Set the row's empty attributes that ``values`` has; keep every other value."""
        blanks = {
            column: value
            for column, value in values.items()
            if value is not None and getattr(row, column, value) is None
        }
        if not blanks:
            return row
        conn.execute(update(table).where(table.c.pk == row.pk).values(**blanks))
        return conn.execute(select(table).where(table.c.pk == row.pk)).one()

    def _count_instance(self, conn: Connection, series_row: Row[Any], now: datetime) -> None:
        # Recounted, not incremented, under the study's lock: a count can then never drift
        # from the rows, whatever retries and concurrent writers did (an increment once
        # drifted by one under two PostgreSQL writers). The cost is one index range scan of
        # the series (~0.1 ms for 2,000 instances).
        conn.execute(self._recount_series, {"series_pk": series_row.pk})
        conn.execute(self._recount_study, {"study_pk": series_row.study_pk, "now": now})
        if series_row.num_instances:
            return
        # The first instance of a new series: perhaps a new modality in the study.
        modalities = conn.execute(
            select(series.c.modality)
            .where(series.c.study_pk == series_row.study_pk, series.c.modality.is_not(None))
            .distinct()
        ).scalars()
        conn.execute(
            update(studies).where(studies.c.pk == series_row.study_pk)
            .values(modalities_in_study="\\".join(sorted(set(modalities))))
        )

    # -- reading --------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        """True if an instance with this SOP Instance UID is indexed."""
        with self.db.reading() as conn:
            row = conn.execute(self._select_instance_pk, {"uid": sop_instance_uid}).first()
        return row is not None

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
