"""Raw exports: the archive's own bytes out, to a folder or a tarball that ingests again unchanged."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.pg import fresh_database, postgres_url
from ztfcat import Catalog
from ztfcat.errors import InvalidQueryError, ZtfcatError
from ztfcat.export.raw import export_raw
from ztfcat.store.tables import CANDIDATE_COLUMNS, alerts
from ztfcat.testing.synthetic import make_night


def members(path: Path) -> dict[str, bytes]:
    """Every file member of a tarball by name, read in stream mode."""
    out = {}
    with tarfile.open(path, "r|*") as tar:
        for info in tar:
            if info.isfile():
                out[info.name] = tar.extractfile(info).read()
    return out


@pytest.fixture(params=["files", "pack"])
def filled(request, database_url, tmp_path):
    """A catalog (each database, each blob layout) holding two synthetic nights of mixed versions."""
    catalog = Catalog(database_url, tmp_path / "data", layout=request.param)
    originals: dict[int, bytes] = {}
    nights = {}
    for night, n, seed in (("20200101", 24, 1), ("20200102", 16, 2)):
        spec = make_night(
            tmp_path / f"ztf_public_{night}.tar.gz",
            night=night,
            n_alerts=n,
            seed=seed,
            version=["3.3", "4.02"],
        )
        catalog.ingest(spec.path)
        nights[night] = spec.candids
        originals.update({int(name[: -len(".avro")]): data for name, data in members(spec.path).items()})
    yield catalog, originals, nights
    catalog.close()


@pytest.fixture
def fresh(database_url, tmp_path):
    """A second, empty catalog on the same kind of database."""
    if database_url.startswith("sqlite"):
        catalog = Catalog(f"sqlite:///{tmp_path / 'fresh.sqlite'}", tmp_path / "fresh-data")
        yield catalog
        catalog.close()
        return
    with fresh_database(postgres_url()) as url:
        catalog = Catalog(url, tmp_path / "fresh-data")
        yield catalog
        catalog.close()


def test_export_to_a_folder_writes_the_original_bytes(filled, tmp_path: Path) -> None:
    catalog, originals, _ = filled
    wanted = catalog.alert_ids("fid = 1")
    assert 0 < len(wanted) < len(originals)
    seen = []
    report = export_raw(
        catalog.engine,
        catalog.data_dir,
        "fid = 1",
        to_dir=tmp_path / "out",
        progress=lambda n, b: seen.append(n),
    )
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == sorted(f"{c}.avro" for c in wanted)
    for path in files:
        candid = int(path.stem)
        assert path.read_bytes() == originals[candid] == catalog.get_alert(candid, raw=True)
    assert report.n_alerts == len(wanted) and seen == list(range(1, len(wanted) + 1))
    assert report.n_bytes == sum(len(originals[c]) for c in wanted)

    # Again into the same folder: same bytes, nothing to complain about.
    export_raw(catalog.engine, catalog.data_dir, "fid = 1", to_dir=tmp_path / "out")
    files[0].write_bytes(b"something else")
    with pytest.raises(ZtfcatError, match=files[0].name):
        export_raw(catalog.engine, catalog.data_dir, "fid = 1", to_dir=tmp_path / "out")
    export_raw(catalog.engine, catalog.data_dir, "fid = 1", to_dir=tmp_path / "out", overwrite=True)
    assert files[0].read_bytes() == originals[int(files[0].stem)]


def test_exported_tarball_ingests_into_an_identical_catalog(filled, fresh, tmp_path: Path) -> None:
    catalog, originals, nights = filled
    tarball = tmp_path / "export" / "ztf_public_20200102.tar.gz"
    report = export_raw(catalog.engine, catalog.data_dir, to_tar=tarball, night="2020-01-02")
    assert report.n_alerts == len(nights["20200102"])
    content = members(tarball)
    assert list(content) == [f"{c}.avro" for c in sorted(nights["20200102"])]
    assert all(content[f"{c}.avro"] == originals[c] for c in nights["20200102"])
    assert not list(tarball.parent.glob("*.part"))

    ingested = fresh.ingest(tarball)
    assert (ingested.n_alerts, ingested.n_errors) == (len(nights["20200102"]), 0)
    assert fresh.alert_ids() == sorted(nights["20200102"])
    columns = ["candid", "objectId", "schemavsn", "hpx", "extra", *CANDIDATE_COLUMNS]
    before = catalog.query(night="2020-01-02", columns=columns)
    after = fresh.query(columns=columns)
    assert before.colnames == after.colnames and len(before) == len(after)
    for name in columns:
        assert before[name].tolist() == after[name].tolist(), name
    for candid in nights["20200102"]:
        assert fresh.get_alert(candid, raw=True) == originals[candid]
        assert fresh.get_alert(candid) == catalog.get_alert(candid)


def test_plain_tar_empty_selection_and_refusals(filled, tmp_path: Path) -> None:
    catalog, originals, _ = filled
    plain = tmp_path / "all.tar"
    export_raw(catalog.engine, catalog.data_dir, to_tar=plain)
    assert plain.read_bytes()[:2] != b"\x1f\x8b"
    assert members(plain) == {f"{c}.avro": data for c, data in sorted(originals.items())}

    with pytest.raises(ZtfcatError, match="all.tar already exists"):
        export_raw(catalog.engine, catalog.data_dir, to_tar=plain)
    report = export_raw(catalog.engine, catalog.data_dir, "fid = 2", to_tar=plain, overwrite=True)
    assert len(members(plain)) == report.n_alerts == len(catalog.alert_ids("fid = 2"))

    empty = export_raw(catalog.engine, catalog.data_dir, "rb > 2", to_tar=tmp_path / "none.tgz")
    assert empty.n_alerts == 0 and members(tmp_path / "none.tgz") == {}

    with pytest.raises(InvalidQueryError, match="exactly one"):
        export_raw(catalog.engine, catalog.data_dir)
    with pytest.raises(InvalidQueryError, match="exactly one"):
        export_raw(catalog.engine, catalog.data_dir, to_dir=tmp_path / "d", to_tar=tmp_path / "t.tar")
    with pytest.raises(InvalidQueryError, match="not a tarball name"):
        export_raw(catalog.engine, catalog.data_dir, to_tar=tmp_path / "alerts.zip")
    with pytest.raises(InvalidQueryError, match="nosuch"):
        export_raw(catalog.engine, catalog.data_dir, "nosuch = 1", to_dir=tmp_path / "d")


def test_a_damaged_packet_fails_the_export_and_leaves_no_tarball(filled, tmp_path: Path) -> None:
    catalog, _, _ = filled
    with catalog.engine.connect() as conn:
        victim, path, offset, size = conn.execute(
            select(alerts.c.candid, alerts.c.blob_path, alerts.c.blob_offset, alerts.c.blob_size)
            .order_by(alerts.c.blob_offset.desc(), alerts.c.candid.desc())
            .limit(1)
        ).one()
    blob = catalog.data_dir / path
    if offset is None:
        blob.unlink()  # files layout: the packet is gone
    else:
        with open(blob, "r+b") as fh:  # pack layout: the pack ends inside the packet
            fh.truncate(offset + size // 2)
    target = tmp_path / "broken.tar.gz"
    with pytest.raises(ZtfcatError, match=f"alert {victim}"):
        export_raw(catalog.engine, catalog.data_dir, to_tar=target)
    assert not target.exists() and not list(tmp_path.glob("broken*"))
