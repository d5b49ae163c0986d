"""Schema-faithful synthetic ZTF alerts and nightly tarballs.

The project's tests and benchmarks must run on a machine that has never seen the real archive, so this
module writes alert packets that a reader cannot tell from ZTF's own: the same Avro writer schemas (ZTF's own,
kept in ``ztfcat/schemas/<version>/alert.avsc``, version by version), one record per object
container file with the schema embedded, 63×63 gzip'd FITS cutouts of float32 noise (so packets have real
size and real compressibility), ``prv_candidates`` that mix detections and upper limits and that repeat,
with last-digit differences, from one alert of an object to the next, and ``.tar.gz`` nights streamed to
disk in bounded memory.

Avro encoding is done here rather than with ``fastavro.writer``: the packets are written by the ten
thousand and fastavro's union resolution dominated the cost.  ``fastavro.reader`` is the judge in the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import math
import operator
import struct
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ztfcat.ingest.avro import encode_long as _varint  # the one zig-zag encoder
from ztfcat.store.fields import FIELDS, KNOWN_VERSIONS, TOP_FIELDS, VERSION_FIELDS

__all__ = [
    "NightSpec",
    "alert_bytes",
    "cutout_pool",
    "make_alert",
    "make_archive",
    "make_night",
    "writer_schema",
]

PUBLISHER = "ZTF (www.ztf.caltech.edu)"
CUTOUT_SIZE = 63
#: JD of 2017-01-01T00:00 UTC: ZTF's night id (``nid``) counts days from it.
_NID_EPOCH_JD = 2457754.5
_UNIX_EPOCH_JD = 2440587.5
_PRV_WINDOW_DAYS = 30.0
_BAND = {1: "g", 2: "r", 3: "i"}


# --------------------------------------------------------------------------------------------------------
# Writer schemas
# --------------------------------------------------------------------------------------------------------


def _check_version(version: str) -> str:
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"unknown ZTF alert schema version {version!r}; known: {', '.join(KNOWN_VERSIONS)}")
    return version


def _new_style(version: str) -> bool:
    """4.x schemas are written with sorted keys and ``["null", T]`` unions; older ones with ``[T, "null"]``."""
    return int(version.split(".")[0]) >= 4


def _field_type(part: str, name: str, version: str) -> tuple[str, bool]:
    # 3.5 shipped prv_candidates shaped like the later fp_hist record (ranr/decnr not nullable there).
    src = "fp_hist" if (part == "prv_candidate" and version == "3.5") else part
    avro_type, nullable, _doc = FIELDS[src][name]
    return avro_type, nullable


def writer_schema(version: str = "4.02") -> dict:
    """The Avro writer schema of ZTF alerts of ``version``, as ZTF's own packets embed it.

    Read from the package's copy of the real schema (``ztfcat/schemas/<version>/alert.avsc``, from which
    :mod:`ztfcat.store.fields` is generated), so the synthetic packets carry exactly the fields, types, union
    order, defaults, docs and record names of the real ones; a fresh dict is returned on each call, so
    callers may mutate it.

    Parameters
    ----------
    version : str
        One of :data:`ztfcat.store.fields.KNOWN_VERSIONS`.

    Returns
    -------
    dict
        A JSON-able schema.
    """
    return json.loads(_schema_json(_check_version(version)))


@cache
def _schema_json(version: str) -> str:
    """ZTF's writer schema of ``version`` as its packets embed it: ``ztfcat/schemas/<version>/alert.avsc``.

    Kept as the packets' own text (key order, union order, escaping), so a synthetic header is a real one.
    """
    path = resources.files("ztfcat") / "schemas" / version / "alert.avsc"
    return path.read_text(encoding="utf-8").removesuffix("\n")


# --------------------------------------------------------------------------------------------------------
# Avro binary encoding
# --------------------------------------------------------------------------------------------------------


def _enc_string(s: str) -> bytes:
    b = s.encode()
    return _varint(len(b)) + b


def _enc_bytes(b: bytes) -> bytes:
    return _varint(len(b)) + b


_PACK_F = struct.Struct("<f").pack
_PACK_D = struct.Struct("<d").pack
_VALUE_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "float": _PACK_F,
    "double": _PACK_D,
    "int": _varint,
    "long": _varint,
    "string": _enc_string,
    "boolean": lambda v: b"\x01" if v else b"\x00",
    "bytes": _enc_bytes,
}


class _Field:
    """One field's encoding: ``enc(value)`` after ``prefix`` (its union branch), or ``null``."""

    __slots__ = ("name", "enc", "prefix", "null")

    def __init__(self, name: str, enc: Callable[[Any], bytes], prefix: bytes, null: bytes | None) -> None:
        self.name, self.enc, self.prefix, self.null = name, enc, prefix, null


class _Run:
    """Consecutive float/double fields of the same nullability, packed by one ``struct`` call.

    ZTF records are mostly long stretches of ``["null", "float"]``; packing a stretch at once (union
    branch bytes interleaved through a slice assignment) is what makes encoding ten thousand alerts cheap.
    """

    __slots__ = ("fields", "get", "pack", "template", "all_null")

    def __init__(self, fields: list[_Field], types: list[str], nullable: bool) -> None:
        self.fields = fields
        names = [f.name for f in fields]
        self.get = operator.itemgetter(*names) if len(names) > 1 else (lambda r, _n=names[0]: (r[_n],))
        codes = "".join("f" if t == "float" else "d" for t in types)
        if nullable:
            self.pack = struct.Struct("<" + "".join("B" + c for c in codes)).pack
            self.template = [fields[0].prefix[0], None] * len(fields)
            self.all_null = b"".join(f.null or b"" for f in fields)
        else:
            self.pack = struct.Struct("<" + codes).pack
            self.template = None
            self.all_null = None


class _RecordCodec:
    """Encoder of one ``ztf.alert.*`` record type of one schema version into Avro binary."""

    def __init__(self, part: str, version: str, names: tuple[str, ...], ops: list[_Field | _Run]) -> None:
        self.part, self.version, self.names, self.ops = part, version, names, ops

    def _slow(
        self, fields: Iterable[_Field], rec: Mapping[str, Any], append: Callable[[bytes], None]
    ) -> None:
        for f in fields:
            v = rec[f.name]
            if v is None:
                if f.null is None:
                    raise ValueError(f"field {self.part}.{f.name} of schema {self.version} is not nullable")
                append(f.null)
            else:
                append(f.prefix)
                append(f.enc(v))

    def encode(self, rec: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        append = out.append
        try:
            for op in self.ops:
                if type(op) is _Field:
                    v = rec[op.name]
                    if v is not None:
                        append(op.prefix)
                        append(op.enc(v))
                    elif op.null is None:
                        raise ValueError(
                            f"field {self.part}.{op.name} of schema {self.version} is not nullable"
                        )
                    else:
                        append(op.null)
                    continue
                vals = op.get(rec)
                if None in vals:
                    if op.all_null is not None and vals.count(None) == len(vals):
                        append(op.all_null)
                    else:
                        self._slow(op.fields, rec, append)
                elif op.template is None:
                    append(op.pack(*vals))
                else:
                    args = op.template[:]
                    args[1::2] = vals
                    append(op.pack(*args))
        except KeyError as exc:
            raise ValueError(
                f"record lacks field {self.part}.{exc.args[0]} of schema {self.version}"
            ) from exc
        except (struct.error, TypeError, OverflowError) as exc:
            raise ValueError(
                f"a {self.part} field of schema {self.version} has a value of the wrong type"
            ) from exc
        return b"".join(out)


@cache
def _codec(part: str, version: str) -> _RecordCodec:
    new = _new_style(version)
    names = VERSION_FIELDS[part][version]
    ops: list[_Field | _Run] = []
    pending: list[tuple[_Field, str, bool]] = []

    def flush() -> None:
        if len(pending) == 1:
            ops.append(pending[0][0])
        elif pending:
            ops.append(_Run([p[0] for p in pending], [p[1] for p in pending], pending[0][2]))
        pending.clear()

    for name in names:
        avro_type, nullable = _field_type(part, name, version)
        enc = _VALUE_ENCODERS[avro_type]
        if nullable:
            # union branch index, zig-zag coded: 0 -> b"\x00", 1 -> b"\x02"
            f = _Field(name, enc, b"\x02" if new else b"\x00", b"\x00" if new else b"\x02")
        else:
            f = _Field(name, enc, b"", None)
        if avro_type in ("float", "double"):
            if pending and pending[0][2] != nullable:
                flush()
            pending.append((f, avro_type, nullable))
        else:
            flush()
            ops.append(f)
    flush()
    return _RecordCodec(part, version, tuple(names), ops)


@cache
def _header(version: str) -> bytes:
    """Container-file header without its sync marker (ZTF's key order: 4.x schema first, else codec)."""
    schema = ("avro.schema", _schema_json(version).encode())
    codec = ("avro.codec", b"null")
    entries = (schema, codec) if _new_style(version) else (codec, schema)
    meta = b"".join(_enc_string(k) + _enc_bytes(v) for k, v in entries)
    return b"Obj\x01" + _varint(len(entries)) + meta + b"\x00"


def _encode_array(
    items: Sequence[Mapping[str, Any]] | None,
    codec: _RecordCodec,
    new: bool,
    cache: dict[int, tuple[Any, bytes]] | None,
) -> bytes:
    """A nullable array; ``cache`` maps ``id(item)`` to (item, bytes) so repeated points encode once.

    The item itself is kept in the cache so that its id cannot be reused by another dict meanwhile.
    """
    if items is None:
        return b"\x00" if new else b"\x02"
    head = b"\x02" if new else b"\x00"
    if not items:
        return head + b"\x00"
    parts = [head, _varint(len(items))]
    for item in items:
        if cache is None:
            parts.append(codec.encode(item))
        else:
            hit = cache.get(id(item))
            if hit is None or hit[0] is not item:
                hit = cache[id(item)] = (item, codec.encode(item))
            parts.append(hit[1])
    parts.append(b"\x00")
    return b"".join(parts)


def _encode_alert(
    record: Mapping[str, Any], version: str, cache: dict[int, tuple[Any, bytes]] | None = None
) -> bytes:
    new = _new_style(version)
    out = []
    for name in TOP_FIELDS[version]:
        try:
            v = record[name]
        except KeyError as exc:
            raise ValueError(f"alert record lacks top-level field {name!r} of schema {version}") from exc
        if name in ("schemavsn", "publisher", "objectId"):
            out.append(_enc_string(v))
        elif name == "candid":
            out.append(_varint(v))
        elif name == "candidate":
            out.append(_codec("candidate", version).encode(v))
        elif name == "prv_candidates":
            out.append(_encode_array(v, _codec("prv_candidate", version), new, cache))
        elif name == "fp_hists":
            out.append(_encode_array(v, _codec("fp_hist", version), new, cache))
        elif v is None:
            out.append(b"\x00" if new else b"\x02")
        else:
            out.append(b"\x02" if new else b"\x00")
            out.append(_enc_string(v["fileName"]) + _enc_bytes(v["stampData"]))
    return b"".join(out)


def _sync_marker(candid: int) -> bytes:
    # Real files carry a random marker; deriving it from the candid keeps synthetic nights reproducible.
    return hashlib.md5(str(candid).encode(), usedforsecurity=False).digest()


def alert_bytes(
    record: Mapping[str, Any], version: str = "4.02", *, _cache: dict[int, tuple[Any, bytes]] | None = None
) -> bytes:
    """Encode one alert as ZTF ships it: an Avro container file, one record, codec null, schema embedded.

    Parameters
    ----------
    record : mapping
        A record with every field of ``version``'s schema (as :func:`make_alert` returns); ``float``
        fields are stored as float32, so values not representable in float32 come back rounded.
    version : str
        The schema version to write.

    Returns
    -------
    bytes
        The file's content; :func:`fastavro.reader` reads it back.
    """
    _check_version(version)
    data = _encode_alert(record, version, _cache)
    sync = _sync_marker(int(record["candid"]))
    return b"".join((_header(version), sync, b"\x02", _varint(len(data)), data, sync))


# --------------------------------------------------------------------------------------------------------
# Cutouts
# --------------------------------------------------------------------------------------------------------


def _fits_bytes(image: np.ndarray) -> bytes:
    """A 63×63 float32 FITS image with ZTF's own six-card header.

    Written by hand because ZTF's ``SIMPLE  =  T`` card is not in FITS fixed format (astropy emits a
    ``VerifyWarning`` on real cutouts); readers must meet the same quirk here as on real data.
    """
    ny, nx = image.shape
    cards = [
        "SIMPLE  =  T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {nx:>20d}",
        f"NAXIS2  = {ny:>20d}",
        "BUNIT   = 'DN      '",
        "END",
    ]
    header = "".join(c.ljust(80) for c in cards).encode("ascii")
    header += b" " * (-len(header) % 2880)
    data = image.astype(">f4").tobytes()
    data += b"\x00" * (-len(data) % 2880)
    return header + data


def _stamp(
    rng: np.random.Generator, sky: float, sigma: float, flux: float, fwhm: float, nan_frac: float = 0.0
) -> np.ndarray:
    n = CUTOUT_SIZE
    y, x = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2 + rng.normal(0.0, 0.5, 2)
    s2 = (fwhm / 2.3548) ** 2
    source = flux / (2 * np.pi * s2) * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * s2))
    img = (sky + source + rng.normal(0.0, sigma, (n, n))).astype(np.float32)
    if nan_frac > 0:
        # templates lose an edge strip where the reference image ends
        width = max(1, int(n * nan_frac))
        edge = rng.integers(4)
        if edge == 0:
            img[:width, :] = np.nan
        elif edge == 1:
            img[-width:, :] = np.nan
        elif edge == 2:
            img[:, :width] = np.nan
        else:
            img[:, -width:] = np.nan
    return img


def _cutout_triple(rng: np.random.Generator) -> tuple[bytes, bytes, bytes]:
    sky = float(rng.uniform(150.0, 400.0))
    sigma = float(rng.uniform(8.0, 14.0))
    fwhm = float(rng.uniform(1.6, 3.5))
    flux = float(rng.uniform(2e3, 6e4))
    ref_flux = flux * float(rng.uniform(0.1, 0.7))  # the source brightened: a positive difference
    sci = _stamp(rng, sky, sigma, flux, fwhm)
    nan_frac = float(rng.uniform(0.05, 0.3)) if rng.random() < 0.2 else 0.0
    ref = _stamp(rng, float(rng.uniform(150.0, 400.0)), sigma / 4, ref_flux, fwhm, nan_frac)
    diff = _stamp(rng, 0.0, sigma * 1.3, flux - ref_flux, fwhm)
    # fixed mtime: the same image gives the same bytes, as a reproducible night needs
    return tuple(gzip.compress(_fits_bytes(im), 9, mtime=1_600_000_000) for im in (sci, ref, diff))  # type: ignore[return-value]


def cutout_pool(rng: np.random.Generator, n: int = 64) -> list[tuple[bytes, bytes, bytes]]:
    """Make ``n`` (science, template, difference) cutout triples to share among many alerts.

    Each entry holds gzip'd 63×63 float32 FITS images: a Gaussian source on sky noise, a template that
    sometimes has a NaN edge strip, and a difference image.  Noise in float32 compresses as poorly as
    real cutouts do (about 20 KB of FITS to 12–15 KB of gzip), which gives synthetic tarballs real size
    and real compression ratio; making them costs a few milliseconds each, hence the pool.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of triples.

    Returns
    -------
    list of tuple of bytes
        ``n`` triples ``(science, template, difference)`` of gzip bytes, as ZTF's ``stampData``.
    """
    return [_cutout_triple(rng) for _ in range(n)]


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
_STRINGS = {"programpi": "Kulkarni", "rbversion": "t17_f5_c3", "drbversion": "d6_m7", "procstatus": "0"}


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
        avro_type, nullable = _field_type(part, name, version)
        if avro_type == "string":
            strings[name] = _STRINGS.get(name, None if nullable else "")
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


def _pid(jd: float, rcid: int) -> int:
    """ZTF's processing id: night id, time of night in 1e-5 day, readout channel, then ``15``."""
    t = int((jd - _NID_EPOCH_JD) * 1e5)
    return (t * 100 + rcid) * 100 + 15


def _jd_datetime(jd: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(days=jd - _UNIX_EPOCH_JD)


def _diffim_name(jd: float, field_id: int, fid: int, rcid: int, *, archived: bool) -> str:
    when = _jd_datetime(jd)
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


def _new_object(rng: np.random.Generator, object_id: str, ra: float, dec: float, jd: float) -> _Object:
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


class _Draws:
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
    d: _Draws, obj: _Object, jd: float, fid: int, pid: int, candid: int | None
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


def _candidate(
    rng: np.random.Generator, version: str, obj: _Object, jd: float, fid: int, candid: int, ndet: int
) -> dict[str, Any]:
    spec = _value_spec("candidate", version)
    d = _Draws(rng)
    row = spec.draw(rng, 1)[0]
    row.update(_detection_values(d, obj, jd, fid, _pid(jd, obj.rcid), candid))
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
        if name not in _UPPER_LIMIT_KEEP and _field_type("prv_candidate", name, version)[1]
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
    d = _Draws(rng)
    fp_shaped = "forcediffimflux" in spec.names  # 3.5 shipped forced-photometry shaped prv_candidates
    nulls = dict.fromkeys(_upper_limit_nulls(version))
    out = []
    for serial, (row, jd, fid, det) in enumerate(zip(rows, jds, fids, detections, strict=True)):
        pid = _pid(jd, obj.rcid)
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


def _fp_values(d: _Draws, obj: _Object, jd: float, fid: int, pid: int) -> dict[str, Any]:
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
    d = _Draws(rng)
    out = []
    for row, jd, fid in zip(rows, jds, fids, strict=True):
        row.update(_fp_values(d, obj, jd, fid, _pid(jd, obj.rcid)))
        out.append({k: row[k] for k in spec.names})
    return out


def _jitter(d: _Draws, point: dict[str, Any]) -> dict[str, Any]:
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


def _assemble(
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
    _check_version(version)
    jd = float(jd)
    obj = _new_object(rng, object_id, float(ra), float(dec), jd)
    candidate = _candidate(rng, version, obj, jd, int(fid), int(candid), obj.ndethist0 + n_prv)
    prv = _history(rng, version, obj, jd, n_prv)
    fp = _fp_history(rng, version, obj, jd, n_fp) if "fp_hists" in TOP_FIELDS[version] else None
    triple = _pick_cutouts(rng, cutouts, cutout_pool)
    return _assemble(version, object_id, candidate, prv, fp, triple)


def _pick_cutouts(
    rng: np.random.Generator, cutouts: bool, pool: Sequence[Sequence[bytes]] | None
) -> Sequence[bytes] | None:
    if not cutouts:
        return None
    if pool:
        return pool[int(rng.integers(len(pool)))]
    return _cutout_triple(rng)


def _history(rng: np.random.Generator, version: str, obj: _Object, before_jd: float, n: int) -> list[dict]:
    """``n`` points in the 30 days before ``before_jd``, oldest first, as ZTF orders prv_candidates."""
    if n <= 0:
        return []
    jds = np.round(np.sort(before_jd - rng.uniform(0.02, _PRV_WINDOW_DAYS - 0.01, n)), 7).tolist()
    fids = rng.choice((1, 2), n).tolist()
    det = (rng.random(n) < 0.6).tolist()
    return _prv_points(rng, version, obj, jds, fids, det)


def _fp_history(rng: np.random.Generator, version: str, obj: _Object, before_jd: float, n: int) -> list[dict]:
    """``n`` forced-photometry points, newest first as ZTF writes them."""
    if n <= 0:
        return []
    jds = np.round(np.sort(before_jd - rng.uniform(0.02, _PRV_WINDOW_DAYS - 0.01, n))[::-1], 7).tolist()
    return _fp_points(rng, version, obj, jds, rng.choice((1, 2), n).tolist())


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
        obj = _new_object(
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
                history[version] = _history(hrng, version, obj, jd0, self.n_prv)
                has_fp = "fp_hists" in TOP_FIELDS[version]
                fp_hist[version] = _fp_history(hrng, version, obj, jd0, self.n_fp) if has_fp else []
            jd, fid, candid = float(self.alert_jd[i]), int(self.alert_fid[i]), int(self.alert_candid[i])
            arng = np.random.default_rng([self.seed, 3, i])
            d = _Draws(arng)
            n_det = obj.ndethist0 + sum(1 for p in history[version] if p.get("candid")) + len(earlier) + 1
            candidate = _candidate(arng, version, obj, jd, fid, candid, n_det)
            prv = [
                (_jitter(d, p) if d.random() < 0.2 else p)
                for p in history[version]
                if p["jd"] > jd - _PRV_WINDOW_DAYS
            ]
            for j, cand in enumerate(earlier):
                point = as_prv.get((j, version))
                if point is None:
                    point = as_prv[(j, version)] = _candidate_as_prv(cand, version)
                prv.append(_jitter(d, point) if d.random() < 0.5 else point)
            fp = None
            if "fp_hists" in TOP_FIELDS[version]:
                fp = [p for p in fp_hist[version] if p["jd"] > jd - _PRV_WINDOW_DAYS]
            triple = pool[int(arng.integers(len(pool)))] if pool else None
            earlier.append(candidate)
            yield candid, version, _assemble(version, obj.object_id, candidate, prv, fp, triple)


def _candidate_as_prv(candidate: Mapping[str, Any], version: str) -> dict[str, Any]:
    """An earlier alert's candidate as a later alert lists it among its prv_candidates."""
    point = {name: candidate.get(name) for name in VERSION_FIELDS["prv_candidate"][version]}
    if "pdiffimfilename" in point and point["pdiffimfilename"]:
        when = _jd_datetime(candidate["jd"])
        frac = point["pdiffimfilename"].split("_")[1][8:]
        point["pdiffimfilename"] = f"/ztf/archive/sci/{when:%Y/%m%d}/{frac}/{point['pdiffimfilename']}.fz"
    return _fill_missing(point, version)


def _fill_missing(point: dict[str, Any], version: str) -> dict[str, Any]:
    """Give fields a prv point lacks (e.g. rbversion when copied across versions) a schema-valid value."""
    for name, v in point.items():
        if v is None:
            avro_type, nullable = _field_type("prv_candidate", name, version)
            if not nullable:
                point[name] = _STRINGS.get(name, "") if avro_type == "string" else 0
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
    pids = [_pid(float(j), int(rcid[o])) for j, o in zip(alert_jd.tolist(), alert_obj.tolist(), strict=True)]
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
        _check_version(v)
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


def _main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    raise SystemExit(_main())
