"""Light curves: every point once, whatever the overlaps, in the shape plot_lightcurve draws."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import fastavro
import numpy as np
import pytest

from ztfcat.errors import NotFoundError
from ztfcat.plotting import plot_lightcurve
from ztfcat.store.lightcurve import LIGHTCURVE_COLUMNS, lightcurve
from ztfcat.testing.synthetic import make_alert, writer_schema

OBJ, OTHER = "ZTF20aaaaaaa", "ZTF20aaaaaab"
RA, DEC = 10.0, 20.0
SCHEMA = fastavro.parse_schema(writer_schema("4.02"))

# Natural keys of the hand-built history of OBJ: detections by candid, upper limits by (pid, fid).
D0 = dict(candid=1091200000015010001, jd=2458840.70, fid=1, pid=1091200000015, magpsf=18.5)
C1 = dict(candid=1108100000015010001, jd=2458849.81, fid=1, pid=1108100000015, magpsf=18.25)
C2 = dict(candid=1109100000015010002, jd=2458850.81, fid=2, pid=1109100000015, magpsf=18.0)
C3 = dict(candid=1109200000015010003, jd=2458850.92, fid=1, pid=1109200000015, magpsf=17.875)
U0 = dict(jd=2458841.70, fid=2, pid=1092200000015, diffmaglim=19.75)
U1 = dict(jd=2458848.70, fid=1, pid=1099200000015, diffmaglim=20.25)
F0 = dict(jd=2458840.70, fid=1, pid=1091200000015, forcediffimflux=1000.0)
F0_REVISED = dict(F0, forcediffimflux=1500.0)
F1 = dict(jd=2458845.70, fid=2, pid=1096200000015, forcediffimflux=300.0)


def _templates() -> tuple[dict, dict, dict, dict]:
    """A full 4.02 record and one detection, upper limit and forced point of it, to edit by hand."""
    rng = np.random.default_rng(7)
    record = make_alert(
        rng, object_id=OBJ, candid=C1["candid"], jd=C1["jd"], ra=RA, dec=DEC, n_prv=12, n_fp=2, cutouts=False
    )
    prv = record["prv_candidates"]
    detection = next(p for p in prv if p["candid"] is not None)
    limit = next(p for p in prv if p["candid"] is None)
    return record, detection, limit, record["fp_hists"][0]


RECORD, DETECTION, LIMIT, FORCED = _templates()


def _nudge(value: float, steps: int) -> float:
    """``value`` moved by ``steps`` float32 units in the last place, as successive alerts differ."""
    out = np.float32(value)
    for _ in range(steps):
        out = np.nextafter(out, np.float32(np.inf))
    return float(out)


def detection(point: dict, nudge: int = 0) -> dict:
    out = dict(DETECTION, **point, isdiffpos="t", sigmapsf=0.05, ra=RA, dec=DEC)
    out["magpsf"] = _nudge(point["magpsf"], nudge)
    out["diffmaglim"] = _nudge(20.5, nudge)
    return out


def upper_limit(point: dict, nudge: int = 0) -> dict:
    return dict(LIMIT, **point, candid=None) | {"diffmaglim": _nudge(point["diffmaglim"], nudge)}


def forced(point: dict) -> dict:
    return dict(FORCED, **point, forcediffimfluxunc=50.0, magzpsci=26.0, procstatus="0")


def alert(object_id: str, trigger: dict, prv: list[dict] | None, fp: list[dict] | None) -> bytes:
    record = dict(RECORD, objectId=object_id, candid=trigger["candid"], prv_candidates=prv, fp_hists=fp)
    record["candidate"] = dict(RECORD["candidate"], **trigger, isdiffpos="t", sigmapsf=0.05, ra=RA, dec=DEC)
    if object_id != OBJ:
        record["candidate"].update(ra=RA + 1.0, dec=DEC)
    buffer = io.BytesIO()
    fastavro.writer(buffer, SCHEMA, [record])
    return buffer.getvalue()


def night(path: Path, packets: list[bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for data in packets:
            candid = next(fastavro.reader(io.BytesIO(data)))["candid"]
            info = tarfile.TarInfo(f"{candid}.avro")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def nights(tmp_path: Path) -> tuple[Path, Path]:
    """Night 1: OBJ's first alert and OTHER's only one; night 2: two later alerts of OBJ.

    The later alerts repeat the earlier points with last-digit float differences, carry the earlier
    alerts' triggering candidates as prv_candidates and revise a forced-photometry point.
    """
    trigger_b = dict(candid=1108100000015010009, jd=2458849.81, fid=2, pid=1108100000015, magpsf=19.5)
    first = [
        alert(OBJ, C1, [detection(D0), upper_limit(U0)], [forced(F0)]),
        alert(OTHER, trigger_b, None, None),
    ]
    second = [
        alert(OBJ, C2, [detection(D0, 1), upper_limit(U0, 1), detection(C1, 1)], [forced(F0)]),
        alert(
            OBJ,
            C3,
            [detection(D0, 2), upper_limit(U0, 2), detection(C1, 2), upper_limit(U1), detection(C2, 1)],
            [forced(F0_REVISED), forced(F1)],
        ),
    ]
    return (
        night(tmp_path / "ztf_public_20200101.tar.gz", first),
        night(tmp_path / "ztf_public_20200102.tar.gz", second),
    )


def check_object_lightcurve(table) -> None:
    assert table.colnames == list(LIGHTCURVE_COLUMNS)
    assert table.meta["objectId"] == OBJ
    assert Counter(zip(table["kind"], table["band"], strict=True)) == {
        ("detection", "g"): 3,
        ("detection", "r"): 1,
        ("upper_limit", "g"): 1,
        ("upper_limit", "r"): 1,
        ("forced", "g"): 1,
        ("forced", "r"): 1,
    }
    assert list(table["jd"]) == sorted(table["jd"])
    # Same jd: the detection comes before the forced point of the same image.
    assert list(table["kind"][:2]) == ["detection", "forced"]
    np.testing.assert_allclose(table["mjd"], table["jd"] - 2400000.5)
    assert np.all(table["upper_limit"] == (table["kind"] == "upper_limit"))

    det = table[table["kind"] == "detection"]
    assert sorted(det["candid"]) == sorted(p["candid"] for p in (D0, C1, C2, C3))
    for point in (D0, C1, C2, C3):
        (row,) = det[det["candid"] == point["candid"]]
        assert row["magpsf"] == pytest.approx(point["magpsf"], abs=1e-5)
        assert row["fid"] == point["fid"]
    # The newest alert's own candidate, which no prv_candidates list carries, is there.
    assert C3["candid"] in det["candid"]
    assert det["isdiffpos"].tolist() == ["t"] * 4

    limits = table[table["kind"] == "upper_limit"]
    assert sorted(zip(limits["pid"], limits["fid"], strict=True)) == sorted(
        (p["pid"], p["fid"]) for p in (U0, U1)
    )
    assert limits["candid"].mask.all() and limits["magpsf"].mask.all()
    for point in (U0, U1):
        (row,) = limits[limits["pid"] == point["pid"]]
        assert row["diffmaglim"] == pytest.approx(point["diffmaglim"], abs=1e-5)

    fp = table[table["kind"] == "forced"]
    assert sorted(zip(fp["pid"], fp["fid"], strict=True)) == sorted((p["pid"], p["fid"]) for p in (F0, F1))
    # The revised forced point has the newest alert's value.
    (row,) = fp[fp["pid"] == F0["pid"]]
    assert row["forcediffimflux"] == 1500.0
    assert row["alert_candid"] == C3["candid"]
    assert fp["magpsf"].mask.all() and fp["candid"].mask.all()
    assert list(fp["magzpsci"]) == [26.0, 26.0]
    assert list(fp["forcediffimfluxunc"]) == [50.0, 50.0]


@pytest.mark.parametrize("order", ["in order", "newest night first"])
def test_lightcurve_has_each_point_once(catalog, tmp_path: Path, order: str) -> None:
    first, second = nights(tmp_path)
    for path in (first, second) if order == "in order" else (second, first):
        catalog.ingest(path)
    table = lightcurve(catalog.engine, OBJ)
    check_object_lightcurve(table)

    only_points = lightcurve(catalog.engine, OBJ, forced=False)
    assert set(only_points["kind"]) == {"detection", "upper_limit"}
    assert len(only_points) == len(table) - 2


def test_lightcurve_of_an_alert_without_history_and_unknown_object(catalog, tmp_path: Path) -> None:
    catalog.ingest(nights(tmp_path)[0])
    table = lightcurve(catalog.engine, OTHER)
    assert list(table["kind"]) == ["detection"]
    assert list(table["candid"]) == [1108100000015010009]
    assert list(table["band"]) == ["r"]
    assert table["magpsf"][0] == pytest.approx(19.5)

    with pytest.raises(NotFoundError, match="ZTF99zzzzzzz"):
        lightcurve(catalog.engine, "ZTF99zzzzzzz")


def test_plot_of_the_lightcurve_holds_every_point(catalog, tmp_path: Path) -> None:
    for path in nights(tmp_path):
        catalog.ingest(path)
    table = lightcurve(catalog.engine, OBJ)
    fig = plot_lightcurve(table)
    ax = fig.axes[0]
    assert ax.get_title() == OBJ
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    assert set(lines) == {
        "g:detection",
        "r:detection",
        "g:upper_limit",
        "r:upper_limit",
        "g:forced",
        "r:forced",
    }
    for gid, line in lines.items():
        band, kind = gid.split(":")
        rows = table[(table["band"] == band) & (table["kind"] == kind)]
        np.testing.assert_allclose(sorted(line.get_xdata()), sorted(rows["mjd"]))
        if kind == "detection":
            np.testing.assert_allclose(sorted(line.get_ydata()), sorted(rows["magpsf"]))
        if kind == "upper_limit":
            np.testing.assert_allclose(line.get_ydata(), rows["diffmaglim"])
        if kind == "forced":
            expected = rows["magzpsci"] - 2.5 * np.log10(rows["forcediffimflux"])
            np.testing.assert_allclose(line.get_ydata(), expected)


def test_lightcurve_of_a_real_alert_matches_its_packet(catalog, tmp_path: Path, shared_alerts: Path) -> None:
    path = shared_alerts / "alerts" / "v4.02" / "2752190655615010016.avro"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    data = path.read_bytes()
    packet = next(fastavro.reader(io.BytesIO(data)))
    catalog.ingest(night(tmp_path / "ztf_public_20240711.tar.gz", [data]))

    table = lightcurve(catalog.engine, packet["objectId"])
    prv = packet["prv_candidates"]
    expected = Counter(("detection" if p["candid"] else "upper_limit", p["fid"]) for p in prv)
    expected[("detection", packet["candidate"]["fid"])] += 1
    expected.update(("forced", p["fid"]) for p in packet["fp_hists"])
    assert Counter(zip(table["kind"], table["fid"], strict=True)) == expected
    assert packet["candid"] in table["candid"]
    newest = table[np.argmax(table["jd"])]
    assert newest["candid"] == packet["candid"]
    assert newest["magpsf"] == pytest.approx(packet["candidate"]["magpsf"])
