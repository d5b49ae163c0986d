"""objects at a glance

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:30:00

One row per object, kept by ``ztfcat.science.objects.refresh_objects``; filled from the alerts and their
history on upgrade, so an existing catalog has its objects at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copy of ztfcat.store.tables.objects as of this revision.
_F53 = sa.Float(precision=53)
_F24 = sa.Float(precision=24)
_LATEST = "from the latest alert"


def _columns() -> list[sa.Column]:
    columns = [
        sa.Column("objectId", sa.String(length=32), nullable=False),
        sa.Column("ra", _F53, nullable=True, comment="mean of the detections (unit-vector mean, deg)"),
        sa.Column("dec", _F53, nullable=True, comment="mean of the detections (unit-vector mean, deg)"),
        sa.Column("first_jd", _F53, nullable=True, comment="first detection"),
        sa.Column("last_jd", _F53, nullable=True, comment="last detection"),
        sa.Column(
            "ndet", sa.Integer(), nullable=False, comment="detections: alerts and history, each candid once"
        ),
        sa.Column("nlim", sa.Integer(), nullable=False, comment="upper limits in the history"),
        sa.Column("n_alerts", sa.Integer(), nullable=False, comment="alerts of the object in the catalog"),
        sa.Column("peak_mag", _F53, nullable=True, comment="brightest magpsf of any band"),
    ]
    for band in ("g", "r", "i"):
        for kind in ("peak_mag", "latest_mag", "latest_jd"):
            columns.append(
                sa.Column(
                    f"{kind}_{band}", _F53, nullable=True, comment=f"{kind.replace('_', ' ')} in {band}"
                )
            )
    columns += [
        sa.Column("latest_candid", sa.BigInteger(), nullable=True, comment="the object's latest alert"),
        sa.Column("latest_drb", _F53, nullable=True, comment="drb of the latest alert"),
        sa.Column("latest_rb", _F53, nullable=True, comment="rb of the latest alert"),
        sa.Column("ssnamenr", sa.Text(), nullable=True, comment=_LATEST),
        sa.Column("ssdistnr", _F53, nullable=True, comment=_LATEST),
        sa.Column("ssmagnr", _F53, nullable=True, comment=_LATEST),
        sa.Column("objectidps1", sa.BigInteger(), nullable=True, comment=_LATEST),
    ]
    columns += [
        sa.Column(name, _F53, nullable=True, comment=_LATEST)
        for name in (
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
    ]
    return columns


def upgrade() -> None:
    op.create_table(
        "objects",
        *_columns(),
        sa.PrimaryKeyConstraint("objectId", name=op.f("pk_objects")),
        comment="one row per object, kept by ztfcat.science.objects.refresh_objects",
    )
    op.create_index(op.f("ix_objects_first_jd_peak_mag"), "objects", ["first_jd", "peak_mag"], unique=False)
    op.create_index(op.f("ix_objects_last_jd"), "objects", ["last_jd"], unique=False)
    op.create_index(op.f("ix_objects_peak_mag"), "objects", ["peak_mag"], unique=False)
    # Filled with today's code: right while ``objects`` keeps these columns; a later revision that
    # changes them must fill its own columns instead of relying on this call.
    from ztfcat.science.objects import refresh_objects

    refresh_objects(op.get_bind(), None)


def downgrade() -> None:
    op.drop_index(op.f("ix_objects_peak_mag"), table_name="objects")
    op.drop_index(op.f("ix_objects_last_jd"), table_name="objects")
    op.drop_index(op.f("ix_objects_first_jd_peak_mag"), table_name="objects")
    op.drop_table("objects")
