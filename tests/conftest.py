"""Fixtures shared by the suite: a catalog on every database, the shared sample data, services.

``catalog`` runs each test that uses it twice: on SQLite, and on a fresh database of the PostgreSQL
server named by ``ZTFCAT_TEST_POSTGRES_URL`` (marked ``postgres``; skipped without a server, except in
CI, where a missing server is an error rather than a silent skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gcs_emulator import gcs_bucket, gcs_client, gcs_emulator  # noqa: F401 - fixtures
from tests.pg import fresh_database, head_database, postgres_url

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ALERTS = SHARED / "ztf-alerts"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's own catalog, data dir or the real archive through the environment."""
    for var in ("ZTFCAT_DATA_DIR", "ZTFCAT_DATABASE_URL", "ZTFCAT_ARCHIVE_URL", "ZTFCAT_LAYOUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("ZTFCAT_BLOB_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh catalog database: a SQLite file, or a new PostgreSQL database.

    The PostgreSQL database already holds an empty catalog at head (a copy: creating its partitions
    takes seconds), unless the test is marked ``empty_database`` (first opens, migrations).
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    server = postgres_url()
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide ZTFCAT_TEST_POSTGRES_URL (see .ci/start-postgres)")
        pytest.skip("no PostgreSQL server: set ZTFCAT_TEST_POSTGRES_URL (see .ci/start-postgres)")
    empty = request.node.get_closest_marker("empty_database") is not None
    with (fresh_database if empty else head_database)(server) as url:
        yield url


@pytest.fixture
def catalog(database_url, tmp_path, request):
    """An empty :class:`ztfcat.Catalog` on each database, with its own data directory; in the default
    (pack) layout, or the files layout for tests marked ``files_layout``."""
    from ztfcat import Catalog

    layout = "files" if request.node.get_closest_marker("files_layout") else None
    cat = Catalog(database_url, tmp_path / "data", layout=layout)
    yield cat
    cat.close()


@pytest.fixture(scope="session")
def shared_alerts() -> Path:
    """The real sample alerts in ../shared/data/ztf-alerts; tests using it skip where it is absent."""
    if not (ALERTS / "MANIFEST.tsv").is_file():
        pytest.skip("../shared/data/ztf-alerts is not here")
    return ALERTS
