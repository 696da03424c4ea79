"""The index schema: patients, studies, series, instances and sequence items; and beside
them the accounts, sessions, share links and audit trail of :mod:`pacs.accounts`,
:mod:`pacs.sharing` and :mod:`pacs.audit`.

One column per attribute listed in :mod:`pacs.attributes`, plus keys, counts and bookkeeping.
The same SQLAlchemy Core tables serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from pacs.attributes import (
    INSTANCE_ATTRIBUTES,
    MAX_ITEM_VALUE,
    NAME_COLUMNS,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    Attribute,
)

metadata = MetaData()

# A primary key that is BIGINT on PostgreSQL and the rowid alias on SQLite.
_Key = BigInteger().with_variant(Integer(), "sqlite")


def _columns(attributes: tuple[Attribute, ...], *, skip: tuple[str, ...] = ()) -> list[Column]:
    columns: list[Column] = []
    for attribute in attributes:
        if attribute.column in skip:
            continue
        columns.append(Column(attribute.column, Integer if attribute.integer else String))
        if attribute.column in NAME_COLUMNS:
            columns.append(Column(attribute.column + "_norm", String))
    return columns


patients = Table(
    "patients",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    # Identity of a patient: issuer + ID; instances without a PatientID get one anonymous
    # patient per study (see pacs.ingest), never a shared "empty ID" patient.
    Column("patient_key", String, nullable=False, unique=True),
    *_columns(PATIENT_ATTRIBUTES),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_patients_patient_id", "patient_id"),
    Index("ix_patients_patient_name", "patient_name"),
    Index("ix_patients_patient_name_norm", "patient_name_norm"),
    # Wild-card queries (pacs.query) use LIKE 'prefix%' on PostgreSQL, which a plain btree
    # serves only under the C collation; text_pattern_ops serves it under any. SQLite's GLOB
    # uses the plain indexes, so these exist on PostgreSQL only.
    Index(
        "ix_patients_patient_id_pattern", "patient_id",
        postgresql_ops={"patient_id": "text_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
    Index(
        "ix_patients_patient_name_pattern", "patient_name",
        postgresql_ops={"patient_name": "text_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
    Index(
        "ix_patients_patient_name_norm_pattern", "patient_name_norm",
        postgresql_ops={"patient_name_norm": "text_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
)

studies = Table(
    "studies",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("patient_pk", _Key, ForeignKey("patients.pk"), nullable=False),
    *_columns(STUDY_ATTRIBUTES, skip=("study_uid",)),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("modalities_in_study", String, nullable=False, default=""),
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_studies_patient_pk", "patient_pk"),
    Index("ix_studies_study_date", "study_date"),
    Index("ix_studies_accession_number", "accession_number"),
    Index("ix_studies_updated_at", "updated_at"),
    Index(
        "ix_studies_accession_number_pattern", "accession_number",
        postgresql_ops={"accession_number": "text_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
)

series = Table(
    "series",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("study_pk", _Key, ForeignKey("studies.pk"), nullable=False),
    *_columns(SERIES_ATTRIBUTES, skip=("series_uid",)),
    Column("series_uid", String(64), nullable=False, unique=True),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_series_study_pk", "study_pk"),
    # With study_pk, ModalitiesInStudy's "studies having a series of this modality" is read
    # from the index alone.
    Index("ix_series_modality_study_pk", "modality", "study_pk"),
)

instances = Table(
    "instances",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("series_pk", _Key, ForeignKey("series.pk"), nullable=False),
    *_columns(INSTANCE_ATTRIBUTES, skip=("sop_instance_uid",)),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("object_key", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    # The header as DICOM JSON (PS3.18 F.2) without bulk data, for fast metadata responses.
    Column("metadata_json", Text, nullable=False),
    # Where the Pixel Data value lies in the stored file (pacs.header), so that a frame is
    # read without parsing the file; NULL when unknown (deflated, or indexed before).
    Column("pixel_data_offset", BigInteger, nullable=True),
    Column("pixel_data_length", BigInteger, nullable=True),
    Column("origin", String, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_instances_series_pk", "series_pk"),
    Index("ix_instances_object_key", "object_key"),
)

# The items of the sequence attributes of pacs.attributes.STUDY_SEQUENCES / SERIES_SEQUENCES:
# one row per attribute value of an item, owned by a study or a series row (``level``).
sequence_items = Table(
    "sequence_items",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("level", String(8), nullable=False),
    Column("owner_pk", _Key, nullable=False),
    Column("sequence", String(64), nullable=False),
    Column("item", Integer, nullable=False),
    Column("keyword", String(64), nullable=False),
    Column("value", String(MAX_ITEM_VALUE), nullable=False),
    Index("ix_sequence_items_match", "sequence", "keyword", "value"),
    Index("ix_sequence_items_owner", "level", "owner_pk", "sequence"),
)


# -- who may see what (pacs.accounts, pacs.sharing) and what they did (pacs.audit) ----------

users = Table(
    "users",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String, nullable=False),  # argon2id, never the password
    Column("role", String(16), nullable=False),
    # For a clinician limited to some institutions: their names, one per line; NULL = all.
    Column("institutions", Text, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# API tokens and browser sessions: only the SHA-256 of the secret is kept (the secrets are
# 256 random bits, so a fast hash is enough; a stolen table opens nothing).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("user_pk", _Key, ForeignKey("users.pk"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("label", String, nullable=False, default=""),
    Column("scopes", String, nullable=False),  # space-separated: read write admin
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_tokens_user_pk", "user_pk"),
)

share_links = Table(
    "share_links",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=True),  # NULL: the whole study
    Column("created_by", _Key, ForeignKey("users.pk"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("pin_hash", String, nullable=True),  # argon2id of the PIN, when there is one
    Column("deidentify", Boolean, nullable=False, default=False),
    # The key of the link's de-identification (UID remapping, date shift), hex.
    Column("deid_secret", String(64), nullable=False),
    Column("note", String, nullable=False, default=""),
)

sessions = Table(
    "sessions",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # A signed-in user's session, or the session a share link opened (after its PIN).
    Column("user_pk", _Key, ForeignKey("users.pk"), nullable=True),
    Column("share_pk", _Key, ForeignKey("share_links.pk"), nullable=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_login_failures_username", "username", "at"),
    Index("ix_login_failures_address", "address", "at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("pk", _Key, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(16), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor", String, nullable=False),
    Column("address", String(64), nullable=False),
    Column("protocol", String(8), nullable=False),
    Column("patient_id", String, nullable=True),
    Column("study_uid", String(64), nullable=True),
    Column("count", Integer, nullable=True),
    Column("detail", Text, nullable=False),
    Index("ix_audit_events_at", "at"),
    Index("ix_audit_events_actor", "actor", "at"),
    Index("ix_audit_events_patient_id", "patient_id", "at"),
    Index("ix_audit_events_study_uid", "study_uid", "at"),
)
