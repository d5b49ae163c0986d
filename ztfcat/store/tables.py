"""The catalog's tables: the contract for ad-hoc SQL, the ``sqlite3`` shell and the Python API.

Column names keep ZTF's spelling (``candid``, ``objectId``, ``jd``, ``magpsf``) so queries read like the
ZTF schema documentation.  Candidate, prv_candidate and fp_hist columns are built from
:mod:`ztfcat.store.fields`, the union over every schema version, never from the first file ingested.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.types import TypeEngine

from .fields import FIELDS

#: The Alembic revision these tables describe; a catalog stamped with another one must be upgraded.
HEAD_REVISION = "0004"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_AVRO_TYPES: dict[str, type[TypeEngine] | TypeEngine] = {
    "double": Float(precision=53),
    # Avro floats are stored as doubles, which hold every float32 exactly: a PostgreSQL ``real`` would
    # read back as its shortest decimal (17.48509), not the packet's value (17.485090255737305).
    "float": Float(precision=53),
    "int": Integer,
    "long": BigInteger,
    "string": Text,
    "boolean": Boolean,
}


def _field_columns(part: str, skip: tuple[str, ...] = ()) -> list[Column]:
    """One nullable column per ZTF field of ``part``, typed as Avro declares it (``info["avro"]`` keeps
    the Avro type itself: exports give an Avro ``float`` as float32 though the database holds a double)."""
    return [
        Column(
            name, _AVRO_TYPES[avro_type], nullable=True, comment=doc[:200] or None, info={"avro": avro_type}
        )
        for name, (avro_type, _nullable, doc) in FIELDS[part].items()
        if name not in skip
    ]


#: Candidate fields that are columns of ``alerts`` (``candid`` is the table's own key).
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(n for n in FIELDS["candidate"] if n != "candid")
PRV_COLUMNS: tuple[str, ...] = tuple(FIELDS["prv_candidate"])
FP_COLUMNS: tuple[str, ...] = tuple(FIELDS["fp_hist"])

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True, comment="tarball file name"),
    Column("night", Date, comment="UTC night the tarball is named after"),
    Column("size", BigInteger, comment="bytes of the tarball read"),
    Column("md5", String(32), comment="hex MD5 of the tarball bytes read"),
    Column("status", String(16), nullable=False, comment="ingesting, history, complete or failed"),
    Column("n_alerts", Integer, nullable=False, server_default=text("0")),
    Column("n_errors", Integer, nullable=False, server_default=text("0")),
    Column("n_duplicates", Integer, nullable=False, server_default=text("0")),
    Column("error", Text, comment="why the release failed"),
    Column("layout", String(8), nullable=False, server_default=text("'files'"), comment="files or pack"),
    Column("source", Text, comment="where the bytes came from"),
    Column("unknown_fields", Text, comment="JSON list of fields new to this ztfcat, kept in the packets"),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

alerts = Table(
    "alerts",
    metadata,
    Column("candid", BigInteger, primary_key=True, autoincrement=False),
    Column("objectId", String(32), nullable=False),
    Column("schemavsn", String(16), nullable=False),
    Column(
        "release_id",
        Integer,
        ForeignKey("releases.id", ondelete="CASCADE"),
        nullable=False,
        comment="the holding release whose copy of the packet this row reads (the first by name)",
    ),
    Column("night", Date, nullable=False, comment="UT date of jd: the night observed"),
    Column("blob_path", Text, nullable=False, comment="raw Avro, relative to the data dir"),
    Column("blob_offset", BigInteger, comment="byte offset in a pack file; null for one file per alert"),
    Column("blob_size", Integer, nullable=False),
    Column(
        "hpx", BigInteger, nullable=False, comment="HEALPix nested index of (ra, dec), see ztfcat.store.sky"
    ),
    Column("extra", Text, comment="JSON of candidate fields this version of ztfcat does not know"),
    *_field_columns("candidate", skip=("candid",)),
    Index(None, "objectId", "jd"),
    Index(None, "jd"),
    Index(None, "release_id", "objectId"),
    Index(None, "hpx"),
    Index(None, "night"),
)

#: Every release that holds an alert, with where that release's copy of the packet is stored: an alert
#: in two tarballs stays in the catalog while either release does, and each release's packets are its own.
alert_releases = Table(
    "alert_releases",
    metadata,
    Column("candid", BigInteger, primary_key=True, autoincrement=False),
    Column(
        "release_id",
        Integer,
        ForeignKey("releases.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("blob_path", Text, nullable=False),
    Column("blob_offset", BigInteger),
    Column("blob_size", Integer, nullable=False),
    Index(None, "release_id", "candid"),
)

prv_candidates = Table(
    "prv_candidates",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("objectId", String(32), nullable=False),
    Column("alert_candid", BigInteger, nullable=False, comment="the alert this point was read from"),
    Column("alert_jd", Float(precision=53), nullable=False, comment="jd of that alert: the newest copy wins"),
    *_field_columns("prv_candidate"),
    Index(None, "objectId", "jd"),
    # Natural keys (ARCHIVE.md): a detection is its candid; an upper limit is its object and image
    # (pid, fid), never its floats, which can differ in the last digits from one alert to the next.
    Index(
        "uq_prv_candidates_candid",
        "candid",
        unique=True,
        sqlite_where=text("candid IS NOT NULL"),
        postgresql_where=text("candid IS NOT NULL"),
    ),
    Index(
        "uq_prv_candidates_limit",
        "objectId",
        "pid",
        "fid",
        unique=True,
        sqlite_where=text("candid IS NULL"),
        postgresql_where=text("candid IS NULL"),
    ),
)

fp_hists = Table(
    "fp_hists",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("objectId", String(32), nullable=False),
    Column("alert_candid", BigInteger, nullable=False, comment="the alert this point was read from"),
    Column("alert_jd", Float(precision=53), nullable=False, comment="jd of that alert: the newest wins"),
    *_field_columns("fp_hist"),
    Index("uq_fp_hists_point", "objectId", "pid", "fid", unique=True),
)

ingest_errors = Table(
    "ingest_errors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("release_id", Integer, ForeignKey("releases.id", ondelete="CASCADE"), nullable=False),
    Column("member", Text, nullable=False, comment="tar member name"),
    Column("reason", Text, nullable=False),
    Index(None, "release_id"),
)

catalog_settings = Table(
    "catalog_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    comment="settings that belong to the catalog itself, e.g. its blob layout",
)

#: Objects whose light curves must be derived again from their alerts: written in the same transaction
#: that removes alerts, emptied once the rebuild commits, so a delete killed at any instant is finished
#: by the next run (:func:`ztfcat.ingest.history.finish_rebuilds`).
history_rebuilds = Table(
    "history_rebuilds",
    metadata,
    Column("objectId", String(32), primary_key=True),
)

remote_files = Table(
    "remote_files",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("night", Date),
    Column("kind", String(16), comment="public or programid3"),
    Column("size", BigInteger, comment="exact Content-Length"),
    Column("md5", String(32), comment="hex MD5 from MD5SUMS"),
    Column("archive_url", Text, nullable=False),
    Column("checked_at", DateTime(timezone=True)),
)

#: One row per light-curve point: ``SELECT * FROM lightcurves WHERE "objectId" = 'ZTF18aaxlzgi'`` in the
#: sqlite3 shell gives a light curve, detections and upper limits, oldest first with ORDER BY jd.
LIGHTCURVES_VIEW = """
CREATE VIEW lightcurves AS
SELECT "objectId", jd, jd - 2400000.5 AS mjd, fid, magpsf, sigmapsf, diffmaglim, isdiffpos, candid,
       CASE WHEN candid IS NULL THEN 1 ELSE 0 END AS upper_limit, ra, dec, programid, rb, alert_candid
FROM prv_candidates
"""

event.listen(metadata, "after_create", DDL(LIGHTCURVES_VIEW))
event.listen(metadata, "before_drop", DDL("DROP VIEW IF EXISTS lightcurves"))

# -- objects at a glance (ztfcat.science.objects) ---------------------------------------------------
#: Candidate fields the ``objects`` table copies from each object's latest alert: solar-system and
#: nearest PS1 / Gaia source fields.  ``drb`` and ``rb`` are copied too, as ``latest_drb``/``latest_rb``.
OBJECT_CANDIDATE_FIELDS: tuple[str, ...] = (
    "ssnamenr",
    "ssdistnr",
    "ssmagnr",
    "objectidps1",
    "distpsnr1",
    "sgscore1",
    "sgmag1",
    "srmag1",
    "simag1",
    "szmag1",
    "neargaia",
    "neargaiabright",
    "maggaia",
    "maggaiabright",
)
#: Bands of the per-band columns: ZTF filter id -> suffix.
OBJECT_BANDS: dict[int, str] = {1: "g", 2: "r", 3: "i"}

objects = Table(
    "objects",
    metadata,
    Column("objectId", String(32), primary_key=True),
    Column("ra", Float(precision=53), comment="mean of the detections (unit-vector mean, deg)"),
    Column("dec", Float(precision=53), comment="mean of the detections (unit-vector mean, deg)"),
    Column("first_jd", Float(precision=53), comment="first detection"),
    Column("last_jd", Float(precision=53), comment="last detection"),
    Column("ndet", Integer, nullable=False, comment="detections: alerts and history, each candid once"),
    Column("nlim", Integer, nullable=False, comment="upper limits in the history"),
    Column("n_alerts", Integer, nullable=False, comment="alerts of the object in the catalog"),
    Column("peak_mag", Float(precision=53), comment="brightest magpsf of any band"),
    *(
        Column(f"{kind}_{band}", Float(precision=53), comment=f"{kind.replace('_', ' ')} in {band}")
        for band in OBJECT_BANDS.values()
        for kind in ("peak_mag", "latest_mag", "latest_jd")
    ),
    Column("latest_candid", BigInteger, comment="the object's latest alert"),
    Column("latest_drb", Float(precision=53), comment="drb of the latest alert"),
    Column("latest_rb", Float(precision=53), comment="rb of the latest alert"),
    *(
        Column(name, _AVRO_TYPES[FIELDS["candidate"][name][0]], comment="from the latest alert")
        for name in OBJECT_CANDIDATE_FIELDS
    ),
    Index(None, "first_jd", "peak_mag"),
    Index(None, "last_jd"),
    Index(None, "peak_mag"),
    comment="one row per object, kept by ztfcat.science.objects.refresh_objects",
)
