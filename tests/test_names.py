"""The one parser of release names and nights (ztfcat.sources.names), against independent readings."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from ztfcat.errors import InvalidNightError, InvalidQueryError
from ztfcat.sources.names import classify, night_file_name, night_of, parse_night, release_key
from ztfcat.store.filters import as_date


def _every_day(first=date(2017, 12, 25), last=date(2026, 3, 3)):
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def test_parse_night_reads_both_forms_of_every_day_as_strptime_does():
    for day in _every_day():
        for text, fmt in ((f"{day:%Y-%m-%d}", "%Y-%m-%d"), (f"{day:%Y%m%d}", "%Y%m%d")):
            assert parse_night(text) == datetime.strptime(text, fmt).date() == day
            assert parse_night(f"  {text}\n") == day
    assert parse_night(datetime(2019, 7, 1, 23, 59)) == date(2019, 7, 1)
    assert parse_night(date(2019, 7, 1)) == date(2019, 7, 1)


@pytest.mark.parametrize(
    "text", ["2018-06-31", "20180631", "2019-02-29", "2018-13-01", "2018/06/01", "18-06-01", ""]
)
def test_a_date_that_is_not_a_night_is_refused_naming_it(text):
    with pytest.raises(InvalidNightError, match="is not a night"):
        parse_night(text)
    with pytest.raises(InvalidQueryError, match="is not a night"):  # the filters' error, same rule
        as_date(text)


def test_the_file_name_of_a_night_is_its_release_and_names_it_back():
    for day in _every_day():
        name = night_file_name(day.year, day.month, day.day)
        release = classify(name)
        assert release is not None and release.night == day and release.kind == "public"
        assert night_of(name) == day
        assert release_key(name) == name.removesuffix(".tar.gz")
    with pytest.raises(InvalidNightError):
        night_file_name(2018, 6, 31)


@pytest.mark.parametrize(
    ("name", "night"),
    [
        ("ztf_public_20180819.tar.gz", date(2018, 8, 19)),
        ("ztf_public_20191109_programid3.tar.gz", date(2019, 11, 9)),
        ("copy_of_20180819.tgz", date(2018, 8, 19)),  # any file: its first 8-digit date
        ("run7_20180631_20180701.tar", date(2018, 7, 1)),  # 20180631 is no date; the next is
        ("ztf_public_201808190.tar.gz", None),  # 9 digits are not a night
        ("alerts.tar.gz", None),
    ],
)
def test_night_of_a_local_file(name, night):
    assert night_of(name) == night


@pytest.mark.parametrize("name", ["", ".tar.gz", "..", "a/b.tar.gz", "a\\b.tar", "nul\0.tar"])
def test_a_release_key_must_be_one_safe_path_component(name):
    with pytest.raises(Exception, match="not a usable release name"):
        release_key(name)


def test_suffixes_are_removed_whole_never_character_by_character():
    assert release_key("night_tarz.tar.gz") == "night_tarz"
    assert release_key("a.tgz") == "a" and release_key("a.tar") == "a" and release_key("a.gz") == "a.gz"
