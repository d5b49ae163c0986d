"""lossless history, releases sharing alerts, the night observed, exact floats

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:30:00

- ``alert_releases``: every release that holds an alert, with that release's copy of the packet;
  filled from ``alerts`` (each alert held by the release that stored it).
- ``alerts.night``: the UT date of ``jd`` (the night observed), indexed.
- ``releases.unknown_fields``: fields new to ztfcat, as the ingest report names them.
- ``prv_candidates`` / ``fp_hists``: ``alert_jd`` ranks copies (newest wins), ``release_id`` goes (a
  point belongs to the alerts that carry it, not to a tarball).  The old rows came from one alert per
  object and night and can miss points, so the tables are made anew and every object is marked in
  ``history_rebuilds``: the next ingest, delete or ``ztfcat repair`` derives every light curve again
  from the packets, losslessly.
- PostgreSQL: Avro ``float`` columns become ``double precision`` (a ``real`` reads back as its shortest
  decimal, not the packet's value); widening is exact.

The history tables are built from :mod:`ztfcat.store.fields`, which only ever grows (new schema versions add
fields in later migrations), so this revision's columns are its fields as of today plus the keys below.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ztfcat.store.fields import FIELDS

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LIGHTCURVES_VIEW = """
CREATE VIEW lightcurves AS
SELECT "objectId", jd, jd - 2400000.5 AS mjd, fid, magpsf, sigmapsf, diffmaglim, isdiffpos, candid,
       CASE WHEN candid IS NULL THEN 1 ELSE 0 END AS upper_limit, ra, dec, programid, rb, alert_candid
FROM prv_candidates
"""

_TYPES = {
    "double": sa.Float(precision=53),
    "float": sa.Float(precision=53),
    "int": sa.Integer(),
    "long": sa.BigInteger(),
    "string": sa.Text(),
    "boolean": sa.Boolean(),
}


def _fields(part: str) -> list[sa.Column]:
    return [sa.Column(name, _TYPES[avro], nullable=True) for name, (avro, _n, _doc) in FIELDS[part].items()]


def _history_tables() -> None:
    op.create_table(
        "prv_candidates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("objectId", sa.String(length=32), nullable=False),
        sa.Column("alert_candid", sa.BigInteger(), nullable=False),
        sa.Column("alert_jd", sa.Float(precision=53), nullable=False),
        *_fields("prv_candidate"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prv_candidates")),
    )
    op.create_index("ix_prv_candidates_objectId_jd", "prv_candidates", ["objectId", "jd"])
    op.create_index(
        "uq_prv_candidates_candid",
        "prv_candidates",
        ["candid"],
        unique=True,
        sqlite_where=sa.text("candid IS NOT NULL"),
        postgresql_where=sa.text("candid IS NOT NULL"),
    )
    op.create_index(
        "uq_prv_candidates_limit",
        "prv_candidates",
        ["objectId", "pid", "fid"],
        unique=True,
        sqlite_where=sa.text("candid IS NULL"),
        postgresql_where=sa.text("candid IS NULL"),
    )
    op.create_table(
        "fp_hists",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("objectId", sa.String(length=32), nullable=False),
        sa.Column("alert_candid", sa.BigInteger(), nullable=False),
        sa.Column("alert_jd", sa.Float(precision=53), nullable=False),
        *_fields("fp_hist"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fp_hists")),
    )
    op.create_index("uq_fp_hists_point", "fp_hists", ["objectId", "pid", "fid"], unique=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP VIEW IF EXISTS lightcurves")
    op.drop_table("prv_candidates")
    op.drop_table("fp_hists")
    _history_tables()

    with op.batch_alter_table("releases") as batch_op:
        batch_op.add_column(sa.Column("unknown_fields", sa.Text(), nullable=True))

    with op.batch_alter_table("alerts") as batch_op:
        batch_op.add_column(sa.Column("night", sa.Date(), nullable=True))
    if postgres:
        op.execute("UPDATE alerts SET night = DATE '2000-01-01' + floor(jd - 2451544.5)::int")
        # One ALTER TABLE for every column: PostgreSQL rewrites the table (and its indexes) once.
        widen = ", ".join(
            f'ALTER COLUMN "{name}" TYPE double precision'
            for name, (avro, _n, _doc) in FIELDS["candidate"].items()
            if avro == "float"
        )
        op.execute(f"ALTER TABLE alerts {widen}")
    else:
        op.execute("UPDATE alerts SET night = date(jd)")  # SQLite reads a number as a Julian day
    with op.batch_alter_table("alerts") as batch_op:
        batch_op.alter_column("night", existing_type=sa.Date(), nullable=False)
        batch_op.create_index(batch_op.f("ix_alerts_night"), ["night"], unique=False)

    op.create_table(
        "alert_releases",
        sa.Column("candid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("release_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("blob_path", sa.Text(), nullable=False),
        sa.Column("blob_offset", sa.BigInteger(), nullable=True),
        sa.Column("blob_size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
            name=op.f("fk_alert_releases_release_id_releases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("candid", "release_id", name=op.f("pk_alert_releases")),
    )
    op.create_index("ix_alert_releases_release_id_candid", "alert_releases", ["release_id", "candid"])
    op.execute(
        "INSERT INTO alert_releases (candid, release_id, blob_path, blob_offset, blob_size) "
        "SELECT candid, release_id, blob_path, blob_offset, blob_size FROM alerts"
    )
    op.create_table(
        "history_rebuilds",
        sa.Column("objectId", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("objectId", name=op.f("pk_history_rebuilds")),
    )
    op.execute('INSERT INTO history_rebuilds ("objectId") SELECT DISTINCT "objectId" FROM alerts')
    op.execute(LIGHTCURVES_VIEW)


def downgrade() -> None:
    raise NotImplementedError("ztfcat catalogs do not go back to revision 0001; restore a copy instead")
