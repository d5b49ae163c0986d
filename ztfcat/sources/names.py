"""Release names and nights: the one place that decides what a file name or a night's text means.

Every room asks here: the archive listing (which files are releases), a bucket listing (the same rule),
the ingest (a release's folder key and the night a local file is named after), the downloads and the
CLI (a night the user typed), and the filters (``night=`` / ``release_night=`` values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from ..errors import InvalidNightError, ZtfcatError

_RELEASE = re.compile(r"ztf_public_(\d{4})(\d{2})(\d{2})(_programid3)?\.tar\.gz")
_DIGITS = re.compile(r"(?<!\d)(\d{8})(?!\d)")
_NIGHT_TEXT = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True, order=True)
class ReleaseName:
    """A file name that is one night's release.

    Attributes
    ----------
    name : str
        The file name, e.g. ``ztf_public_20180601.tar.gz``.
    night : date
        The night it holds (UTC-based, as the archive names it).
    kind : {"public", "programid3"}
        ``programid3`` for the Caltech-time alerts made public later, a separate file for the same night.
    """

    name: str
    night: date
    kind: Literal["public", "programid3"]

    @property
    def programid3(self) -> bool:
        """True for a ``_programid3`` release."""
        return self.kind == "programid3"


def classify(name: str) -> ReleaseName | None:
    """Whether a listed file name (archive or bucket; no folders) is a release, and of which night.

    The rules, decided from the real listing:

    * ``ztf_public_YYYYMMDD.tar.gz`` is the public release of that night (kind ``"public"``).
    * ``ztf_public_YYYYMMDD_programid3.tar.gz`` is a release too, a distinct file for the same night
      (kind ``"programid3"``): Caltech-time alerts made public later; 22 such nights exist.
    * Everything else is not a release, including near misses that are really on the archive:
      ``ztf_public_20200211_programid3.tar`` (no ``.gz``, 0 bytes), ``ztf_20200219_programid1.tar.tar``
      (0 bytes), ``MD5SUMS``, ``VALIDATE``, ``VALIDATE.out``, and any name whose 8 digits are not a
      calendar date (``ztf_public_20180631.tar.gz``).

    The whole name must match; suffixes are never stripped character-wise (``rstrip('.tar.gz')`` would
    also eat a trailing ``t``, ``a``, ``r``, ``g``, ``z`` or ``.``).
    """
    match = _RELEASE.fullmatch(name)
    if match is None:
        return None
    year, month, day, programid3 = match.groups()
    try:
        night = date(int(year), int(month), int(day))
    except ValueError:
        return None
    return ReleaseName(name, night, "programid3" if programid3 else "public")


def night_file_name(year: int, month: int, day: int) -> str:
    """The release file name of a night, ``ztf_public_YYYYMMDD.tar.gz``.

    Raises
    ------
    InvalidNightError
        If the numbers are not a calendar date; raised here so no request is ever made for it.
    """
    try:
        night = date(year, month, day)
    except (TypeError, ValueError) as exc:
        raise InvalidNightError(f"{year:04d}-{month:02d}-{day:02d} is not a night: {exc}") from exc
    return f"ztf_public_{night:%Y%m%d}.tar.gz"


def release_key(name: str) -> str:
    """The folder name of a release: its file name without the tar suffix (never ``rstrip``).

    Any file may be ingested, so any name is taken that is safe as one path component.
    """
    base = name
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if not base or base in (".", "..") or "/" in base or "\\" in base or "\0" in base:
        raise ZtfcatError(f"{name!r} is not a usable release name")
    return base


def night_of(name: str) -> date | None:
    """The night a release file is named after, if any: the archive's rule first, then the first run
    of exactly 8 digits that is a calendar date (a local copy may be renamed ``night_20180819.tgz``)."""
    release = classify(name)
    if release is not None:
        return release.night
    for match in _DIGITS.finditer(name):
        try:
            return datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:
            continue
    return None


def parse_night(value: str | date | datetime, error: type[ValueError] = InvalidNightError) -> date:
    """A night from ``YYYY-MM-DD`` or ``YYYYMMDD`` text, a date or a datetime (its date).

    Raises
    ------
    InvalidNightError (or ``error``)
        Not a calendar date (``2018-06-31``) or not in either form.
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    match = _NIGHT_TEXT.fullmatch(str(value).strip())
    if match is None:
        raise error(f"{value!r} is not a night: write it YYYY-MM-DD")
    year, month, day = (int(g) for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise error(f"{value} is not a night: {exc}") from exc
