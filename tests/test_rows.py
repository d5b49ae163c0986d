"""AlertRow: the pipeline's alerts row, its named fields at the positions the table's columns are in."""

from __future__ import annotations

import io
import math
import tarfile

import fastavro
import pytest

from ztfcat.ingest.avro import AlertDecoder
from ztfcat.ingest.pipeline import _row
from ztfcat.ingest.rows import ALERT_COLUMNS, MEMBER_COLUMNS, AlertRow
from ztfcat.store.tables import alert_releases, alerts
from ztfcat.testing.synthetic import make_night


def test_the_columns_are_the_tables_own():
    assert set(ALERT_COLUMNS) == set(alerts.c.keys())
    assert set(MEMBER_COLUMNS) <= set(alert_releases.c.keys())
    assert len(set(ALERT_COLUMNS)) == len(ALERT_COLUMNS)


@pytest.mark.parametrize("version", ["3.3", "4.02"])
def test_named_fields_read_what_fastavro_reads_from_the_packet(tmp_path, version):
    path = tmp_path / "night.tar.gz"
    make_night(path, n_alerts=30, version=version, cutouts=False)
    decoder = AlertDecoder()
    seen = 0
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.name.endswith(".avro"):
                continue
            data = tar.extractfile(member).read()
            record = next(fastavro.reader(io.BytesIO(data)))
            ((packet, _schema, decoded),) = decoder.members_rows(data, history=False)
            row = _row(decoded, 7, len(packet))
            assert isinstance(row, AlertRow) and len(row) == len(ALERT_COLUMNS)
            cand = record["candidate"]
            assert (row.candid, row.object_id, row.schemavsn) == (
                record["candid"],
                record["objectId"],
                record["schemavsn"],
            )
            assert (row.jd, row.ra, row.dec) == (cand["jd"], cand["ra"], cand["dec"])
            assert row.release_id == 7 and row.blob_size == len(data)
            assert row.blob_path is None and row.blob_offset is None and row.hpx is None  # the writer's
            for name in ("magpsf", "fid", "rb", "isdiffpos"):  # any field by its column's position
                value = row[ALERT_COLUMNS.index(name)]
                expected = cand.get(name)
                if isinstance(expected, float) and math.isnan(expected):
                    expected = None
                assert value == expected, name
            row.blob_path, row.blob_offset, row.hpx = "alerts/x.tar", 512, 99
            assert (
                row[ALERT_COLUMNS.index("blob_path")] == "alerts/x.tar"
                and row[ALERT_COLUMNS.index("hpx")] == 99
            )
            assert row.membership() == (row.candid, 7, "alerts/x.tar", 512, len(data))
            seen += 1
    assert seen == 30
