"""The CLI: thin commands over the library, clean errors, and every command documented in the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.tarballs import tar_members
from ztfcat.cli.root import main
from ztfcat.testing.synthetic import make_night

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(catalog_args, *args, ok=True):
    result = CliRunner().invoke(main, [*catalog_args, *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def cli_catalog(database_url, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180819.tar.gz", n_alerts=15, seed=12)
    args = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    return args, spec


def test_ingest_and_look_around(cli_catalog, tmp_path):
    args, spec = cli_catalog
    out = _run(args, "ingest", str(spec.path)).output
    assert "complete, 15 alerts" in out
    assert "already complete" in _run(args, "ingest", str(spec.path)).output
    report = json.loads(
        _run(args, "ingest", "--json", "--force", str(spec.path)).output.strip().splitlines()[-1]
    )
    assert report["n_alerts"] == 15 and report["md5"] == spec.md5
    assert spec.path.name in _run(args, "releases").output
    info = _run(args, "info").output
    assert "15 in 1 release;" in info and "4.02: 15" in info
    lines = _run(args, "alerts", "--where", "fid >= 1", "-n", "0", "--format", "json").output.splitlines()
    assert sorted(json.loads(line)["candid"] for line in lines) == sorted(spec.candids)
    csv = _run(args, "alerts", "-n", "3", "--format", "csv", "-c", "candid,magpsf").output.splitlines()
    assert csv[0] == "candid,magpsf" and len(csv) == 4
    candid = spec.candids[0]
    shown = json.loads(_run(args, "show", str(candid)).output)
    assert shown["candid"] == candid and shown["cutoutScience"]["stampData"].endswith("bytes>")
    _run(args, "show", str(candid), "--raw", "-o", str(tmp_path / "x.avro"))
    (packet,) = [data for name, data in tar_members(spec.path).items() if name.endswith(f"{candid}.avro")]
    assert (tmp_path / "x.avro").read_bytes() == packet
    counted = _run(args, "sql", "SELECT count(*) AS n FROM alerts", "--format", "json").output
    assert json.loads(counted) == {"n": 15}


def test_errors_are_one_clean_line(cli_catalog, tmp_path):
    args, _spec = cli_catalog
    bad = tmp_path / "ztf_public_20180820.tar.gz"
    bad.write_bytes(b"not gzip at all")
    result = _run(args, "ingest", str(bad), ok=False)
    assert result.exit_code == 1 and "ztf_public_20180820.tar.gz is not a gzip file" in result.output
    assert "Traceback" not in result.output
    result = _run(args, "alerts", "--where", "nosuch > 1", ok=False)
    assert result.exit_code == 1 and "unknown column 'nosuch'" in result.output
    result = _run(args, "sql", "DROP TABLE alerts", ok=False)
    assert result.exit_code == 1 and "writes are not allowed (read-only catalog): DROP TABLE" in result.output
    result = _run(args, "show", "42", ok=False)
    assert result.exit_code == 1 and "no alert with candid 42" in result.output


def test_layout_command(cli_catalog):
    args, spec = cli_catalog
    _run(args, "ingest", str(spec.path))
    assert _run(args, "layout").output.strip() == "pack"
    assert "1 release converted" in _run(args, "layout", "files").output
    assert _run(args, "layout").output.strip() == "files"


def test_every_command_is_documented_in_the_readme():
    readme = README.read_text()
    documented = set(re.findall(r"`ztfcat ([a-z][a-z-]*)", readme))
    commands = set(main.commands)
    assert commands - documented == set(), f"undocumented commands: {sorted(commands - documented)}"
