"""Schema management: new catalogs at head, old ones refused with the command to run, migrations shipped."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from sqlalchemy import create_engine, inspect

from ztfcat import Catalog, SchemaOutOfDateError
from ztfcat.store.db import current_revision, make_engine, migrations_dir, upgrade
from ztfcat.store.tables import HEAD_REVISION, metadata


def _schema(engine) -> dict:
    insp = inspect(engine)
    out = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        columns = {c["name"]: (str(c["type"]).split("(")[0], c["nullable"]) for c in insp.get_columns(table)}
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
        )
        out[table] = (columns, indexes)
    out["views"] = sorted(insp.get_view_names())
    return out


def test_head_revision_is_the_scripts_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_new_catalog_is_created_at_head(catalog):
    assert catalog.count() == 0
    assert current_revision(catalog.engine) == HEAD_REVISION
    assert "lightcurves" in inspect(catalog.engine).get_view_names()


@pytest.mark.empty_database
def test_migrations_build_the_same_schema_as_a_new_catalog(database_url, tmp_path):
    migrated = make_engine(database_url)
    try:
        assert upgrade(migrated) == HEAD_REVISION  # on an empty database: created at head
    finally:
        migrated.dispose()
    # the scripts themselves, from nothing: alembic's own command on another database
    other = f"sqlite:///{tmp_path / 'by-alembic.sqlite'}"
    engine = create_engine(other)
    from alembic import command

    from ztfcat.store.db import _alembic_config

    command.upgrade(_alembic_config(engine), "head")
    fresh = create_engine(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    metadata.create_all(fresh)
    assert _schema(engine) == _schema(fresh)
    engine.dispose()
    fresh.dispose()


def test_an_older_catalog_is_refused_with_the_command_to_run(database_url, tmp_path, monkeypatch):
    import ztfcat.store.db as dbmod

    cat = Catalog(database_url, tmp_path / "data")
    assert cat.count() == 0
    cat.close()
    # a ztfcat one migration ahead: the catalog at today's head is older than it needs, and upgradable
    known = dbmod.known_revisions()
    monkeypatch.setattr(dbmod, "HEAD_REVISION", "9999")
    monkeypatch.setattr(dbmod, "known_revisions", lambda: {*known, "9999"})
    with pytest.raises(SchemaOutOfDateError, match="ztfcat db upgrade"):
        Catalog(database_url, tmp_path / "data").count()


def test_tables_without_a_revision_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match="ztfcat db upgrade"):
        Catalog(url, tmp_path).count()


def test_cli_db_upgrade(tmp_path):
    from click.testing import CliRunner

    from ztfcat.cli.root import main

    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert HEAD_REVISION in result.output
    assert (tmp_path / "catalog.sqlite").is_file()


@pytest.mark.slow
def test_the_wheel_ships_the_migrations(tmp_path):
    """An installed user can run ``ztfcat db upgrade``: the scripts are inside the wheel."""
    repo = migrations_dir().parent
    if not (repo / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and "hatchling" in done.stderr:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(repo)],
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("ztfcat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ztfcat/migrations/env.py" in names
    assert any(n.startswith("ztfcat/migrations/versions/0001") for n in names)
    assert "ztfcat/py.typed" in names
