"""Ingest: one streaming pass from .tar.gz bytes to rows and raw packets, and every way it can go wrong."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time

import fastavro
import pytest
from sqlalchemy import func, select

from tests.tarballs import snapshot, tar_members, write_tarball
from ztfcat import Catalog, IngestError
from ztfcat.errors import ZtfcatError
from ztfcat.sources.names import night_of, release_key
from ztfcat.store.tables import alerts, prv_candidates, releases
from ztfcat.testing.synthetic import alert_bytes, make_alert, make_night, writer_schema


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN, recursively."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_release_names():
    assert release_key("ztf_public_20180819.tar.gz") == "ztf_public_20180819"
    assert release_key("ztf_public_20180819_programid3.tar.gz") == "ztf_public_20180819_programid3"
    assert release_key("ztzztar.gz.tar.gz") == "ztzztar.gz"  # a suffix, not a set of characters
    assert str(night_of("ztf_public_20180819.tar.gz")) == "2018-08-19"
    assert night_of("ztf_public_20180231.tar.gz") is None
    with pytest.raises(Exception, match="not a usable release name"):
        release_key("../x.tar.gz")


@pytest.mark.files_layout
def test_ingest_synthetic_night(catalog, tmp_path):
    spec = make_night(
        tmp_path / "ztf_public_20180819.tar.gz",
        n_alerts=40,
        version=["3.3", "4.02"],
        nested="ztf_public_20180819",
        extra_members=[("README.txt", b"not an alert")],
    )
    report = catalog.ingest(spec.path)
    assert report.status == "complete"
    assert report.n_alerts == 40 and report.n_errors == 0 and report.n_skipped == 1
    assert report.md5 == spec.md5 and report.size == spec.size
    assert set(report.versions) == {"3.3", "4.02"}
    assert catalog.alert_ids() == sorted(spec.candids)
    members = tar_members(spec.path)
    for candid in spec.candids:
        packet = members[f"ztf_public_20180819/{candid}.avro"]
        assert catalog.get_alert(candid, raw=True) == packet
        expected = next(fastavro.reader(io.BytesIO(packet)))
        assert _same(catalog.get_alert(candid), expected)
        blob = catalog.data_dir / "alerts" / "ztf_public_20180819" / f"{candid}.avro"
        assert blob.read_bytes() == packet
    release = catalog.release(spec.path.name)
    assert (release.status, release.n_alerts, str(release.night)) == ("complete", 40, "2018-08-19")
    # every candidate field is a column, with the packet's values
    some = spec.candids[3]
    row = catalog.query(
        f"candid = {some}", columns=["candid", "objectId", "magpsf", "rb", "fid", "schemavsn"]
    )
    cand = catalog.get_alert(some)["candidate"]
    assert row["magpsf"][0] == pytest.approx(cand["magpsf"], rel=1e-6)
    assert row["fid"][0] == cand["fid"] and row["schemavsn"][0] == spec.versions[some]


def test_history_has_every_point_once_and_the_triggering_candidate(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180820.tar.gz", n_alerts=30, alerts_per_object=3.0, seed=4)
    catalog.ingest(spec.path)
    expected_detections: dict[str, set] = {}
    expected_limits: dict[str, set] = {}
    for candid in spec.candids:
        alert = catalog.get_alert(candid)
        obj = alert["objectId"]
        expected_detections.setdefault(obj, set()).add(candid)
        for point in alert["prv_candidates"] or ():
            if point["candid"] is None:
                expected_limits.setdefault(obj, set()).add((point["pid"], point["fid"]))
            else:
                expected_detections[obj].add(point["candid"])
    with catalog.engine.connect() as conn:
        for obj in spec.object_ids:
            rows = conn.execute(
                select(prv_candidates.c.candid, prv_candidates.c.pid, prv_candidates.c.fid).where(
                    prv_candidates.c.objectId == obj
                )
            ).all()
            detections = [r.candid for r in rows if r.candid is not None]
            limits = [(r.pid, r.fid) for r in rows if r.candid is None]
            assert sorted(detections) == sorted(expected_detections[obj])  # once each, own candidate included
            assert sorted(limits) == sorted(expected_limits.get(obj, ()))


def test_ingest_twice_changes_nothing(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180821.tar.gz", n_alerts=12, seed=2)
    catalog.ingest(spec.path)
    before = snapshot(catalog)
    again = catalog.ingest(spec.path)
    assert again.already_complete and again.n_alerts == 12
    assert snapshot(catalog) == before
    forced = catalog.ingest(spec.path, force=True)
    assert forced.status == "complete" and forced.n_alerts == 12
    assert snapshot(catalog) == before


def test_empty_night_is_a_complete_release(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20190101.tar.gz", n_alerts=0)
    assert spec.size < 100
    report = catalog.ingest(spec.path)
    assert (report.status, report.n_alerts, report.n_errors) == ("complete", 0, 0)
    assert catalog.release(spec.path.name).status == "complete"


def test_bad_members_are_recorded_and_the_rest_goes_in(catalog, tmp_path):
    good = make_night(tmp_path / "g.tar.gz", n_alerts=5, seed=3)
    members = tar_members(good.path)
    packet = next(iter(members.values()))
    bad = [
        ("truncated.avro", packet[: len(packet) // 2]),
        ("garbage.avro", b"this is not avro at all"),
        ("empty.avro", b""),
        ("../escape.avro", packet),
        ("/abs/olute.avro", packet),
    ]
    path = write_tarball(tmp_path / "ztf_public_20180822.tar.gz", [*bad[:2], *members.items(), *bad[2:]])
    report = catalog.ingest(path)
    assert report.status == "complete" and report.n_alerts == 5
    reasons = dict(catalog.ingest_errors(path.name).iterrows("member", "reason"))
    assert set(reasons) == {name for name, _ in bad}
    assert "truncated" in reasons["truncated.avro"]
    assert "bad magic" in reasons["garbage.avro"]
    assert "unsafe member name" in reasons["../escape.avro"]
    assert not (tmp_path / "escape.avro").exists() and not (catalog.data_dir / "escape.avro").exists()
    assert all(p.resolve().is_relative_to(catalog.data_dir) for p in catalog.data_dir.rglob("*"))


def test_real_damaged_packets_are_named(catalog, tmp_path, shared_alerts):
    damaged = sorted((shared_alerts / "damaged").glob("*.avro"))
    good = sorted((shared_alerts / "alerts" / "v3.3").glob("*.avro"))[:3]
    path = write_tarball(
        tmp_path / "ztf_public_20200101.tar.gz", [(p.name, p.read_bytes()) for p in damaged + good]
    )
    report = catalog.ingest(path)
    assert report.status == "complete" and report.n_alerts == 3
    assert report.n_errors == len(damaged)
    assert {m for m, _ in report.errors} == {p.name for p in damaged}


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_multi_record_file_gives_one_alert_per_record(catalog, tmp_path, codec):
    schema = writer_schema("4.02")
    import numpy as np

    rng = np.random.default_rng(1)
    records = [
        make_alert(
            rng,
            object_id="ZTF20aaaaaaa",
            candid=1200000000015000000 + i,
            jd=2458900.7 + i / 100,
            ra=10.0,
            dec=20.0,
            cutouts=False,
        )
        for i in range(3)
    ]
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, records, codec=codec, sync_interval=1)  # one block per record
    path = write_tarball(tmp_path / "ztf_public_20200202.tar.gz", [("multi.avro", buffer.getvalue())])
    report = catalog.ingest(path)
    assert report.n_alerts == 3 and report.n_errors == 0
    for record in records:
        raw = catalog.get_alert(record["candid"], raw=True)
        assert raw.startswith(buffer.getvalue()[:100])  # the original header
        (decoded,) = list(fastavro.reader(io.BytesIO(raw)))  # a valid one-alert Avro file
        assert decoded["candid"] == record["candid"]
        assert _same(catalog.get_alert(record["candid"]), decoded)


def test_unknown_candidate_field_is_kept(catalog, tmp_path):
    import numpy as np

    schema = writer_schema("4.02")
    schema["version"] = "9.9"
    cand = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    cand["fields"].append({"name": "newscore", "type": ["null", "float"], "default": None})
    schema["fields"].insert(5, {"name": "classifications", "type": ["null", "string"], "default": None})
    record = make_alert(
        np.random.default_rng(2),
        object_id="ZTF30aaaaaab",
        candid=3000000000015000001,
        jd=2461000.7,
        ra=200.0,
        dec=-30.0,
        cutouts=False,
    )
    record["schemavsn"] = "9.9"
    record["candidate"]["newscore"] = 0.25
    record["classifications"] = "SN Ia"
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [record])
    path = write_tarball(tmp_path / "ztf_public_20300101.tar.gz", [("a.avro", buffer.getvalue())])
    report = catalog.ingest(path)
    assert (
        report.n_alerts == 1 and report.unknown_versions == {"9.9"} and report.unknown_fields == {"newscore"}
    )
    with catalog.engine.connect() as conn:
        extra = conn.execute(select(alerts.c.extra)).scalar_one()
    assert json.loads(extra) == {"newscore": 0.25}
    assert report.unknown_top_fields == {"classifications"} and "classifications" in str(report)
    facts = catalog.info()
    assert facts["unknown_fields"] == ["newscore"] and facts["unknown_versions"] == ["9.9"]
    assert facts["unknown_top_fields"] == ["classifications"]


@pytest.mark.parametrize("where", ["objectId", "ssnamenr"])
def test_a_nul_byte_in_a_string_is_a_bad_member(catalog, tmp_path, where):
    import numpy as np

    good = make_alert(np.random.default_rng(3), object_id="ZTF30aaaaaac", candid=3000000000015000002,
                      jd=2461000.7, ra=201.0, dec=-31.0, cutouts=False)  # fmt: skip
    bad = make_alert(np.random.default_rng(4), object_id="ZTF30aaaaaad", candid=3000000000015000003,
                     jd=2461000.8, ra=202.0, dec=-32.0, cutouts=False)  # fmt: skip
    if where == "objectId":
        bad["objectId"] = "ZTF30aa\x00aad"
    else:
        bad["candidate"]["ssnamenr"] = "12\x0045"
    members = []
    for name, record in (("good.avro", good), ("bad.avro", bad)):
        buffer = io.BytesIO()
        fastavro.writer(buffer, writer_schema("4.02"), [record])
        members.append((name, buffer.getvalue()))
    report = catalog.ingest(write_tarball(tmp_path / "ztf_public_20300102.tar.gz", members))
    assert report.status == "complete" and report.n_alerts == 1
    assert [(m, "NUL" in r) for m, r in report.errors] == [("bad.avro", True)]
    assert catalog.alert_ids() == [3000000000015000002]


@pytest.mark.parametrize("damage", ["truncate", "not_gzip", "corrupt"])
def test_broken_tarball_fails_alone(catalog, tmp_path, damage):
    first = make_night(tmp_path / "ztf_public_20180901.tar.gz", n_alerts=8, seed=5)
    catalog.ingest(first.path)
    before = snapshot(catalog)
    second = make_night(tmp_path / "ztf_public_20180902.tar.gz", n_alerts=20, seed=6)
    data = second.path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "not_gzip":
        data = b"<html>404 Not Found</html>" + data
    else:
        data = data[:2000] + bytes(b ^ 0x55 for b in data[2000:4000]) + data[4000:]
    second.path.write_bytes(data)
    with pytest.raises(IngestError, match="ztf_public_20180902.tar.gz"):
        catalog.ingest(second.path)
    release = catalog.release(second.path.name)
    assert release.status == "failed" and release.error
    after = snapshot(catalog)
    after["releases"] = [r for r in after["releases"] if r[0] != second.path.name]
    assert after == before  # nothing of the failed night is left, nothing else was touched
    # once repaired, it goes in
    fixed = make_night(tmp_path / "ztf_public_20180902.tar.gz", n_alerts=20, seed=6)
    assert catalog.ingest(fixed.path).n_alerts == 20


def test_ingest_from_a_stream_that_cannot_seek(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180903.tar.gz", n_alerts=6, seed=7)

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            chunk = self._data.read(min(len(b), 1000))
            b[: len(chunk)] = chunk
            return len(chunk)

    report = catalog.ingest(Pipe(spec.path.read_bytes()), name=spec.path.name)
    assert report.n_alerts == 6 and report.md5 == spec.md5


@pytest.mark.files_layout
def test_an_alert_in_two_releases_belongs_to_both(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180904.tar.gz", n_alerts=6, seed=8)
    catalog.ingest(spec.path)
    members = tar_members(spec.path)
    shared = list(members.items())[:2]
    copy = write_tarball(tmp_path / "ztf_public_20180905.tar.gz", shared)
    report = catalog.ingest(copy)
    # Each release accounts for every alert of its tarball and keeps its own copy of the packets.
    assert report.n_alerts == 2 and report.n_shared == 2 and report.n_duplicates == 0
    stored = sorted(p.name for p in (catalog.data_dir / "alerts" / "ztf_public_20180905").iterdir())
    assert stored == sorted(name.rsplit("/", 1)[-1] for name, _ in shared)
    assert catalog.count() == 6
    assert catalog.count(release="ztf_public_20180905.tar.gz") == 2
    # Deleting the release that stored them first keeps what the other still holds, byte for byte.
    catalog.delete(names=["ztf_public_20180904.tar.gz"])
    assert catalog.count() == 2
    for name, data in shared:
        assert catalog.get_alert(int(name.rsplit("/", 1)[-1][:-5]), raw=True) == data
    again = catalog.ingest(copy)
    assert again.already_complete and again.n_alerts == 2


def test_pack_layout_gives_the_same_bytes_in_a_standard_tar(database_url, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180906.tar.gz", n_alerts=10, seed=9)
    catalog = Catalog(database_url, tmp_path / "data", layout="pack")
    try:
        catalog.ingest(spec.path)
        members = tar_members(spec.path)
        pack = catalog.data_dir / "alerts" / "ztf_public_20180906.tar"
        assert pack.is_file() and not (catalog.data_dir / "alerts" / "ztf_public_20180906").exists()
        with tarfile.open(pack) as tar:  # a standard tar file
            packed = {m.name: tar.extractfile(m).read() for m in tar}
        assert packed == {name.rsplit("/", 1)[-1]: data for name, data in members.items()}
        for candid in spec.candids:
            assert catalog.get_alert(candid, raw=True) == members[f"{candid}.avro"]
        listed = subprocess.run(["tar", "tf", str(pack)], capture_output=True, text=True, check=True)
        assert sorted(listed.stdout.split()) == sorted(packed)
    finally:
        catalog.close()


def test_real_packets_of_every_version_read_back_exactly(catalog, tmp_path, shared_alerts):
    files = sorted((shared_alerts / "alerts").glob("v*/*.avro"))
    packets = {}
    for path in files:
        data = path.read_bytes()
        packets[next(fastavro.reader(io.BytesIO(data)))["candid"]] = data
    tarball = write_tarball(
        tmp_path / "ztf_public_20240101.tar.gz", [(p.name, p.read_bytes()) for p in files]
    )
    report = catalog.ingest(tarball)
    assert report.n_errors == 0
    assert report.n_alerts + report.n_duplicates == len(files)
    assert set(report.versions) == {p.parent.name[1:] for p in files}
    assert set(catalog.alert_ids()) == set(packets)
    for candid in catalog.alert_ids():
        raw = catalog.get_alert(candid, raw=True)
        assert _same(catalog.get_alert(candid), next(fastavro.reader(io.BytesIO(raw))))
        if raw != packets[candid]:  # one candid in several encodings: the first one stored wins
            assert next(fastavro.reader(io.BytesIO(raw)))["candid"] == candid


KILL_SCRIPT = """
import sys
from ztfcat import Catalog
Catalog(sys.argv[1], sys.argv[2], layout=sys.argv[4]).ingest(sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["pack", "files"])
def test_killed_ingest_then_rerun_equals_one_clean_ingest(database_url, tmp_path, layout):
    spec = make_night(tmp_path / "ztf_public_20180907.tar.gz", n_alerts=1500, seed=10, n_prv=5)
    catalog = Catalog(database_url, tmp_path / "data", layout=layout)
    assert catalog.count() == 0  # creates the schema before the child starts
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, database_url, str(tmp_path / "data"), str(spec.path), layout]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with catalog.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(alerts)).scalar_one() >= 300:
                break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with catalog.engine.connect() as conn:
        status = conn.execute(select(releases.c.status)).scalar_one()
    assert status in ("ingesting", "history")  # killed half-way
    report = catalog.ingest(spec.path)
    assert report.status == "complete" and report.n_alerts == 1500
    got = snapshot(catalog)
    catalog.delete()
    assert snapshot(catalog)["alerts"] == [] and snapshot(catalog)["files"] == []
    catalog.ingest(spec.path)  # a clean ingest into the same database, to compare with
    assert got == snapshot(catalog)
    catalog.close()


def test_gzip_of_several_members_and_trailing_zeros(catalog, tmp_path):
    spec = make_night(tmp_path / "n.tar.gz", n_alerts=4, seed=11)
    raw_tar = gzip.decompress(spec.path.read_bytes())
    half = len(raw_tar) // 2
    data = gzip.compress(raw_tar[:half]) + gzip.compress(raw_tar[half:]) + bytes(512)
    path = tmp_path / "ztf_public_20180908.tar.gz"
    path.write_bytes(data)
    assert catalog.ingest(path).n_alerts == 4
    os.remove(spec.path)


@pytest.mark.files_layout
def test_convert_between_layouts_keeps_every_byte(catalog, tmp_path):
    nights = [
        make_night(tmp_path / f"ztf_public_2018091{i}.tar.gz", n_alerts=7, seed=20 + i) for i in range(2)
    ]
    for spec in nights:
        catalog.ingest(spec.path)
    raw = {c: catalog.get_alert(c, raw=True) for spec in nights for c in spec.candids}
    assert catalog.layout == "files"
    assert catalog.convert_layout("pack") == 2
    alerts_dir = catalog.data_dir / "alerts"
    assert sorted(p.name for p in alerts_dir.iterdir()) == [
        "ztf_public_20180910.tar",
        "ztf_public_20180911.tar",
    ]
    assert {c: catalog.get_alert(c, raw=True) for c in raw} == raw
    assert Catalog(catalog.database_url, catalog.data_dir).layout == "pack"  # the catalog remembers
    third = make_night(tmp_path / "ztf_public_20180912.tar.gz", n_alerts=3, seed=30)
    reopened = Catalog(catalog.database_url, catalog.data_dir)
    reopened.ingest(third.path)
    assert (alerts_dir / "ztf_public_20180912.tar").is_file()
    reopened.close()
    assert catalog.convert_layout("files") == 3
    assert sorted(p.name for p in alerts_dir.iterdir()) == [
        "ztf_public_20180910",
        "ztf_public_20180911",
        "ztf_public_20180912",
    ]
    assert {c: catalog.get_alert(c, raw=True) for c in raw} == raw
    assert catalog.convert_layout("files") == 0


@pytest.mark.files_layout
def test_convert_waits_for_no_release_another_process_holds(catalog, tmp_path):
    """A conversion moves a release's packets only under its lock: one being ingested or deleted
    elsewhere stops it with a clear error, and nothing of that release moves."""
    from ztfcat.ingest.pipeline import release_lock

    nights = [
        make_night(tmp_path / f"ztf_public_2018092{i}.tar.gz", n_alerts=5, seed=40 + i) for i in range(2)
    ]
    for spec in nights:
        catalog.ingest(spec.path)
    raw = {c: catalog.get_alert(c, raw=True) for spec in nights for c in spec.candids}
    held = nights[1].path.name
    lock = release_lock(catalog.engine, catalog.data_dir, held)  # as another process's ingest would
    with lock, pytest.raises(ZtfcatError, match=f"{held} is being ingested by another"):
        catalog.convert_layout("pack")
    assert {r["name"]: r["layout"] for r in catalog.releases()} == {
        nights[0].path.name: "pack",  # converted before the held one was reached
        held: "files",
    }
    assert (catalog.data_dir / "alerts" / held.removesuffix(".tar.gz")).is_dir()
    assert {c: catalog.get_alert(c, raw=True) for c in raw} == raw
    assert catalog.convert_layout("pack") == 1  # the lock gone, the rest is converted
    assert {c: catalog.get_alert(c, raw=True) for c in raw} == raw


def test_zero_byte_night_is_an_empty_release(catalog, tmp_path):
    """The archive lists a few nights as 0-byte files; they are releases with no alerts, not errors."""
    path = tmp_path / "ztf_public_20260202.tar.gz"
    path.write_bytes(b"")
    report = catalog.ingest(path)
    assert (report.status, report.n_alerts, report.size) == ("complete", 0, 0)
    assert report.md5 == "d41d8cd98f00b204e9800998ecf8427e"


def test_history_from_worker_processes_equals_inline(database_url, tmp_path, monkeypatch):
    import ztfcat.ingest.history

    spec = make_night(tmp_path / "ztf_public_20180913.tar.gz", n_alerts=300, seed=31, n_prv=6)
    inline = Catalog(f"sqlite:///{tmp_path / 'inline.sqlite'}", tmp_path / "inline")
    inline.ingest(spec.path)
    expected = snapshot(inline)
    inline.close()
    monkeypatch.setattr(ztfcat.ingest.history, "INLINE_BELOW", 0)  # a process pool even for a small night
    monkeypatch.setattr(ztfcat.ingest.history, "CHUNK", 16)  # and many chunks in flight
    pooled = Catalog(database_url, tmp_path / "pooled")
    pooled.ingest(spec.path)
    got = snapshot(pooled)
    assert len(got["prv_candidates"]) > 300 and len(got["fp_hists"]) > 300
    # The workers wrote the light curves and (SQLite) the objects rows themselves.  PostgreSQL's
    # objects differ from SQLite's in the last bits of averaged floats, so only SQLite's are compared.
    tables = ("prv_candidates", "fp_hists", "alerts") + (
        ("objects",) if database_url.startswith("sqlite") else ()
    )
    for table in tables:
        assert got[table] == expected[table], table
    pooled.close()


def test_ingests_in_threads_of_one_process_equal_serial_ones(tmp_path, monkeypatch):
    """Two ingests running in threads of one process: the second's history pool forks while the first's
    threads may be inside SQLite, so its workers send their rows back (``shared_process``); the
    catalog equals the one of the same nights ingested one after the other."""
    import threading

    import ztfcat.ingest.history

    monkeypatch.setattr(ztfcat.ingest.history, "INLINE_BELOW", 0)  # a process pool even for a small night
    monkeypatch.setattr(ztfcat.ingest.history, "CHUNK", 16)
    seen = []
    derive = ztfcat.ingest.history.derive_history

    def recording(*args, **kwargs):
        seen.append(kwargs.get("shared_process"))
        return derive(*args, **kwargs)

    monkeypatch.setattr(ztfcat.ingest.history, "derive_history", recording)
    nights = [
        make_night(
            tmp_path / f"ztf_public_2018091{i}.tar.gz",
            night=f"2018091{i}",
            n_alerts=300,
            seed=40 + i,
            n_prv=6,
        )
        for i in (5, 6)
    ]
    serial = Catalog(f"sqlite:///{tmp_path / 'serial.sqlite'}", tmp_path / "serial")
    for night in nights:
        serial.ingest(night.path)
    expected = snapshot(serial)
    serial.close()
    seen.clear()
    threaded = Catalog(f"sqlite:///{tmp_path / 'threaded.sqlite'}", tmp_path / "threaded")
    both = threading.Barrier(2)
    errors = []

    def run(path):
        try:
            both.wait()
            threaded.ingest(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(night.path,)) for night in nights]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    assert True in seen  # at least one history pass ran beside the other ingest
    got = snapshot(threaded)
    threaded.close()
    for table in ("alerts", "prv_candidates", "fp_hists", "objects"):
        assert got[table] == expected[table], table


def test_an_avro_file_that_is_not_an_alert_is_named(catalog, tmp_path):
    schema = {
        "type": "record",
        "name": "other.thing",
        "version": "5.0",
        "fields": [{"name": "objectId", "type": "string"}, {"name": "x", "type": "int"}],
    }
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [{"objectId": "ZTF99", "x": 1}])
    good = make_night(tmp_path / "g.tar.gz", n_alerts=2, seed=32)
    members = [("thing.avro", buffer.getvalue()), *tar_members(good.path).items()]
    path = write_tarball(tmp_path / "ztf_public_20180914.tar.gz", members)
    report = catalog.ingest(path)
    assert report.n_alerts == 2 and report.errors == [
        ("thing.avro", "schema 'other.thing' version '5.0' is not a ZTF alert: no candid, candidate")
    ]


@pytest.mark.parametrize(("field", "value"), [("dec", 95.0), ("ra", float("inf")), ("jd", float("nan"))])
def test_an_alert_with_an_impossible_position_is_a_bad_member(catalog, tmp_path, field, value):
    import numpy as np

    record = make_alert(
        np.random.default_rng(5),
        object_id="ZTF20aaaaaac",
        candid=1300000000015000001,
        jd=2458900.7,
        ra=10.0,
        dec=20.0,
        cutouts=False,
    )
    record["candidate"][field] = value
    good = make_night(tmp_path / "g.tar.gz", n_alerts=2, seed=33)
    members = [("odd.avro", alert_bytes(record)), *tar_members(good.path).items()]
    report = catalog.ingest(write_tarball(tmp_path / "ztf_public_20180915.tar.gz", members))
    assert report.status == "complete" and report.n_alerts == 2
    assert report.errors[0][0] == "odd.avro" and f"candidate.{field}" in report.errors[0][1]


class _Network(io.RawIOBase):
    """A non-seekable stream without a file descriptor, as a download or a bucket object is."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._data.read(min(len(b), 65536))
        b[: len(chunk)] = chunk
        return len(chunk)


def _point_keys(catalog) -> set[tuple]:
    """Natural keys of every light-curve point: detections by candid, upper limits by image."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            select(
                prv_candidates.c.objectId, prv_candidates.c.candid, prv_candidates.c.pid, prv_candidates.c.fid
            )
        ).all()
    return {(o, c) if c is not None else (o, p, f) for o, c, p, f in rows}


def test_history_derived_during_the_main_pass_is_complete_and_true(database_url, tmp_path, monkeypatch):
    import ztfcat.ingest.history
    import ztfcat.ingest.pipeline

    spec = make_night(tmp_path / "ztf_public_20180916.tar.gz", n_alerts=400, seed=34, n_prv=6)
    final_only = Catalog(database_url, tmp_path / "final")
    final_only.ingest(spec.path)  # a local file: history from each object's newest alert, at the end
    newest = _point_keys(final_only)
    truth = set()  # every point any alert of the night carries, and the alerts themselves
    for candid in spec.candids:
        alert = final_only.get_alert(candid)
        truth.add((alert["objectId"], candid))
        for p in alert["prv_candidates"] or ():
            key = (
                (alert["objectId"], p["candid"])
                if p["candid"] is not None
                else (alert["objectId"], p["pid"], p["fid"])
            )
            truth.add(key)
    final_only.delete()
    final_only.close()
    monkeypatch.setattr(ztfcat.ingest.pipeline, "EARLY_HISTORY_BYTES", 0)
    monkeypatch.setattr(ztfcat.ingest.pipeline, "BATCH", 16)  # many batches, so workers get work mid-pass
    monkeypatch.setattr(ztfcat.ingest.history, "CHUNK", 16)
    early = Catalog(database_url, tmp_path / "early")
    report = early.ingest(io.BufferedReader(_Network(spec.path.read_bytes())), name=spec.path.name)
    assert report.status == "complete" and report.n_alerts == 400
    got = _point_keys(early)
    # nothing the final pass finds is missing, nothing is invented, nothing is stored twice
    assert newest <= got <= truth
    with early.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prv_candidates)).scalar_one() == len(got)
    early.close()


def test_a_broken_stream_with_early_history_leaves_nothing(catalog, tmp_path, monkeypatch):
    import ztfcat.ingest.pipeline

    monkeypatch.setattr(ztfcat.ingest.pipeline, "EARLY_HISTORY_BYTES", 0)
    monkeypatch.setattr(ztfcat.ingest.pipeline, "BATCH", 16)
    spec = make_night(tmp_path / "ztf_public_20180917.tar.gz", n_alerts=200, seed=35, n_prv=4)
    data = spec.path.read_bytes()
    with pytest.raises(IngestError, match="truncated"):
        catalog.ingest(io.BufferedReader(_Network(data[: len(data) * 3 // 4])), name=spec.path.name)
    state = snapshot(catalog)
    assert state["alerts"] == [] and state["prv_candidates"] == [] and state["fp_hists"] == []
    assert state["files"] == []


def test_a_member_far_larger_than_any_alert_is_a_bad_member(catalog, tmp_path):
    """Decoding a packet's history takes ~20x its size in memory: a hostile 5 MB member must not get
    that far (the largest real packet is 170 KB)."""
    import os

    spec = make_night(tmp_path / "ztf_public_20300103.tar.gz", n_alerts=2, seed=12)
    members = [*tar_members(spec.path).items(), ("huge.avro", os.urandom(5 << 20))]
    report = catalog.ingest(write_tarball(tmp_path / "ztf_public_20300104.tar.gz", members))
    assert report.status == "complete" and report.n_alerts == 2
    assert [m for m, r in report.errors if "too large" in r] == ["huge.avro"]


def test_pack_headers_are_what_tarfile_writes():
    """The pack layout's hand-made ustar headers equal tarfile's, byte for byte, whatever the size."""
    import tarfile

    from ztfcat.store.blobs import ustar_header

    for name, size in (
        ("5.avro", 0),
        ("675188490215015000.avro", 70123),
        ("x" * 99, 4 << 20),
        ("a", 2**33 - 1),
    ):
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        assert ustar_header(name, size) == info.tobuf(format=tarfile.USTAR_FORMAT), (name, size)


def test_new_catalogs_pack_and_a_catalog_older_than_the_setting_keeps_its_layout(database_url, tmp_path):
    """The default is ``pack``; a catalog whose layout was never recorded (made before the setting
    existed, when every release was ``files``) goes on with the layout of its latest release."""
    from sqlalchemy import delete

    from ztfcat.store.tables import catalog_settings

    spec = make_night(tmp_path / "ztf_public_20180913.tar.gz", n_alerts=3, seed=31)
    with Catalog(database_url, tmp_path / "new") as new:
        assert new.layout == "pack"
        new.ingest(spec.path)
        assert (new.data_dir / "alerts" / "ztf_public_20180913.tar").is_file()
    with Catalog(database_url, tmp_path / "new", layout="files") as old:
        old.delete()  # one catalog for both: the first one's night goes, the setting stays
        old.ingest(spec.path)
        with old.engine.begin() as conn:
            conn.execute(delete(catalog_settings))
    with Catalog(database_url, tmp_path / "new") as reopened:
        assert reopened.layout == "files"
