"""Field values of one alert: candidate, prv_candidates (detections and upper limits that repeat, with
last-digit differences, from one alert of an object to the next) and fp_hists."""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ztfcat.store.fields import TOP_FIELDS, VERSION_FIELDS

from .cutouts import cutout_triple
from .schema import check_version, field_type

PUBLISHER = "ZTF (www.ztf.caltech.edu)"
CUTOUT_SIZE = 63
#: JD of 2017-01-01T00:00 UTC: ZTF's night id (``nid``) counts days from it.
_NID_EPOCH_JD = 2457754.5
_UNIX_EPOCH_JD = 2440587.5
_PRV_WINDOW_DAYS = 30.0
_BAND = {1: "g", 2: "r", 3: "i"}


# --------------------------------------------------------------------------------------------------------
# Field values
# --------------------------------------------------------------------------------------------------------

#: Uniform ranges of fields that need no context; anything else numeric is drawn in [0, 1].
# fmt: off
_RANGES: dict[str, tuple[float, float]] = {
    "xpos": (10, 3070), "ypos": (10, 3070), "chipsf": (0.5, 5), "sigmagap": (0.02, 0.3),
    "distnr": (0.05, 5), "magnr": (14, 21), "sigmagnr": (0.005, 0.1), "chinr": (0.2, 5),
    "sharpnr": (-0.1, 0.1), "sky": (-5, 5), "fwhm": (1.5, 4), "classtar": (0, 1), "mindtoedge": (20, 1500),
    "seeratio": (0.8, 2), "aimage": (0.5, 1.5), "bimage": (0.4, 1.2), "aimagerat": (0.2, 0.6),
    "bimagerat": (0.2, 0.5), "elong": (1, 1.6), "nneg": (0, 10), "nbad": (0, 2), "rb": (0, 1),
    "drb": (0, 1), "sumrat": (0.5, 1), "sigmagapbig": (0.02, 0.4), "sgmag": (14, 22), "srmag": (14, 22),
    "simag": (14, 22), "szmag": (14, 22), "sgscore": (0, 1), "sgmag1": (14, 22), "srmag1": (14, 22),
    "simag1": (14, 22), "szmag1": (14, 22), "sgscore1": (0, 1), "sgmag2": (14, 22), "srmag2": (14, 22),
    "simag2": (14, 22), "szmag2": (14, 22), "sgscore2": (0, 1), "sgmag3": (14, 22), "srmag3": (14, 22),
    "simag3": (14, 22), "szmag3": (14, 22), "sgscore3": (0, 1), "distpsnr1": (0, 3), "distpsnr2": (3, 20),
    "distpsnr3": (5, 30), "nmtchps": (1, 30), "scorr": (5, 50), "dsnrms": (1, 10), "ssnrms": (5, 20),
    "dsdiff": (-10, 0), "magzpsci": (25, 26.5), "magzpsciunc": (1e-06, 0.0001),
    "magzpscirms": (0.01, 0.08), "clrcoeff": (-0.1, 0.1), "clrcounc": (1e-06, 0.0001),
    "zpclrcov": (-0.0001, 0), "zpmed": (25, 26.5), "clrmed": (0.3, 1), "clrrms": (0.1, 0.2),
    "neargaia": (0.1, 30), "maggaia": (12, 20), "nframesref": (15, 40), "nmatches": (200, 2000),
    "sciinpseeing": (1.5, 3.5), "scibckgnd": (100, 400), "scisigpix": (8, 20), "adpctdif1": (0.04, 0.1),
    "adpctdif2": (0.04, 0.1), "forcediffimflux": (-2000, 2000), "forcediffimfluxunc": (20, 100),
    "tblid": (0, 99),
}
# fmt: on
#: Fields that describe the object's surroundings, not one detection: constant for an object.
# fmt: off
_OBJECT_CONSTANT = (
    "magnr", "sigmagnr", "chinr", "sharpnr", "sgmag", "srmag", "simag", "szmag", "sgscore", "sgmag1",
    "srmag1", "simag1", "szmag1", "sgscore1", "distpsnr1", "sgmag2", "srmag2", "simag2", "szmag2",
    "sgscore2", "distpsnr2", "sgmag3", "srmag3", "simag3", "szmag3", "sgscore3", "distpsnr3", "nmtchps",
    "neargaia", "maggaia", "nframesref",
)
# fmt: on
STRINGS = {"programpi": "Kulkarni", "rbversion": "t17_f5_c3", "drbversion": "d6_m7", "procstatus": "0"}


@dataclass(frozen=True)
class _ValueSpec:
    """Vectorised draw of the context-free fields of one record type and version."""

    names: tuple[str, ...]
    float_names: tuple[str, ...]
    double_names: tuple[str, ...]
    int_names: tuple[str, ...]
    lo: np.ndarray
    span: np.ndarray
    float_idx: np.ndarray
    double_idx: np.ndarray
    int_idx: np.ndarray
    strings: dict[str, Any]

    def draw(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        values = self.lo + rng.random((n, len(self.lo))) * self.span
        floats = values[:, self.float_idx].astype(np.float32).tolist()
        doubles = values[:, self.double_idx].tolist()
        ints = np.rint(values[:, self.int_idx]).astype(np.int64).tolist()
        fn, dn, iname = self.float_names, self.double_names, self.int_names
        rows = []
        for f, d, i in zip(floats, doubles, ints, strict=True):
            row = dict(self.strings)
            row.update(zip(fn, f, strict=True))
            row.update(zip(dn, d, strict=True))
            row.update(zip(iname, i, strict=True))
            rows.append(row)
        return rows


@cache
def _value_spec(part: str, version: str) -> _ValueSpec:
    names = VERSION_FIELDS[part][version]
    lo, span, kinds = [], [], []
    strings: dict[str, Any] = {}
    numeric: list[str] = []
    for name in names:
        avro_type, nullable = field_type(part, name, version)
        if avro_type == "string":
            strings[name] = STRINGS.get(name, None if nullable else "")
            continue
        a, b = _RANGES.get(name, (0.0, 1.0))
        numeric.append(name)
        lo.append(a)
        span.append(b - a)
        kinds.append(avro_type)
    kinds_a = np.array(kinds)
    idx = np.arange(len(numeric))
    groups = (("f", ["float"]), ("d", ["double"]), ("i", ["int", "long"]))
    sel = {k: idx[np.isin(kinds_a, ks)] for k, ks in groups}
    return _ValueSpec(
        names=tuple(names),
        float_names=tuple(numeric[i] for i in sel["f"]),
        double_names=tuple(numeric[i] for i in sel["d"]),
        int_names=tuple(numeric[i] for i in sel["i"]),
        lo=np.array(lo, dtype=float),
        span=np.array(span, dtype=float),
        float_idx=sel["f"],
        double_idx=sel["d"],
        int_idx=sel["i"],
        strings=strings,
    )


def alert_pid(jd: float, rcid: int) -> int:
    """ZTF's processing id: night id, time of night in 1e-5 day, readout channel, then ``15``."""
    t = int((jd - _NID_EPOCH_JD) * 1e5)
    return (t * 100 + rcid) * 100 + 15


def jd_datetime(jd: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(days=jd - _UNIX_EPOCH_JD)


def _diffim_name(jd: float, field_id: int, fid: int, rcid: int, *, archived: bool) -> str:
    when = jd_datetime(jd)
    frac = int(round((jd - 0.5) % 1.0 * 1e6)) % 1_000_000
    stem = f"ztf_{when:%Y%m%d}{frac:06d}_{field_id:06d}_z{_BAND.get(fid, 'g')}_c{rcid // 4 + 1:02d}_o_q{rcid % 4 + 1}"
    if archived:
        return f"/ztf/archive/sci/{when:%Y/%m%d}/{frac:06d}/{stem}_scimrefdiffimg.fits.fz"
    return f"{stem}_scimrefdiffimg.fits"


def _sigma_for(mag: float) -> float:
    return 0.02 + 0.12 * 10 ** (0.4 * (mag - 20.0))


@dataclass
class _Object:
    """What stays the same for every alert and every light-curve point of one object."""

    object_id: str
    ra: float
    dec: float
    field_id: int
    rcid: int
    mag: float
    constants: dict[str, Any]
    first_jd: float
    ndethist0: int


def new_object(rng: np.random.Generator, object_id: str, ra: float, dec: float, jd: float) -> _Object:
    spec = _value_spec("candidate", "4.02")
    row = spec.draw(rng, 1)[0]
    constants = {k: row[k] for k in _OBJECT_CONSTANT if k in row}
    constants.update(sgmag=row["sgmag1"], srmag=row["srmag1"], simag=row["simag1"], szmag=row["szmag1"])
    constants["sgscore"] = row["sgscore1"]
    nearest = rng.normal(0.0, 0.3 / 3600.0, 2)
    constants["ranr"] = round(ra + nearest[0], 7)
    constants["decnr"] = round(dec + nearest[1], 7)
    for i in (1, 2, 3):
        constants[f"objectidps{i}"] = int(rng.integers(7 * 10**16, 2 * 10**17))
    return _Object(
        object_id=object_id,
        ra=ra,
        dec=dec,
        field_id=int(rng.integers(200, 1800)),
        rcid=int(rng.integers(0, 64)),
        mag=float(rng.uniform(16.0, 20.5)),
        constants=constants,
        first_jd=round(jd - float(rng.uniform(0.0, 600.0)), 7),
        ndethist0=int(rng.integers(1, 200)),
    )


class Draws:
    """Random numbers drawn from numpy in blocks and handed out one by one.

    Numpy's per-call overhead (a microsecond or more) dominated making points one field at a time.
    """

    __slots__ = ("rng", "_u", "_z")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._u: list[float] = []
        self._z: list[float] = []

    def random(self) -> float:
        if not self._u:
            self._u = self.rng.random(128).tolist()
        return self._u.pop()

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def normal(self, sigma: float) -> float:
        if not self._z:
            self._z = self.rng.standard_normal(128).tolist()
        return sigma * self._z.pop()

    def integers(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo))


_F32 = struct.Struct("<f")
_I32 = struct.Struct("<i")


def _f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a Python float: Avro ``float`` fields round-trip exactly."""
    return _F32.unpack(_F32.pack(x))[0]


def _last_digit(x: float, up: bool) -> float:
    """The float32 next to ``x``: the "last digit" by which ZTF's repeated points differ."""
    i = _I32.unpack(_F32.pack(x))[0]
    return _F32.unpack(_I32.pack(i + (1 if up else -1)))[0] if x != 0.0 else x


def _detection_values(
    d: Draws, obj: _Object, jd: float, fid: int, pid: int, candid: int | None
) -> dict[str, Any]:
    """Context-bound fields of a detection (candidate or prv detection); float fields float32-exact."""
    mag = min(max(obj.mag + d.normal(0.4), 15.0), 21.0)
    limit = mag + d.uniform(0.3, 2.5)
    magap = mag + d.normal(0.05)
    ss = d.random() < 0.05
    cosdec = max(math.cos(math.radians(obj.dec)), 1e-3)
    values = {
        "jd": jd,
        "fid": fid,
        "pid": pid,
        "candid": candid,
        "programid": 1,
        "isdiffpos": "t" if d.random() < 0.85 else "f",
        "nid": int(jd - _NID_EPOCH_JD),
        "rcid": obj.rcid,
        "field": obj.field_id,
        "tblid": candid % 100 if candid is not None else None,
        "ra": round(obj.ra + d.normal(0.1 / 3600.0) / cosdec, 7),
        "dec": round(obj.dec + d.normal(0.1 / 3600.0), 7),
        "magpsf": _f32(mag),
        "sigmapsf": _f32(_sigma_for(mag)),
        "diffmaglim": _f32(limit),
        "magap": _f32(magap),
        "magapbig": _f32(magap - abs(d.normal(0.05))),
        "magdiff": _f32(magap - mag),
        "magfromlim": _f32(limit - magap),
        "ssdistnr": _f32(d.uniform(0, 30)) if ss else -999.0,
        "ssmagnr": _f32(d.uniform(17, 22)) if ss else -999.0,
        "ssnamenr": str(d.integers(1000, 600000)) if ss else "null",
        "exptime": 30.0,
        "pdiffimfilename": _diffim_name(jd, obj.field_id, fid, obj.rcid, archived=False),
    }
    values.update(obj.constants)
    return values


def _era_fixes(row: dict[str, Any], version: str) -> None:
    """Values that early schema versions carried differently (programid 0, the t8 classifier)."""
    if version.startswith(("1.", "2.")):
        row["rbversion"] = "t8_f5_c3"
    if version in ("1.3", "1.7", "1.8"):
        row["programid"] = 0


def candidate_values(
    rng: np.random.Generator, version: str, obj: _Object, jd: float, fid: int, candid: int, ndet: int
) -> dict[str, Any]:
    spec = _value_spec("candidate", version)
    d = Draws(rng)
    row = spec.draw(rng, 1)[0]
    row.update(_detection_values(d, obj, jd, fid, alert_pid(jd, obj.rcid), candid))
    rfid = obj.field_id * 1_000_000 + 120_000 + fid * 100 + obj.rcid
    row.update(
        ndethist=ndet,
        ncovhist=ndet + d.integers(0, 3 * ndet + 5),
        jdstarthist=obj.first_jd,
        jdendhist=jd,
        tooflag=0,
        rfid=rfid,
        jdstartref=round(2458200.0 + (rfid % 97), 7),
        jdendref=round(2458600.0 + (rfid % 89), 7),
        neargaiabright=-999.0,
        maggaiabright=-999.0,
    )
    if d.random() < 0.9:  # most alerts are real: classifier scores near 1
        row["drb"] = _f32(d.uniform(0.8, 1.0))
        row["rb"] = _f32(d.uniform(0.5, 1.0))
    _era_fixes(row, version)
    return {k: row[k] for k in spec.names}


#: Fields an upper limit keeps; every other nullable prv_candidate field is null in one.
_UPPER_LIMIT_KEEP = frozenset(
    {"jd", "fid", "pid", "diffmaglim", "pdiffimfilename", "programpi", "programid", "nid", "rcid", "field"}
    | {"rbversion", "magzpsci", "magzpsciunc", "magzpscirms", "clrcoeff", "clrcounc"}
)


@cache
def _upper_limit_nulls(version: str) -> tuple[str, ...]:
    return tuple(
        name
        for name in VERSION_FIELDS["prv_candidate"][version]
        if name not in _UPPER_LIMIT_KEEP and field_type("prv_candidate", name, version)[1]
    )


def _prv_points(
    rng: np.random.Generator,
    version: str,
    obj: _Object,
    jds: Sequence[float],
    fids: Sequence[int],
    detections: Sequence[bool],
) -> list[dict[str, Any]]:
    """Light-curve points: detections (own candid) and upper limits (candid, position, magnitude null)."""
    spec = _value_spec("prv_candidate", version)
    rows = spec.draw(rng, len(jds))
    d = Draws(rng)
    fp_shaped = "forcediffimflux" in spec.names  # 3.5 shipped forced-photometry shaped prv_candidates
    nulls = dict.fromkeys(_upper_limit_nulls(version))
    out = []
    for serial, (row, jd, fid, det) in enumerate(zip(rows, jds, fids, detections, strict=True)):
        pid = alert_pid(jd, obj.rcid)
        if fp_shaped:
            row.update(_fp_values(d, obj, jd, fid, pid))
        elif det:
            candid = pid * 1_000_000 + 10_000 + (5_000 if serial % 3 == 0 else 0) + serial % 100
            row.update(_detection_values(d, obj, jd, fid, pid, candid))
            row["pdiffimfilename"] = _diffim_name(jd, obj.field_id, fid, obj.rcid, archived=True)
            row["ssdistnr"] = row["ssmagnr"] = row["ssnamenr"] = None
        else:
            row.update(nulls)
            row.update(
                jd=jd,
                fid=fid,
                pid=pid,
                programid=1,
                nid=int(jd - _NID_EPOCH_JD),
                rcid=obj.rcid,
                field=obj.field_id,
                diffmaglim=_f32(d.uniform(18.5, 20.8)),
                pdiffimfilename=_diffim_name(jd, obj.field_id, fid, obj.rcid, archived=True),
            )
        _era_fixes(row, version)
        out.append({k: row[k] for k in spec.names})
    return out


def _fp_values(d: Draws, obj: _Object, jd: float, fid: int, pid: int) -> dict[str, Any]:
    values: dict[str, Any] = {
        "jd": jd,
        "fid": fid,
        "pid": pid,
        "programid": 1,
        "field": obj.field_id,
        "rcid": obj.rcid,
        "rfid": obj.field_id * 1_000_000 + 120_000 + fid * 100 + obj.rcid,
        "exptime": 30.0,
        "diffmaglim": _f32(d.uniform(18.5, 20.8)),
    }
    if d.random() < 0.3:  # processing failed: ZTF's -99999 sentinels
        values["procstatus"] = "61"
        for k in ("forcediffimflux", "forcediffimfluxunc", "distnr", "ranr", "decnr", "magnr", "sigmagnr"):
            values[k] = -99999.0
        values["chinr"] = values["sharpnr"] = -99999.0
    else:
        values["procstatus"] = "0"
        for k in ("ranr", "decnr", "magnr", "sigmagnr", "chinr", "sharpnr"):
            values[k] = obj.constants.get(k)
        values["distnr"] = _f32(d.uniform(0.05, 1.0))
    return values


def _fp_points(
    rng: np.random.Generator, version: str, obj: _Object, jds: Sequence[float], fids: Sequence[int]
) -> list[dict[str, Any]]:
    spec = _value_spec("fp_hist", version)
    rows = spec.draw(rng, len(jds))
    d = Draws(rng)
    out = []
    for row, jd, fid in zip(rows, jds, fids, strict=True):
        row.update(_fp_values(d, obj, jd, fid, alert_pid(jd, obj.rcid)))
        out.append({k: row[k] for k in spec.names})
    return out


def jitter(d: Draws, point: dict[str, Any]) -> dict[str, Any]:
    """The same detection as a later alert reports it: last-digit differences in a few values."""
    out = dict(point)
    for k in ("magpsf", "sigmapsf", "magap", "forcediffimflux"):
        v = out.get(k)
        if isinstance(v, float) and v > -999.0:
            out[k] = _last_digit(v, d.random() < 0.5)
    for k in ("ra", "dec"):
        v = out.get(k)
        if isinstance(v, float):
            out[k] = round(v + (1e-7 if d.random() < 0.5 else -1e-7), 7)
    return out


def _cutout_records(
    candid: int, pid: int, triple: Sequence[bytes], version: str
) -> dict[str, dict[str, Any]]:
    ext = "jpg" if version == "1.3" else "fits.gz"
    names = (
        f"candid{candid}_pid{pid}_targ_sci.{ext}",
        f"candid{candid}_ref.{ext}",
        f"candid{candid}_pid{pid}_targ_refmsci.{ext}",
    )
    keys = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
    return {k: {"fileName": n, "stampData": b} for k, n, b in zip(keys, names, triple, strict=True)}


def assemble(
    version: str,
    object_id: str,
    candidate: dict[str, Any],
    prv: list[dict[str, Any]] | None,
    fp: list[dict[str, Any]] | None,
    triple: Sequence[bytes] | None,
) -> dict[str, Any]:
    parts: dict[str, Any] = {
        "schemavsn": version,
        "publisher": PUBLISHER,
        "objectId": object_id,
        "candid": candidate["candid"],
        "candidate": candidate,
        "prv_candidates": prv,
        "fp_hists": fp,
    }
    if triple is None:
        parts.update(cutoutScience=None, cutoutTemplate=None, cutoutDifference=None)
    else:
        parts.update(_cutout_records(candidate["candid"], candidate["pid"], triple, version))
    return {k: parts[k] for k in TOP_FIELDS[version]}


def make_alert(
    rng: np.random.Generator,
    *,
    version: str = "4.02",
    object_id: str,
    candid: int,
    jd: float,
    ra: float,
    dec: float,
    fid: int = 1,
    n_prv: int = 15,
    n_fp: int = 10,
    cutouts: bool = True,
    cutout_pool: Sequence[Sequence[bytes]] | None = None,
) -> dict:
    """One complete alert record of schema ``version``, with realistic values.

    ``prv_candidates`` holds ``n_prv`` points of the 30 days before ``jd`` (about 60 % detections with
    their own candid, the rest upper limits with candid, position and magnitude null), ``fp_hists`` (4.x)
    ``n_fp`` forced-photometry points; cutouts come from ``cutout_pool`` when given (fast) or are made.
    Every ``float`` field holds a float32-exact value, so the record survives Avro unchanged.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    version : str
        Schema version.
    object_id, candid, jd, ra, dec, fid
        Identity and position of the alert; ``pid`` is derived from ``jd`` (and a readout channel) as ZTF
        derives it.
    n_prv, n_fp : int
        Number of light-curve and forced-photometry points.
    cutouts : bool
        False leaves the three cutout fields null.
    cutout_pool : sequence of triples, optional
        Output of :func:`cutout_pool`.

    Returns
    -------
    dict
        A record matching :func:`writer_schema` of ``version``.
    """
    check_version(version)
    jd = float(jd)
    obj = new_object(rng, object_id, float(ra), float(dec), jd)
    candidate = candidate_values(rng, version, obj, jd, int(fid), int(candid), obj.ndethist0 + n_prv)
    prv = prv_history(rng, version, obj, jd, n_prv)
    fp = fp_history(rng, version, obj, jd, n_fp) if "fp_hists" in TOP_FIELDS[version] else None
    triple = _pick_cutouts(rng, cutouts, cutout_pool)
    return assemble(version, object_id, candidate, prv, fp, triple)


def _pick_cutouts(
    rng: np.random.Generator, cutouts: bool, pool: Sequence[Sequence[bytes]] | None
) -> Sequence[bytes] | None:
    if not cutouts:
        return None
    if pool:
        return pool[int(rng.integers(len(pool)))]
    return cutout_triple(rng)


def prv_history(rng: np.random.Generator, version: str, obj: _Object, before_jd: float, n: int) -> list[dict]:
    """``n`` points in the 30 days before ``before_jd``, oldest first, as ZTF orders prv_candidates."""
    if n <= 0:
        return []
    jds = np.round(np.sort(before_jd - rng.uniform(0.02, _PRV_WINDOW_DAYS - 0.01, n)), 7).tolist()
    fids = rng.choice((1, 2), n).tolist()
    det = (rng.random(n) < 0.6).tolist()
    return _prv_points(rng, version, obj, jds, fids, det)


def fp_history(rng: np.random.Generator, version: str, obj: _Object, before_jd: float, n: int) -> list[dict]:
    """``n`` forced-photometry points, newest first as ZTF writes them."""
    if n <= 0:
        return []
    jds = np.round(np.sort(before_jd - rng.uniform(0.02, _PRV_WINDOW_DAYS - 0.01, n))[::-1], 7).tolist()
    return _fp_points(rng, version, obj, jds, rng.choice((1, 2), n).tolist())
