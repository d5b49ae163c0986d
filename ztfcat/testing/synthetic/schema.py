"""ZTF's writer schemas, version by version, as the packets embed them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from ztfcat.store.fields import FIELDS, KNOWN_VERSIONS

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


def check_version(version: str) -> str:
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"unknown ZTF alert schema version {version!r}; known: {', '.join(KNOWN_VERSIONS)}")
    return version


def new_style(version: str) -> bool:
    """4.x schemas are written with sorted keys and ``["null", T]`` unions; older ones with ``[T, "null"]``."""
    return int(version.split(".")[0]) >= 4


def field_type(part: str, name: str, version: str) -> tuple[str, bool]:
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
    return json.loads(schema_json(check_version(version)))


@cache
def schema_json(version: str) -> str:
    """ZTF's writer schema of ``version`` as its packets embed it: ``ztfcat/schemas/<version>/alert.avsc``.

    Kept as the packets' own text (key order, union order, escaping), so a synthetic header is a real one.
    """
    path = resources.files("ztfcat") / "schemas" / version / "alert.avsc"
    return path.read_text(encoding="utf-8").removesuffix("\n")
