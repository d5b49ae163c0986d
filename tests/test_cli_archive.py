"""The archive commands through click's CliRunner: remote, download, delete, demo."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ztfcat import Catalog
from ztfcat.cli.root import main
from ztfcat.testing.archive_server import ArchiveServer
from ztfcat.testing.synthetic import make_archive

N1, N2, N3 = (f"ztf_public_2018060{d}.tar.gz" for d in (1, 2, 3))


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory):
    root = make_archive(
        tmp_path_factory.mktemp("archive"), [("20180601", 6), ("20180602", 0), ("20180603", 8)]
    )
    (root / "MD5SUMS").unlink()  # the server computes one that lists every file added here
    (root / "VALIDATE").write_text("ok\n")
    return root


@pytest.fixture
def server(archive_root):
    with ArchiveServer(archive_root) as srv:
        yield srv


@pytest.fixture
def run(server, database_url, tmp_path):
    """Run ``ztfcat ...`` on a fresh catalog (both databases) against the local archive."""
    env = {
        "ZTFCAT_ARCHIVE_URL": server.url,
        "ZTFCAT_DATA_DIR": str(tmp_path / "data"),
        "ZTFCAT_DATABASE_URL": database_url,
    }

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    invoke.catalog = lambda: Catalog(database_url, tmp_path / "data", server.url)
    return invoke


def test_commands_are_documented():
    for name in ("remote", "download", "delete", "demo"):
        assert main.commands[name].help, name


def test_remote_lists_releases_with_filters_and_formats(run, archive_root):
    result = run("remote", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [N1, N2, N3]
    assert rows[0]["size"] == (archive_root / N1).stat().st_size and rows[0]["in_catalog"] is False
    assert "3 releases" in result.stderr
    result = run("remote", "--from", "2018-06-02", "--to", "2018-06-02", "--format", "csv")
    assert result.stdout.splitlines()[0].startswith("file,night,kind,size,md5,url")
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [N2]
    assert run("remote", "--from", "2018-06-31").exit_code != 0


def test_download_nights_recent_range_and_summary(run, server):
    result = run("download", "2018-06-03", "-q")
    assert result.exit_code == 0, result.output
    assert f"{N3}: complete, 8 alerts" in result.stdout
    assert "1 release ingested (8 alerts" in result.stderr
    result = run("download", "--recent", "1", "-q")
    assert f"{N2}: complete, 0 alerts" in result.stdout
    result = run("download", "--from", "2018-06-01", "--to", "2018-06-30")
    assert result.exit_code == 0, result.output
    assert f"{N1}: complete, 6 alerts" in result.stdout and N3 not in result.stdout
    assert "1 release ingested (6 alerts" in result.stderr
    result = run("download", "--recent", "2")
    assert "nothing to download" in result.stderr
    result = run("remote", "--format", "json")
    assert all(json.loads(line)["in_catalog"] for line in result.stdout.splitlines())


def test_download_errors_are_clean(run, server):
    result = run("download", "2018-06-31")
    assert result.exit_code != 0 and "not a night" in result.output and server.requests == []
    assert run("download").exit_code != 0
    assert run("download", "2018-06-01", "--recent", "1").exit_code != 0
    server.faults.wrong_md5.add(N3)
    result = run("download", "2018-06-10", "2018-06-03", "2018-06-01", "-q")
    assert result.exit_code == 1
    assert "no release for 2018-06-10" in result.stderr
    assert f"{N3} from" in result.stderr and "expected" in result.stderr
    assert "2 of 3 failed" in result.stderr
    assert f"{N1}: complete, 6 alerts" in result.stdout  # the others go on
    statuses = dict(run.catalog().releases().iterrows("name", "status"))
    assert statuses == {N1: "complete", N3: "failed"}


def test_delete_asks_unless_yes(run):
    assert run("download", "--recent", "3", "-q").exit_code == 0
    result = run("delete", "2018-06-03", input="n\n")
    assert result.exit_code != 0 and "Delete 1 release (8 alerts)" in result.output
    assert run.catalog().count() == 14
    result = run("delete", "2018-06-03", "--yes")
    assert result.exit_code == 0 and "deleted 1 release (8 alerts)" in result.stdout
    catalog = run.catalog()
    assert catalog.count() == 6 and sorted(catalog.releases()["name"]) == [N1, N2]
    result = run("delete", input="y\n")
    assert "Delete ALL 2 releases" in result.output and "deleted 2 releases" in result.stdout
    assert run.catalog().count() == 0
    assert "nothing to delete" in run("delete", "--yes").stderr


def test_demo_command(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--data-dir", str(tmp_path / "d"), "--alerts", "10"])
    assert result.exit_code == 0, result.output
    assert "2 releases" not in result.stdout and "3 releases, 20 alerts" in result.stdout
    assert "sqlite3 " in result.stdout and (tmp_path / "d" / "catalog.sqlite").exists()
