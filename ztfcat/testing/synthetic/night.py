"""Nightly tarballs and whole archives of synthetic alerts, streamed to disk in bounded memory, and the
``python -m ztfcat.testing.synthetic`` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ztfcat.store.fields import TOP_FIELDS, VERSION_FIELDS

from .alerts import (
    STRINGS,
    Draws,
    alert_pid,
    assemble,
    candidate_values,
    fp_history,
    jd_datetime,
    jitter,
    new_object,
    prv_history,
)
from .cutouts import cutout_pool
from .encode import alert_bytes
from .schema import check_version, field_type

PUBLISHER = "ZTF (www.ztf.caltech.edu)"
CUTOUT_SIZE = 63
#: JD of 2017-01-01T00:00 UTC: ZTF's night id (``nid``) counts days from it.
_NID_EPOCH_JD = 2457754.5
_UNIX_EPOCH_JD = 2440587.5
_PRV_WINDOW_DAYS = 30.0
_BAND = {1: "g", 2: "r", 3: "i"}


# --------------------------------------------------------------------------------------------------------
# Nights
# --------------------------------------------------------------------------------------------------------


@dataclass
class NightSpec:
    """What :func:`make_night` wrote, for tests to compare the catalog's view against.

    Attributes
    ----------
    path : Path
        The ``.tar.gz`` written.
    night : str
        ``YYYYMMDD``.
    candids : list of int
        Candids in member order.
    object_ids : list of str
        Distinct objectIds, in order of first alert.
    alerts_by_object : dict
        objectId -> its candids, oldest first.
    versions : dict
        candid -> schema version of its packet.
    md5 : str
        Hex MD5 of the file, as ``MD5SUMS`` would list it.
    size : int
        File size in bytes.
    members : list of str
        Every member name in order (directory, alerts, extra members).
    records : dict
        candid -> the record written (empty when ``keep_records`` was False; see :meth:`record`).
    """

    path: Path
    night: str
    candids: list[int]
    object_ids: list[str]
    alerts_by_object: dict[str, list[int]]
    versions: dict[int, str]
    md5: str
    size: int
    members: list[str]
    records: dict[int, dict] = field(default_factory=dict, repr=False)
    _plan: _NightPlan | None = field(default=None, repr=False)

    @property
    def n_alerts(self) -> int:
        """Number of alert packets in the night."""
        return len(self.candids)

    def record(self, candid: int) -> dict:
        """The record written under ``candid``, regenerated when the night was made without records."""
        if candid in self.records:
            return self.records[candid]
        if self._plan is None or candid not in self.versions:
            raise KeyError(f"candid {candid} is not in synthetic night {self.night}")
        for c, _version, rec in self._plan.object_records(self._plan.object_of[candid]):
            if c == candid:
                return rec
        raise KeyError(candid)  # pragma: no cover


def _object_ids(rng: np.random.Generator, n: int, year: int) -> list[str]:
    codes = rng.choice(26**6, size=n, replace=False)
    out = []
    for code in codes.tolist():
        letters = []
        for _ in range(6):
            code, r = divmod(code, 26)
            letters.append(chr(97 + r))
        out.append(f"ZTF{year % 100:02d}a{''.join(reversed(letters))}")
    return out


@dataclass
class _NightPlan:
    """The small arrays that fix every alert of a night, so any object's alerts can be remade alone."""

    night: str
    seed: int
    versions: tuple[str, ...]
    n_prv: int
    n_fp: int
    cutouts: bool
    object_ids: list[str]
    ra: np.ndarray
    dec: np.ndarray
    rcid: np.ndarray
    alert_obj: np.ndarray  # object index per alert, alerts sorted by (object, jd)
    alert_jd: np.ndarray
    alert_fid: np.ndarray
    alert_version: np.ndarray
    alert_candid: np.ndarray
    obj_start: np.ndarray  # first alert index of each object
    object_of: dict[int, int] = field(default_factory=dict)
    _pool: list[tuple[bytes, bytes, bytes]] | None = None

    def pool(self) -> list[tuple[bytes, bytes, bytes]]:
        if self._pool is None:
            self._pool = _shared_pool(self.seed) if self.cutouts else []
        return self._pool

    def object_records(
        self, k: int, cache: dict[int, tuple[Any, bytes]] | None = None
    ) -> Iterable[tuple[int, str, dict[str, Any]]]:
        """Every alert of object ``k`` as (candid, version, record), oldest first.

        Each later alert's ``prv_candidates`` repeat the points of the earlier ones (the same dicts, so
        ``cache`` can reuse their encoding, or jittered copies with last-digit differences).
        """
        first, last = int(self.obj_start[k]), int(self.obj_start[k + 1])
        jd0 = float(self.alert_jd[first])
        obj = new_object(
            np.random.default_rng([self.seed, 1, k]),
            self.object_ids[k],
            float(self.ra[k]),
            float(self.dec[k]),
            jd0,
        )
        obj.rcid = int(self.rcid[k])
        pool = self.pool()
        history: dict[str, list[dict]] = {}
        fp_hist: dict[str, list[dict]] = {}
        earlier: list[dict[str, Any]] = []  # candidates of this object's earlier alerts tonight
        as_prv: dict[tuple[int, str], dict[str, Any]] = {}
        for i in range(first, last):
            version = self.versions[int(self.alert_version[i])]
            if version not in history:
                # the same seed for every version: one light curve, whatever encoding carries it
                hrng = np.random.default_rng([self.seed, 2, k])
                history[version] = prv_history(hrng, version, obj, jd0, self.n_prv)
                has_fp = "fp_hists" in TOP_FIELDS[version]
                fp_hist[version] = fp_history(hrng, version, obj, jd0, self.n_fp) if has_fp else []
            jd, fid, candid = float(self.alert_jd[i]), int(self.alert_fid[i]), int(self.alert_candid[i])
            arng = np.random.default_rng([self.seed, 3, i])
            d = Draws(arng)
            n_det = obj.ndethist0 + sum(1 for p in history[version] if p.get("candid")) + len(earlier) + 1
            candidate = candidate_values(arng, version, obj, jd, fid, candid, n_det)
            prv = [
                (jitter(d, p) if d.random() < 0.2 else p)
                for p in history[version]
                if p["jd"] > jd - _PRV_WINDOW_DAYS
            ]
            for j, cand in enumerate(earlier):
                point = as_prv.get((j, version))
                if point is None:
                    point = as_prv[(j, version)] = _candidate_as_prv(cand, version)
                prv.append(jitter(d, point) if d.random() < 0.5 else point)
            fp = None
            if "fp_hists" in TOP_FIELDS[version]:
                fp = [p for p in fp_hist[version] if p["jd"] > jd - _PRV_WINDOW_DAYS]
            triple = pool[int(arng.integers(len(pool)))] if pool else None
            earlier.append(candidate)
            yield candid, version, assemble(version, obj.object_id, candidate, prv, fp, triple)


def _candidate_as_prv(candidate: Mapping[str, Any], version: str) -> dict[str, Any]:
    """An earlier alert's candidate as a later alert lists it among its prv_candidates."""
    point = {name: candidate.get(name) for name in VERSION_FIELDS["prv_candidate"][version]}
    if "pdiffimfilename" in point and point["pdiffimfilename"]:
        when = jd_datetime(candidate["jd"])
        frac = point["pdiffimfilename"].split("_")[1][8:]
        point["pdiffimfilename"] = f"/ztf/archive/sci/{when:%Y/%m%d}/{frac}/{point['pdiffimfilename']}.fz"
    return _fill_missing(point, version)


def _fill_missing(point: dict[str, Any], version: str) -> dict[str, Any]:
    """Give fields a prv point lacks (e.g. rbversion when copied across versions) a schema-valid value."""
    for name, v in point.items():
        if v is None:
            avro_type, nullable = field_type("prv_candidate", name, version)
            if not nullable:
                point[name] = STRINGS.get(name, "") if avro_type == "string" else 0
    return point


@cache
def _shared_pool(seed: int, n: int = 64) -> list[tuple[bytes, bytes, bytes]]:
    return cutout_pool(np.random.default_rng([seed, 0]), n)


def _night_jd0(night: str) -> float:
    try:
        day = dt.datetime.strptime(night, "%Y%m%d")
    except ValueError as exc:
        raise ValueError(f"night must be YYYYMMDD, got {night!r}") from exc
    return (day - dt.datetime(1970, 1, 1)).total_seconds() / 86400.0 + _UNIX_EPOCH_JD


def _plan_night(
    night: str,
    n_alerts: int,
    alerts_per_object: float,
    versions: tuple[str, ...],
    seed: int,
    cutouts: bool,
    n_prv: int,
    n_fp: int,
) -> _NightPlan:
    if alerts_per_object < 1:
        raise ValueError(f"alerts_per_object must be at least 1, got {alerts_per_object}")
    jd0 = _night_jd0(night)
    rng = np.random.default_rng([seed, 9])
    n_obj = max(1, round(n_alerts / alerts_per_object)) if n_alerts else 0
    counts = 1 + rng.poisson(alerts_per_object - 1, n_obj)
    diff = n_alerts - int(counts.sum())
    while diff != 0:
        idx = rng.integers(0, n_obj, abs(diff))
        if diff > 0:
            np.add.at(counts, idx, 1)
        else:
            for i in idx.tolist():
                if counts[i] > 1:
                    counts[i] -= 1
        diff = n_alerts - int(counts.sum())
    # exposures every ~40 s through the Palomar night (03:00-11:30 UT)
    grid = np.round(jd0 + 0.125 + np.arange(0, 0.35, 40 / 86400), 7)
    alert_obj = np.repeat(np.arange(n_obj), counts)
    alert_jd = np.empty(n_alerts)
    start = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    for k in range(n_obj):
        c = int(counts[k])
        picks = np.sort(rng.choice(len(grid), size=min(c, len(grid)), replace=c > len(grid)))
        alert_jd[start[k] : start[k + 1]] = grid[picks]
    alert_fid = rng.choice((1, 2), n_alerts, p=(0.45, 0.55))
    alert_version = rng.integers(0, len(versions), n_alerts)
    ra = np.round(rng.uniform(0, 360, n_obj), 7)
    dec = np.round(np.degrees(np.arcsin(rng.uniform(-0.5, 1.0, n_obj))), 7)  # ZTF sees north of -30
    rcid = rng.integers(0, 64, n_obj)
    year = int(night[:4])
    object_ids = _object_ids(rng, n_obj, max(year - int(rng.integers(0, 2)), 2017) if n_obj else year)
    # candid = pid * 10**6 + 10000 + serial within the exposure-and-channel, unique over the night
    pids = [
        alert_pid(float(j), int(rcid[o])) for j, o in zip(alert_jd.tolist(), alert_obj.tolist(), strict=True)
    ]
    serial: dict[int, int] = {}
    candids = np.empty(n_alerts, dtype=np.int64)
    for i, pid in enumerate(pids):
        s = serial.get(pid, 0)
        serial[pid] = s + 1
        candids[i] = pid * 1_000_000 + 10_000 + (5_000 if s % 7 == 3 else 0) + s
    plan = _NightPlan(
        night=night,
        seed=seed,
        versions=versions,
        n_prv=n_prv,
        n_fp=n_fp,
        cutouts=cutouts,
        object_ids=object_ids,
        ra=ra,
        dec=dec,
        rcid=rcid,
        alert_obj=alert_obj,
        alert_jd=alert_jd,
        alert_fid=alert_fid,
        alert_version=alert_version,
        alert_candid=candids,
        obj_start=start,
    )
    plan.object_of = dict(zip(candids.tolist(), alert_obj.tolist(), strict=True))
    return plan


class _HashingWriter:
    """A write-only file that passes bytes on while counting and hashing them (one pass over the data)."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self.raw = raw
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, b: bytes) -> int:
        self.md5.update(b)
        self.size += len(b)
        return self.raw.write(b)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # the caller closes the real file
        self.flush()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def writable(self) -> bool:
        return True


def _tarinfo(name: str, size: int, mtime: float, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = int(mtime)
    info.mode = 0o755 if directory else 0o744
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _gzip_writer(sink: _HashingWriter, threads: bool) -> Any:
    try:
        from isal import igzip_threaded
    except ImportError:  # pragma: no cover - isal is a dependency, zlib is the slow fallback
        return gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0)  # type: ignore[arg-type]
    # isal deflates ~5x faster than zlib and, threaded, overlaps compression with generation
    return igzip_threaded.open(sink, "wb", compresslevel=3, threads=1 if threads else 0)


def make_night(
    path: str | Path,
    *,
    night: str = "20180819",
    n_alerts: int = 100,
    alerts_per_object: float = 2.5,
    version: str | Sequence[str] = "4.02",
    nested: str | None = None,
    seed: int = 0,
    cutouts: bool = True,
    extra_members: Sequence[tuple[str, bytes]] = (),
    keep_records: bool = True,
    n_prv: int = 15,
    n_fp: int = 10,
    chunk_objects: int = 128,
) -> NightSpec:
    """Write a synthetic ``ztf_public_YYYYMMDD.tar.gz``-style night, streamed to disk.

    Objects get about ``alerts_per_object`` alerts each, at increasing jd through the night, and the
    ``prv_candidates`` of each later alert repeat the earlier points (sometimes with last-digit float
    differences, as real data has), which is what light-curve deduplication must cope with.  Members are
    ``<candid>.avro`` at the top level, or under the directory ``nested`` (with its directory member);
    objects are written in groups of ``chunk_objects``, their alerts in time order within a group, so
    memory stays bounded whatever ``n_alerts``.  ``n_alerts=0`` writes a real empty night.

    Parameters
    ----------
    path : str or Path
        File to write.
    night : str
        ``YYYYMMDD`` (UTC date of the night); sets every jd, pid and candid.
    n_alerts : int
        Number of alert packets.
    alerts_per_object : float
        Mean alerts per object (at least 1).
    version : str or sequence of str
        Schema version, or versions mixed at random over the alerts.
    nested : str, optional
        Directory to put the members under, as some real nights extract.
    seed : int
        Same seed, same content.
    cutouts : bool
        False writes null cutouts (small packets).
    extra_members : sequence of (name, bytes)
        Appended as-is after the alerts: damaged packets, non-avro files, hostile names.
    keep_records : bool
        Keep every record in :attr:`NightSpec.records`; benchmarks pass False (records can still be
        regenerated one object at a time by :meth:`NightSpec.record`).
    n_prv, n_fp : int
        Light-curve and forced-photometry points before the night, per object.
    chunk_objects : int
        Objects generated and interleaved at a time.

    Returns
    -------
    NightSpec
    """
    versions = (version,) if isinstance(version, str) else tuple(version)
    if not versions:
        raise ValueError("version must name at least one schema version")
    for v in versions:
        check_version(v)
    path = Path(path)
    plan = _plan_night(night, n_alerts, alerts_per_object, versions, seed, cutouts, n_prv, n_fp)
    prefix = f"{nested.strip('/')}/" if nested else ""
    candids: list[int] = []
    members: list[str] = []
    records: dict[int, dict] = {}
    by_object: dict[str, list[int]] = {}
    version_of: dict[int, str] = {}
    night_mtime = (_night_jd0(night) - _UNIX_EPOCH_JD) * 86400 + 8 * 3600
    with path.open("wb") as raw:
        sink = _HashingWriter(raw)
        gz = _gzip_writer(sink, threads=n_alerts > 200)
        with gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            if nested:
                tar.addfile(_tarinfo(prefix.rstrip("/"), 0, night_mtime, directory=True))
                members.append(prefix.rstrip("/"))
            n_obj = len(plan.object_ids)
            for lo in range(0, n_obj, chunk_objects):
                batch: list[tuple[float, int, bytes]] = []
                for k in range(lo, min(lo + chunk_objects, n_obj)):
                    cache: dict[int, tuple[Any, bytes]] = {}
                    oid = plan.object_ids[k]
                    for candid, v, rec in plan.object_records(k, cache):
                        by_object.setdefault(oid, []).append(candid)
                        version_of[candid] = v
                        batch.append((rec["candidate"]["jd"], candid, alert_bytes(rec, v, _cache=cache)))
                        if keep_records:
                            records[candid] = rec
                batch.sort(key=lambda t: (t[0], t[1]))
                for jd, candid, data in batch:
                    name = f"{prefix}{candid}.avro"
                    tar.addfile(_tarinfo(name, len(data), (jd - _UNIX_EPOCH_JD) * 86400), io.BytesIO(data))
                    candids.append(candid)
                    members.append(name)
            for name, data in extra_members:
                tar.addfile(_tarinfo(name, len(data), night_mtime), io.BytesIO(data))
                members.append(name)
    return NightSpec(
        path=path,
        night=night,
        candids=candids,
        object_ids=list(by_object),
        alerts_by_object=by_object,
        versions=version_of,
        md5=sink.md5.hexdigest(),
        size=sink.size,
        members=members,
        records=records,
        _plan=plan,
    )


DEFAULT_ARCHIVE_NIGHTS: tuple[tuple[str, int], ...] = (("20180601", 12), ("20180602", 0), ("20180603", 20))


def make_archive(
    root: str | Path,
    nights: Sequence[str | tuple[str, int]] = DEFAULT_ARCHIVE_NIGHTS,
    *,
    n_alerts: int = 20,
    seed: int = 0,
    version: str | Sequence[str] = "4.02",
    cutouts: bool = True,
) -> Path:
    """Write a folder shaped like the public archive: ``ztf_public_<night>.tar.gz`` files and ``MD5SUMS``.

    Parameters
    ----------
    root : str or Path
        Folder to fill (made if missing).
    nights : sequence
        Nights as ``"YYYYMMDD"`` (``n_alerts`` alerts) or ``("YYYYMMDD", n)``; the default has an empty
        night between two others, as the real archive does.
    n_alerts, seed, version, cutouts
        As for :func:`make_night`; each night gets its own seed derived from ``seed``.

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, item in enumerate(nights):
        night, count = (item, n_alerts) if isinstance(item, str) else item
        name = f"ztf_public_{night}.tar.gz"
        spec = make_night(
            root / name,
            night=night,
            n_alerts=count,
            version=version,
            seed=seed * 1000 + i,
            cutouts=cutouts,
            keep_records=False,
        )
        lines.append(f"{spec.md5}  {name}\n")
    (root / "MD5SUMS").write_text("".join(lines))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ztfcat.testing.synthetic", description="Write a synthetic ZTF nightly alert tarball."
    )
    parser.add_argument("out", type=Path, help="the .tar.gz to write")
    parser.add_argument("--alerts", type=int, default=1000, help="number of alerts (default 1000)")
    parser.add_argument("--version", action="append", help="schema version; repeat to mix (default 4.02)")
    parser.add_argument("--night", default="20180819", help="YYYYMMDD (default 20180819)")
    parser.add_argument("--per-object", type=float, default=2.5, help="mean alerts per object")
    parser.add_argument("--nested", default=None, help="put members under this directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cutouts", action="store_true", help="write null cutouts")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    spec = make_night(
        args.out,
        night=args.night,
        n_alerts=args.alerts,
        alerts_per_object=args.per_object,
        version=args.version or "4.02",
        nested=args.nested,
        seed=args.seed,
        cutouts=not args.no_cutouts,
        keep_records=False,
    )
    elapsed = time.perf_counter() - t0
    rate = spec.n_alerts / elapsed if elapsed > 0 else float("inf")
    print(
        f"{spec.path}: {spec.n_alerts} alerts of {len(spec.object_ids)} objects, {spec.size} bytes, "
        f"md5 {spec.md5}, {elapsed:.1f} s ({rate:.0f} alerts/s)"
    )
    return 0

