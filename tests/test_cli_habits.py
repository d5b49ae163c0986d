"""The command line as people use it: -h, cheap start-up, and/or conditions, readable tables, progress
bars on a terminal only, refusals that say why, ``ztfcat columns``; and ``to_pandas``.

Expected results come from the tarball itself (``tarfile`` + ``fastavro``), from SQLite's own idea of
the schema (``PRAGMA table_info``), or from a real pseudo-terminal (``pty``) where a terminal matters.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import click
import fastavro
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from tests.tarballs import tar_members
from ztfcat import Catalog
from ztfcat.cli.output import display, plural
from ztfcat.cli.progress import Bar
from ztfcat.cli.root import main
from ztfcat.store.fields import FIELDS
from ztfcat.testing.synthetic import make_night

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "astropy", "numpy", "matplotlib", "fastavro", "pandas", "tqdm")


def run(args, *more, ok=True, **kwargs):
    result = CliRunner().invoke(main, [*args, *more], **kwargs)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def night(tmp_path):
    return make_night(tmp_path / "ztf_public_20180819.tar.gz", n_alerts=40, seed=31)


@pytest.fixture
def records(night):
    """Candidate records of the night, by candid, read with fastavro from the tar members."""
    out = {}
    for name, data in tar_members(night.path).items():
        if name.endswith(".avro"):
            alert = next(fastavro.reader(io.BytesIO(data)))
            out[alert["candid"]] = {**alert["candidate"], "objectId": alert["objectId"]}
    return out


@pytest.fixture
def args(database_url, tmp_path, night):
    catalog_args = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    run(catalog_args, "ingest", str(night.path))
    return catalog_args


def imported(argv: list[str], env_extra: dict | None = None) -> set[str]:
    """Top-level modules a fresh ``python -m ztfcat.cli.root ARGV`` imports (``-X importtime``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ztfcat.cli.root", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {m.group(1).split(".")[0] for m in re.finditer(r"\|\s+([\w.]+)$", proc.stderr, re.M)}


# -- -h and start-up -------------------------------------------------------------------------------


def test_dash_h_everywhere():
    top = run([], "-h").output
    assert top.startswith("Usage: ") and "-h, --help" in top and top == run([], "--help").output
    for name, command in main.commands.items():
        result = run([], name, "-h")
        assert "Usage:" in result.output and "-h, --help" in result.output, name
        for sub in getattr(command, "commands", {}):
            assert "Usage:" in run([], name, sub, "-h").output
    assert run([], "-V").output.startswith("ztfcat, version")


def test_version_and_help_import_nothing_heavy():
    for argv in (["--version"], ["--help"], ["alerts", "--help"]):
        assert not set(HEAVY) & imported(argv), argv


def test_a_query_imports_the_database_only(tmp_path):
    spec = make_night(tmp_path / "ztf_public_20180601.tar.gz", n_alerts=3, seed=2, cutouts=False)
    database = tmp_path / "catalog.sqlite"
    with Catalog(f"sqlite:///{database}", tmp_path / "data") as catalog:
        catalog.ingest(spec.path)
    mods = imported(["--data-dir", str(tmp_path / "data"), "--database-url", f"sqlite:///{database}",
                     "alerts", "-n", "1"])  # fmt: skip
    assert "sqlalchemy" in mods
    assert not {"astropy", "numpy", "matplotlib", "fastavro", "pandas"} & mods


@pytest.mark.slow
def test_startup_benchmark_prints_its_table():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--runs", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["command"] for r in rows] == ["--version", "--help", "alerts -n 1"], proc.stderr
    for r in rows:
        assert r["runs"] == 5 and 0 < r["min"] <= r["median"] <= r["max"] and r["cpu_median"] > 0


# -- --where with and / or / parentheses -----------------------------------------------------------------


def _candids(result) -> list[int]:
    return [json.loads(line)["candid"] for line in result.output.splitlines()]


def test_where_and_or_parentheses(args, records):
    got = run(args, "alerts", "-w", "rb > 0.5 and fid = 1", "-n", "0", "--format", "json")
    assert _candids(got) == sorted(c for c, r in records.items() if r["rb"] > 0.5 and r["fid"] == 1)
    got = run(
        args, "alerts", "-w", "(fid = 2 or magpsf < 18.5) AND NOT rb <= 0.3", "-n", "0", "--format", "json"
    )
    assert _candids(got) == sorted(
        c for c, r in records.items() if (r["fid"] == 2 or r["magpsf"] < 18.5) and not r["rb"] <= 0.3
    )
    # repeated --where still ANDs, keyword filters still work beside a combined condition
    some = next(iter(records.values()))["objectId"]
    got = run(
        args, "alerts", "-w", "fid = 1 or fid = 2", "-w", "rb >= 0", "--object", some, "--format", "json"
    )
    assert _candids(got) == sorted(c for c, r in records.items() if r["objectId"] == some)
    assert _candids(run(args, "alerts", "--night", "2018-08-19", "-n", "0", "--format", "json")) == sorted(
        records
    )


def test_where_errors_are_one_line_and_bind_values(args, records):
    bad = run(args, "alerts", "-w", "rb > 0.9 and nosuch = 1", ok=False)
    assert bad.exit_code == 1 and "unknown column 'nosuch'" in bad.output
    assert "never closed" in run(args, "alerts", "-w", "(rb > 0.9", ok=False).output
    injected = run(args, "alerts", "-w", "objectId = \"x' or '1'='1\" or fid = 9", "--format", "json")
    assert injected.output == ""  # the quote is a value, not SQL


# -- display ---------------------------------------------------------------------------------------------


def test_tables_round_floats_and_csv_keeps_them(args, records):
    table = run(args, "alerts", "-c", "candid,jd,magpsf,rb", "-n", "3").output.splitlines()
    header, rule, *rows = table
    assert header.split() == ["candid", "jd", "magpsf", "rb"] and set(rule) <= {"-", " "}
    for line in rows:
        for cell in line.split()[1:]:
            assert len(cell.split(".")[1]) <= 6, line
    rows = list(
        csv.DictReader(
            io.StringIO(run(args, "alerts", "-c", "candid,magpsf", "-n", "0", "--format", "csv").output)
        )
    )
    as_float32 = {int(r["candid"]): _f32(float(r["magpsf"])) for r in rows}  # magpsf is a float32 field
    assert as_float32 == {c: _f32(r["magpsf"]) for c, r in records.items()}
    jd_csv = run(args, "alerts", "-c", "candid,jd", "-n", "0", "--format", "csv").output
    jds = {int(r["candid"]): float(r["jd"]) for r in csv.DictReader(io.StringIO(jd_csv))}
    assert jds == {c: r["jd"] for c, r in records.items()}  # float64, every digit
    assert any(len(repr(jd).split(".")[1]) > 6 for jd in jds.values())  # more than the table shows


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


def test_headers_red_on_a_terminal_only(args):
    coloured = run(args, "alerts", "-n", "1", color=True).output
    assert coloured.startswith(click.style("", fg="red", bold=True, reset=False)) and "\x1b[0m" in coloured
    assert "\x1b[" not in run(args, "alerts", "-n", "1").output


def test_display_rules():
    assert display(20.168441772460938) == "20.168442"
    assert display(2458349.659722222) == "2458349.659722"
    assert display(0.00001234) == "1.234e-05"
    assert display(None) == "" and display(float("nan")) == "" and display(3) == "3"
    assert plural(1, "release") == "1 release" and plural(2, "release") == "2 releases"
    assert plural(0, "bad member") == "0 bad members"


def test_plurals_in_info(args):
    info = run(args, "info").output
    assert "40 in 1 release;" in info and "0 bad members" in info and "1 releases" not in info


# -- progress --------------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_rate_and_eta_on_a_terminal_and_nothing_in_a_pipe():
    screen, pipe = _Terminal(), io.StringIO()
    for out in (screen, pipe):
        with Bar("ztf_public_20180819.tar.gz", 4_000_000, file=out) as bar:
            for done in range(0, 4_000_001, 500_000):
                bar.to(done, f"{done // 1000} alerts")
    drawn = screen.getvalue()
    assert "ztf_public_20180819.tar.gz" in drawn and "100%" in drawn and "4.00M/4.00M" in drawn
    assert "B/s" in drawn and "<00:00" in drawn and "4000 alerts" in drawn  # rate, ETA, alerts so far
    assert pipe.getvalue() == ""
    hidden = _Terminal()
    with Bar("x", 10, "alert", hidden=True, file=hidden) as bar:
        bar.add(10)
    assert hidden.getvalue() == ""


def _on_a_terminal(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a real pseudo-terminal; its exit status and screen."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return proc.wait(timeout=60), screen.decode("utf-8", "replace")


@pytest.mark.slow
def test_ingest_export_delete_draw_bars_on_a_real_terminal(tmp_path, night):
    cli = [sys.executable, "-m", "ztfcat.cli.root", "--data-dir", str(tmp_path / "data")]
    status, screen = _on_a_terminal([*cli, "ingest", str(night.path)])
    assert status == 0 and "ztf_public_20180819.tar.gz: 100%|" in screen
    assert "B/s" in screen and "40 alerts]" in screen and "<00:00" in screen  # rate, alerts, ETA
    status, screen = _on_a_terminal([*cli, "export", "--to-dir", str(tmp_path / "out")])
    assert status == 0 and "exporting: 100%|" in screen and "40/40" in screen and "alert/s" in screen
    status, screen = _on_a_terminal([*cli, "delete", "-y"])
    assert status == 0 and "deleting: 100%|" in screen and "1/1" in screen


def test_ingest_and_export_stay_quiet_in_a_pipe(database_url, tmp_path, night):
    catalog_args = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    result = run(catalog_args, "ingest", str(night.path))
    assert "\r" not in result.stderr and "%|" not in result.stderr
    result = run(catalog_args, "export", "--to-dir", str(tmp_path / "out"))
    assert "\r" not in result.stderr and len(list((tmp_path / "out").iterdir())) == 40


def test_demo_has_no_hand_written_progress_lines():
    source = (ROOT / "ztfcat" / "testing" / "demo.py").read_text()
    assert "\\r" not in source and "DownloadBars" in source


# -- refusals --------------------------------------------------------------------------------------------


def test_info_without_a_catalog_creates_none(tmp_path):
    data = tmp_path / "empty"
    result = run(["--data-dir", str(data)], "info", ok=False)
    assert result.exit_code == 1 and "no catalog at" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not data.exists()


@pytest.mark.empty_database
def test_info_creates_no_catalog_on_any_database(database_url, tmp_path):
    from sqlalchemy import create_engine

    result = run(["--data-dir", str(tmp_path / "d"), "--database-url", database_url], "info", ok=False)
    assert result.exit_code == 1 and "no catalog at" in result.output
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "catalog.sqlite").exists()
        return
    engine = create_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_delete_draws_one_step_per_release(args, database_url, tmp_path, night):
    other = make_night(tmp_path / "ztf_public_20180820.tar.gz", night="20180820", n_alerts=5, seed=32)
    run(args, "ingest", str(other.path))
    catalog = Catalog(database_url, tmp_path / "data")
    seen: list[str] = []
    try:
        assert catalog.delete(names=[night.path.name, other.path.name], progress=seen.append) == 2
        assert sorted(seen) == sorted([night.path.name, other.path.name]) and catalog.count() == 0
    finally:
        catalog.close()


def test_export_of_an_empty_selection_writes_nothing(args, tmp_path):
    out = tmp_path / "none.tar.gz"
    result = run(args, "export", "-w", "rb > 2", "--to-tar", str(out), ok=False)
    assert result.exit_code == 1 and "no alerts match" in result.output
    assert not out.exists()


def test_show_raw_refuses_a_terminal(args, night, tmp_path):
    candid = night.candids[0]
    packet = tar_members(night.path)[f"{candid}.avro"]
    command = [sys.executable, "-m", "ztfcat.cli.root", *args, "show", "--raw", str(candid)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(command, stdout=follower, stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2 and b"give -o FILE" in proc.stderr
    piped = subprocess.run(command, capture_output=True, env=env, timeout=60)
    assert piped.returncode == 0 and piped.stdout == packet
    out = tmp_path / "a.avro"
    run(args, "show", "--raw", str(candid), "-o", str(out))
    assert out.read_bytes() == packet


# -- columns ---------------------------------------------------------------------------------------------


def test_catalog_columns_match_the_database_and_ztf_docs(args, database_url, tmp_path):
    catalog = Catalog(database_url, tmp_path / "data")
    try:
        for table in ("alerts", "prv_candidates", "fp_hists", "releases"):
            names = [c["name"] for c in inspect(catalog.engine).get_columns(table)]
            assert [c[0] for c in catalog.columns(table)] == names, table
        docs = {name: doc for name, _type, doc in catalog.columns()}
        for name, (_avro, _nullable, doc) in FIELDS["candidate"].items():
            assert docs[name] == doc
        kinds = {name: kind for name, kind, _doc in catalog.columns()}
        # Avro floats are stored as doubles: every float32 reads back exactly
        assert kinds["jd"] == "DOUBLE" and kinds["magpsf"] == "DOUBLE" and kinds["fid"] == "INTEGER"
    finally:
        catalog.close()


def test_columns_command(tmp_path):
    result = run(["--data-dir", str(tmp_path / "nowhere")], "columns", "--format", "json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {r["column"] for r in rows} >= {"candid", "objectId", "jd", "rb", "ssnamenr"}
    assert next(r for r in rows if r["column"] == "fid")["description"] == FIELDS["candidate"]["fid"][2]
    searched = run([], "columns", "-s", "solar system").output
    assert "ssnamenr" in searched and "magpsf" not in searched
    prv = run([], "columns", "prv_candidates").output
    assert "alert_candid" in prv and "hpx" not in prv
    assert run([], "columns", "nosuch", ok=False).exit_code == 1
    assert not (tmp_path / "nowhere").exists()


def test_catalog_columns_search_names_and_descriptions():
    every = Catalog().columns("alerts")
    found = Catalog().columns("alerts", "Solar SYSTEM")
    assert found == [r for r in every if "solar system" in r[0].lower() or "solar system" in r[2].lower()]
    assert "ssnamenr" in [r[0] for r in found] and len(found) < len(every)
    assert [r[0] for r in Catalog().columns("alerts", "magpsf")] == [
        r[0] for r in every if "magpsf" in r[0].lower() or "magpsf" in r[2].lower()
    ]


def test_readme_schema_tables_are_generated_and_fresh():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "schema_columns.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout
    readme = (ROOT / "README.md").read_text()
    assert "<details><summary><code>alerts</code>" in readme and "| `ssnamenr` | TEXT |" in readme


@pytest.mark.shared
def test_real_alerts_write_the_string_null_in_ssnamenr(shared_alerts):
    """What the README says about ``ssnamenr``: never SQL NULL, the string 'null' when no object."""
    values = []
    for path in sorted(shared_alerts.rglob("*.avro"))[:300]:
        with open(path, "rb") as fh:
            values += [r["candidate"].get("ssnamenr", "absent") for r in fastavro.reader(fh)]
    assert values and None not in values and "null" in values


# -- pandas ----------------------------------------------------------------------------------------------


def test_to_pandas(args, database_url, tmp_path, records):
    catalog = Catalog(database_url, tmp_path / "data")
    try:
        frame = catalog.query("rb > 0.5", columns=["candid", "objectId", "magpsf"], limit=None).to_pandas()
    finally:
        catalog.close()
    expected = {c: r["magpsf"] for c, r in records.items() if r["rb"] > 0.5}
    assert dict(zip(frame["candid"].tolist(), frame["magpsf"].tolist(), strict=True)) == pytest.approx(
        expected
    )
