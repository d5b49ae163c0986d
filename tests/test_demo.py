"""``ztfcat demo``: the real download path against a local synthetic archive, no network."""

from __future__ import annotations

import sqlite3

import pytest

from ztfcat.errors import ZtfcatError
from ztfcat.testing.demo import demo_nights, run_demo


def test_demo_nights_have_one_empty():
    assert demo_nights(3, 25) == [("20180601", 25), ("20180602", 0), ("20180603", 25)]
    assert demo_nights(1, 5) == [("20180601", 5)]
    with pytest.raises(ZtfcatError):
        demo_nights(0, 5)


def test_demo_builds_a_catalog_that_sqlite3_opens(tmp_path, monkeypatch):
    monkeypatch.setenv("ZTFCAT_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/not_used")  # ignored
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", n_nights=3, n_alerts=20, echo=lines.append)
    text = "\n".join(lines)
    assert result.n_releases == 3 and result.n_alerts == 40
    assert result.database == tmp_path / "demo" / "catalog.sqlite"
    assert result.stamps is not None and result.stamps.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ztf_public_20180602.tar.gz: complete, 0 alerts" in text
    assert f"sqlite3 {result.database}" in text and str(result.stamps) in text
    with sqlite3.connect(result.database) as conn:
        rows = dict(conn.execute("SELECT name, n_alerts FROM releases WHERE status = 'complete'"))
        assert rows == {f"ztf_public_2018060{d}.tar.gz": n for d, n in ((1, 20), (2, 0), (3, 20))}
        assert conn.execute("SELECT COUNT(*) FROM alerts").fetchone() == (40,)
    assert not list((result.data_dir / "downloads").iterdir())


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ZtfcatError, match="not empty"):
        run_demo(tmp_path, echo=lambda _line: None)
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]
