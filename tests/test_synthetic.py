"""Tests of ztfcat.testing.synthetic: synthetic packets must be indistinguishable in form from real ZTF ones."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import time
import warnings
import zlib
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from ztfcat.store.fields import KNOWN_VERSIONS, TOP_FIELDS
from ztfcat.testing import synthetic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf-alerts" / "alerts"
NID_EPOCH_JD = 2457754.5


def _strip_docs(x):
    if isinstance(x, dict):
        return {k: _strip_docs(v) for k, v in x.items() if k != "doc"}
    if isinstance(x, list):
        return [_strip_docs(v) for v in x]
    return x


def _read_one(data: bytes) -> tuple[fastavro.reader, dict]:
    reader = fastavro.reader(io.BytesIO(data))
    records = list(reader)
    assert len(records) == 1
    return reader, records[0]


@pytest.fixture(scope="module")
def pool():
    return synthetic.cutout_pool(np.random.default_rng(5), n=8)


def _alert(version="4.02", seed=1, **kw):
    args = dict(object_id="ZTF18abcdefg", candid=595147624915010001, jd=2458349.6476, ra=10.5, dec=-20.25)
    args.update(kw)
    return synthetic.make_alert(np.random.default_rng(seed), version=version, **args)


# ---------------------------------------------------------------------------------------------- schemas


@pytest.mark.shared
@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_writer_schema_matches_real_packets(version):
    files = sorted((SHARED / f"v{version}").glob("*.avro"))
    if not files:
        pytest.skip("shared sample alerts absent")
    with files[0].open("rb") as f:
        real = json.loads(fastavro.reader(f).metadata["avro.schema"])
    mine = synthetic.writer_schema(version)
    # names, types, union order, defaults and even key order; only the docs' wording may differ
    assert json.dumps(_strip_docs(mine)) == json.dumps(_strip_docs(real))


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_writer_schema_shape(version):
    schema = synthetic.writer_schema(version)
    json.dumps(schema)
    fastavro.parse_schema(schema)
    assert schema["version"] == version
    names = [f["name"] for f in schema["fields"]]
    assert tuple(names) == TOP_FIELDS[version]
    assert ("schemavsn" in names) == (not version.startswith("1."))
    prv = next(f for f in schema["fields"] if f["name"] == "prv_candidates")["type"]
    science = next(f for f in schema["fields"] if f["name"] == "cutoutScience")["type"]
    if version.startswith("4."):
        assert schema["name"] == "ztf.alert" and prv[0] == "null" and science[0] == "null"
    else:
        assert (schema["name"], schema["namespace"]) == ("alert", "ztf")
        assert prv[1] == "null" and science[1] == "null"
    cutout = science[0] if isinstance(science[0], dict) else science[1]
    assert cutout["name"] == "cutout" and cutout["namespace"] == "ztf.alert"
    assert [f["name"] for f in cutout["fields"]] == ["fileName", "stampData"]


def test_writer_schema_rejects_unknown_version():
    with pytest.raises(ValueError, match="3.4"):
        synthetic.writer_schema("3.4")


# ---------------------------------------------------------------------------------------------- alerts


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_alert_roundtrips_through_fastavro(version, pool):
    record = _alert(version, cutout_pool=pool)
    data = synthetic.alert_bytes(record, version)
    reader, back = _read_one(data)
    assert back == record  # float fields are already float32-exact
    assert reader.codec == "null"
    assert json.loads(reader.metadata["avro.schema"]) == synthetic.writer_schema(version)
    # the hand-written encoder gives fastavro's own bytes
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(synthetic.writer_schema(version)), record)
    assert buf.getvalue() in data


def test_float_fields_come_back_float32_rounded():
    record = _alert(cutouts=False)
    record["candidate"]["magpsf"] = 18.1
    record["candidate"]["ra"] = 10.123456789012
    _, back = _read_one(synthetic.alert_bytes(record))
    assert back["candidate"]["magpsf"] == float(np.float32(18.1)) != 18.1
    assert back["candidate"]["ra"] == 10.123456789012  # double stays double


def test_alert_bytes_names_the_bad_field():
    record = _alert(cutouts=False)
    del record["candidate"]["magpsf"]
    with pytest.raises(ValueError, match=r"candidate\.magpsf"):
        synthetic.alert_bytes(record)
    record = _alert(cutouts=False)
    record["candidate"]["jd"] = None
    with pytest.raises(ValueError, match=r"candidate\.jd .*not nullable"):
        synthetic.alert_bytes(record)


def test_alert_values_are_realistic():
    jd = 2458349.6476
    rec = _alert("4.02", seed=3, jd=jd, n_prv=30, n_fp=12, cutouts=False)
    c = rec["candidate"]
    assert rec["schemavsn"] == "4.02" and rec["publisher"] == "ZTF (www.ztf.caltech.edu)"
    assert rec["candid"] == c["candid"] == 595147624915010001
    assert 15 <= c["magpsf"] <= 21 and 0 < c["sigmapsf"] < 1
    assert 0 <= c["rb"] <= 1 and 0 <= c["drb"] <= 1
    assert c["isdiffpos"] in ("t", "f") and c["programid"] == 1 and c["fid"] == 1
    assert c["nid"] == int(jd - NID_EPOCH_JD) == c["pid"] // 10**9
    assert c["pid"] % 100 == 15 and (c["pid"] // 100) % 100 == c["rcid"]
    assert abs(c["ranr"] - c["ra"]) < 5 / 3600 and abs(c["decnr"] - c["dec"]) < 5 / 3600
    assert abs(c["ra"] - 10.5) < 2 / 3600 and abs(c["dec"] + 20.25) < 2 / 3600
    assert c["ndethist"] >= 1 and c["jdendhist"] == jd
    prv = rec["prv_candidates"]
    assert len(prv) == 30
    assert all(jd - 30 < p["jd"] < jd for p in prv)
    assert [p["jd"] for p in prv] == sorted(p["jd"] for p in prv)
    detections = [p for p in prv if p["candid"] is not None]
    limits = [p for p in prv if p["candid"] is None]
    assert detections and limits
    for p in limits:
        assert p["ra"] is p["dec"] is p["magpsf"] is p["isdiffpos"] is None
        assert p["diffmaglim"] is not None and p["pid"] > 0
    for p in detections:
        assert abs(p["ra"] - 10.5) < 2 / 3600 and 15 <= p["magpsf"] <= 21
        assert p["candid"] // 10**6 == p["pid"]
    assert len({p["candid"] for p in detections}) == len(detections)
    assert len(rec["fp_hists"]) == 12
    assert all(jd - 30 < p["jd"] < jd for p in rec["fp_hists"])


def test_old_versions_have_no_fp_hists_and_no_header_fields():
    rec = _alert("1.8", cutouts=False)
    assert "schemavsn" not in rec and "fp_hists" not in rec
    assert _alert("3.3", cutouts=False).get("fp_hists", "absent") == "absent"
    assert _alert("4.01", cutouts=False)["fp_hists"]


def test_cutouts_are_gzipped_63x63_fits(pool):
    rec = _alert(cutout_pool=pool)
    assert (
        rec["cutoutScience"]["fileName"]
        == f"candid{rec['candid']}_pid{rec['candidate']['pid']}_targ_sci.fits.gz"
    )
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        stamp = rec[key]["stampData"]
        assert stamp[:2] == b"\x1f\x8b"
        raw = gzip.decompress(stamp)
        assert len(raw) == 20160  # one header block and six data blocks, as ZTF's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ZTF's SIMPLE card is not in fixed format: expected
            with fits.open(io.BytesIO(raw)) as hdul:
                data = hdul[0].data
                assert hdul[0].header["BUNIT"] == "DN"
        assert data.shape == (63, 63) and data.dtype.kind == "f" and data.dtype.itemsize == 4
    # float32 noise: gzip saves little, as on real cutouts (12-15 KB of 20 KB)
    sizes = [len(s) for triple in pool for s in triple]
    assert min(sizes) > 6000 and max(sizes) < 17000
    assert len(gzip.compress(pool[0][0])) > 0.95 * len(pool[0][0])


def test_some_templates_have_nan_pixels():
    triples = synthetic.cutout_pool(np.random.default_rng(0), n=40)
    nans = []
    for _, template, science in ((t[0], t[1], t[0]) for t in triples):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nans.append(np.isnan(fits.getdata(io.BytesIO(gzip.decompress(template)))).any())
            assert not np.isnan(fits.getdata(io.BytesIO(gzip.decompress(science)))).any()
    assert 0 < sum(nans) < len(nans)


# ---------------------------------------------------------------------------------------------- nights


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(path, "r|gz") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            out.append((m, f.read() if f else None))
    return out


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    path = tmp_path_factory.mktemp("night") / "ztf_public_20180819.tar.gz"
    return synthetic.make_night(path, night="20180819", n_alerts=60, alerts_per_object=3, seed=7)


def test_night_members_decode_to_the_records_written(night):
    members = _members(night.path)
    assert [m.name for m, _ in members] == [f"{c}.avro" for c in night.candids] == night.members
    assert len(night.candids) == len(set(night.candids)) == 60
    for m, data in members:
        assert m.isfile() and m.size == len(data)
        _, back = _read_one(data)
        assert back == night.records[back["candid"]]
        assert f"{back['candid']}.avro" == m.name
    raw = night.path.read_bytes()
    assert night.size == len(raw) and night.md5 == hashlib.md5(raw).hexdigest()


def test_night_ids_look_like_ztf(night):
    assert all(re.fullmatch(r"ZTF1[78][a-z]{7}", oid) for oid in night.object_ids)
    assert len(set(night.object_ids)) == len(night.object_ids)
    nid = int(2458349.5 - NID_EPOCH_JD)
    for c in night.candids:
        assert 10**17 < c < 2**63 and c // 10**15 == nid  # 595xxxxxxxxxxxxxxx as on 2018-08-19
        rec = night.records[c]
        assert 2458349.5 < rec["candidate"]["jd"] < 2458350.5
        assert rec["candidate"]["candid"] // 10**6 == rec["candidate"]["pid"]


def test_alerts_of_an_object_repeat_their_light_curve(night):
    multi = {o: cs for o, cs in night.alerts_by_object.items() if len(cs) >= 2}
    assert multi
    saw_last_digit_difference = False
    for oid, candids in multi.items():
        recs = [night.records[c] for c in candids]
        assert {r["objectId"] for r in recs} == {oid}
        jds = [r["candidate"]["jd"] for r in recs]
        assert jds == sorted(jds) and len(set(jds)) == len(jds)
        ras = [r["candidate"]["ra"] for r in recs]
        decs = [r["candidate"]["dec"] for r in recs]
        assert max(ras) - min(ras) < 3 / 3600 and max(decs) - min(decs) < 1 / 3600  # one position
        first, last = recs[0], recs[-1]
        later_prv = {p["candid"]: p for p in last["prv_candidates"] if p["candid"]}
        # the earlier alert's own detection and its detections reappear in the later alert
        assert first["candid"] in later_prv
        assert all(c not in later_prv for c in [last["candid"]])
        for p in first["prv_candidates"]:
            q = later_prv.get(p["candid"]) if p["candid"] else None
            if q is None:
                continue
            assert q["jd"] == p["jd"] and q["fid"] == p["fid"]
            assert q["magpsf"] == pytest.approx(p["magpsf"], abs=1e-5)
            saw_last_digit_difference |= q["magpsf"] != p["magpsf"]
        limits_first = {(p["jd"], p["fid"], p["pid"]) for p in first["prv_candidates"] if p["candid"] is None}
        limits_last = {(p["jd"], p["fid"], p["pid"]) for p in last["prv_candidates"] if p["candid"] is None}
        assert limits_first <= limits_last | {k for k in limits_first if k[0] <= jds[-1] - 30}
    assert saw_last_digit_difference


def test_nested_night_with_extra_members(tmp_path):
    extras = [("../evil.avro", b"not avro"), ("README.txt", b"hello"), ("999.avro", b"Obj\x01broken")]
    spec = synthetic.make_night(
        tmp_path / "n.tar.gz", n_alerts=5, nested="ztf_public_20180819", cutouts=False, extra_members=extras
    )
    members = _members(spec.path)
    names = [m.name for m, _ in members]
    assert members[0][0].isdir() and names[0] == "ztf_public_20180819"
    assert names[1:6] == [f"ztf_public_20180819/{c}.avro" for c in spec.candids]
    assert names[6:] == [n for n, _ in extras] and [d for _, d in members[6:]] == [d for _, d in extras]
    for _, data in members[1:6]:
        _, rec = _read_one(data)
        assert rec["cutoutScience"] is None


def test_empty_night_is_a_tiny_valid_tarball(tmp_path):
    spec = synthetic.make_night(tmp_path / "empty.tar.gz", n_alerts=0)
    assert spec.candids == [] and spec.object_ids == []
    assert 20 < spec.size <= 100
    assert len(gzip.decompress(spec.path.read_bytes())) % 512 == 0
    assert _members(spec.path) == []


def test_mixed_versions_in_one_night(tmp_path):
    spec = synthetic.make_night(tmp_path / "m.tar.gz", n_alerts=40, version=("3.3", "4.02"), cutouts=False)
    assert set(spec.versions.values()) == {"3.3", "4.02"}
    for _, data in _members(spec.path):
        reader, rec = _read_one(data)
        assert reader.writer_schema["version"] == spec.versions[rec["candid"]] == rec["schemavsn"]
        assert ("fp_hists" in rec) == (rec["schemavsn"] == "4.02")


def test_records_regenerate_when_not_kept(tmp_path):
    kept = synthetic.make_night(tmp_path / "a.tar.gz", n_alerts=25, seed=3)
    lean = synthetic.make_night(tmp_path / "b.tar.gz", n_alerts=25, seed=3, keep_records=False)
    assert lean.records == {} and lean.candids == kept.candids
    members = dict((m.name, d) for m, d in _members(lean.path))
    for c in lean.candids[::4]:
        assert lean.record(c) == kept.records[c] == _read_one(members[f"{c}.avro"])[1]
    with pytest.raises(KeyError):
        lean.record(1)
    # same seed, same packets: only the gzip header's timestamp may differ
    assert gzip.decompress(kept.path.read_bytes()) == gzip.decompress(lean.path.read_bytes())


def test_make_archive_writes_md5sums(tmp_path):
    root = synthetic.make_archive(tmp_path / "archive", cutouts=False)
    lines = (root / "MD5SUMS").read_text().splitlines()
    assert len(lines) == 3
    sizes = []
    for line in lines:
        digest, name = re.fullmatch(r"([0-9a-f]{32})  (ztf_public_\d{8}\.tar\.gz)", line).groups()
        data = (root / name).read_bytes()
        assert hashlib.md5(data).hexdigest() == digest
        sizes.append(len(data))
    assert min(sizes) <= 100 < max(sizes)  # one empty night among them


def test_realistic_night_size_ratio_and_speed(tmp_path):
    n = 2000
    t0 = time.perf_counter()
    spec = synthetic.make_night(tmp_path / "big.tar.gz", n_alerts=n, keep_records=False)
    elapsed = time.perf_counter() - t0
    print(
        f"\nsynthetic: {n} alerts in {elapsed:.2f} s ({n / elapsed:.0f} alerts/s), {spec.size / 1e6:.1f} MB"
    )
    total = 0
    with tarfile.open(spec.path, "r|gz") as tar:
        for m in tar:
            total += m.size
    mean = total / n
    ratio = total / spec.size
    print(f"synthetic: mean member {mean / 1e3:.1f} KB, tar.gz ratio {ratio:.3f}")
    assert 60_000 <= mean <= 80_000
    assert 1.3 <= ratio <= 1.6
    # one gzip member, as `gzip` writes: a plain zlib stream reader sees the whole tarball
    inflater = zlib.decompressobj(31)
    with spec.path.open("rb") as f:
        while chunk := f.read(1 << 20):
            inflater.decompress(chunk, 0)
    assert inflater.eof and inflater.unused_data == b""


def test_command_line_entry(tmp_path):
    out = tmp_path / "cli.tar.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ztfcat.testing.synthetic",
            str(out),
            "--alerts",
            "12",
            "--version",
            "3.3",
            "--no-cutouts",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "12 alerts" in proc.stdout
    members = _members(out)
    assert len(members) == 12
    assert all(_read_one(d)[1]["schemavsn"] == "3.3" for _, d in members)
