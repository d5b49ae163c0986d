"""Packets on shared storage (ztfcat.store.blobstore): a shared directory and GCS (gcp-storage-emulator).

Every packet read back is compared with the bytes Python's ``tarfile`` reads from the original tarball;
readers are other Catalog objects with data directories of their own, as on another machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from ztfcat import Catalog
from ztfcat.errors import PacketReadError, SettingError, StorageError, ZtfcatError
from ztfcat.store.blobstore import MAX_READ, STAGING, DirectoryStore, open_store
from ztfcat.store.tables import alert_releases, alerts
from ztfcat.testing import synthetic

NIGHT = "ztf_public_20180819.tar.gz"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[Path, dict[int, bytes]]:
    """A synthetic night of full-size packets (cutouts included) and its members' bytes by candid."""
    path = tmp_path_factory.mktemp("night") / NIGHT
    synthetic.make_night(path, night="20180819", n_alerts=24, seed=5)
    return path, _members(path)


def _members(path: Path) -> dict[int, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            int(Path(m.name).stem): tar.extractfile(m).read()
            for m in tar
            if m.isfile() and m.name.endswith(".avro")
        }


@pytest.fixture(params=["directory", pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request, tmp_path) -> str:
    """The root URL of an empty store: a shared directory, or a new bucket on the emulator."""
    if request.param == "directory":
        return str(tmp_path / "shared")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket.name}/ztf/packs"


def _objects(store: str) -> dict[str, bytes]:
    """Every object under the store's root, by URL, read with the storage's own tools (not ztfcat's)."""
    if store.startswith("gs://"):
        from ztfcat.sources import gcs

        bucket, prefix = gcs.parse_gs_url(store)
        blobs = gcs.client().list_blobs(bucket, prefix=prefix)
        return {f"gs://{bucket}/{b.name}": b.download_as_bytes(raw_download=True) for b in blobs}
    root = Path(store)
    return {p.as_uri(): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def _vanish(url: str) -> None:
    if url.startswith("gs://"):
        from ztfcat.sources import gcs

        bucket, name = gcs.parse_gs_url(url)
        gcs.client().bucket(bucket).blob(name).delete()
    else:
        Path(url.removeprefix("file://")).unlink()


def _paths(catalog: Catalog) -> set[str]:
    with catalog.engine.connect() as conn:
        return set(conn.execute(select(alerts.c.blob_path).distinct()).scalars()) | set(
            conn.execute(select(alert_releases.c.blob_path).distinct()).scalars()
        )


def _reader(database_url: str, tmp_path: Path) -> Catalog:
    """A catalog on the same database with a data directory of its own: another machine's reader."""
    return Catalog(database_url, tmp_path / f"reader-{uuid.uuid4().hex[:6]}")


def test_ingest_puts_one_object_per_night_and_reads_back_every_packet(database_url, store, night, tmp_path):
    tarball, members = night
    worker = Catalog(database_url, tmp_path / "worker", blobs=store)
    report = worker.ingest(tarball)
    assert report.status == "complete" and report.n_alerts == len(members)
    root = open_store(store).url
    objects = _objects(store)
    assert len(objects) == 1, objects.keys()
    ((url, body),) = objects.items()
    assert url.startswith(f"{root}/alerts/ztf_public_20180819.") and url.endswith(".tar")
    assert _paths(worker) == {url}  # every row names the object itself
    assert not list((tmp_path / "worker" / STAGING).iterdir())  # nothing left staged
    assert not (tmp_path / "worker" / "alerts").exists()  # and nothing under the data dir
    # The object is a standard tar of the night's packets, byte for byte.
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {int(Path(m.name).stem): tar.extractfile(m).read() for m in tar} == members
    reader = _reader(database_url, tmp_path)
    try:
        for candid, data in members.items():
            assert reader.get_alert(candid, raw=True) == data
        assert list(reader.iter_alerts(raw=True)) == [members[c] for c in sorted(members)]
        assert reader.get_alert(min(members))["candid"] == min(members)  # decoded too
        assert reader.info()["blobs"] == root  # recorded in the catalog
    finally:
        reader.close()
        worker.close()


def test_a_vanished_object_is_a_one_line_error_naming_alert_and_object(database_url, store, night, tmp_path):
    tarball, members = night
    worker = Catalog(database_url, tmp_path / "worker", blobs=store)
    worker.ingest(tarball)
    (url,) = _paths(worker)
    _vanish(url)
    reader = _reader(database_url, tmp_path)
    candid = max(members)
    with pytest.raises(PacketReadError) as caught:
        reader.get_alert(candid, raw=True)
    message = str(caught.value)
    assert "\n" not in message and str(candid) in message and url in message and "no such" in message
    with pytest.raises(PacketReadError, match=str(min(members))):
        next(reader.iter_alerts(raw=True))
    # repair finds the night's object gone: purged, failed naming it, and the next ingest redoes it.
    reader.repair()
    row = reader.release(NIGHT)
    assert row.status == "failed" and url in row.error
    assert reader.count() == 0 and _paths(reader) == set()
    assert worker.ingest(tarball).status == "complete"
    assert {c: reader.get_alert(c, raw=True) for c in members} == members
    (new,) = _paths(worker)
    assert new != url
    worker.close()
    reader.close()


def test_a_failed_upload_leaves_the_night_not_complete_and_a_rerun_completes_it(
    database_url, store, night, tmp_path, request
):
    tarball, members = night
    if store.startswith("gs://"):  # a bucket that does not exist yet
        from ztfcat.sources import gcs

        name = f"ztfcat-late-{uuid.uuid4().hex[:10]}"
        store, make_it_work = f"gs://{name}/p", lambda: gcs.client().create_bucket(name)
    else:  # a file where the store's alerts/ folder must go
        Path(store).mkdir()
        blocker = Path(store) / "alerts"
        blocker.write_text("in the way")
        make_it_work = blocker.unlink
    worker = Catalog(database_url, tmp_path / "worker", blobs=store)
    with pytest.raises(StorageError) as caught:
        worker.ingest(tarball)
    message = str(caught.value)
    assert "\n" not in message and "ztf_public_20180819" in message and "not complete" in message
    row = worker.release(NIGHT)
    assert row.status == "failed" and worker.count() == 0 and _paths(worker) == set()
    assert not list((tmp_path / "worker" / STAGING).iterdir())
    make_it_work()
    assert worker.ingest(tarball).status == "complete"
    reader = _reader(database_url, tmp_path)
    assert {c: reader.get_alert(c, raw=True) for c in members} == members
    reader.close()
    worker.close()


KILLED = """
import os, sys
from ztfcat import Catalog
catalog = Catalog(sys.argv[1], sys.argv[2], blobs=sys.argv[3])
catalog.ingest(sys.argv[4], verify=lambda: os._exit(9))  # every row stored, nothing put yet
"""


@pytest.mark.slow
def test_repair_handles_a_night_killed_before_its_upload(database_url, store, night, tmp_path):
    tarball, members = night
    data = tmp_path / "worker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = textwrap.dedent(KILLED)
    done = subprocess.run([sys.executable, "-c", code, database_url, str(data), store, str(tarball)], env=env)
    assert done.returncode == 9
    worker = Catalog(database_url, data, blobs=store)
    assert worker.release(NIGHT).status == "ingesting"
    (url,) = _paths(worker)  # the rows name the object that was never put
    assert url not in _objects(store)
    assert (data / STAGING / url.rsplit("/", 1)[-1]).is_file()
    reader = _reader(database_url, tmp_path)
    with pytest.raises(PacketReadError, match=f"{min(members)}.*{url}"):
        reader.get_alert(min(members), raw=True)
    worker.repair()
    assert worker.release(NIGHT).status == "failed" and worker.count() == 0
    assert not list((data / STAGING).iterdir())
    assert worker.ingest(tarball).status == "complete"
    assert {c: reader.get_alert(c, raw=True) for c in members} == members
    assert len(_objects(store)) == 1
    reader.close()
    worker.close()


def test_an_object_put_after_another_process_purged_the_night_is_removed(
    database_url, store, night, tmp_path, monkeypatch
):
    """A broken lock: another machine's repair purges the night while this worker still runs.  The
    purge finds no object to remove (none is put yet); the worker then puts its pack, finds the
    release changed and fails.  No row names the object, so the failed ingest removes it itself,
    rather than leave a night's worth of packets in the store that nothing reads or deletes."""
    from ztfcat.ingest import pipeline

    tarball, members = night
    worker = Catalog(database_url, tmp_path / "worker", blobs=store)
    real = pipeline._refresh_objects

    def purged_elsewhere(engine, release_id):  # the last step before the put
        pipeline.purge_release(engine, tmp_path / "elsewhere", release_id, NIGHT)
        pipeline._set(engine, release_id, status="failed", error="interrupted")
        real(engine, release_id)

    monkeypatch.setattr(pipeline, "_refresh_objects", purged_elsewhere)
    with pytest.raises(ZtfcatError, match=f"{NIGHT}: another process changed the release"):
        worker.ingest(tarball)
    assert worker.release(NIGHT).status == "failed" and worker.count() == 0 and _paths(worker) == set()
    assert _objects(store) == {}  # the put object went with the failed ingest
    assert not list((tmp_path / "worker" / STAGING).iterdir())
    monkeypatch.setattr(pipeline, "_refresh_objects", real)
    assert worker.ingest(tarball).status == "complete"
    assert len(_objects(store)) == 1 and _paths(worker) == set(_objects(store))
    assert {c: worker.get_alert(c, raw=True) for c in members} == members
    worker.close()


def test_two_workers_on_one_store_never_collide(store, night, tmp_path):
    tarball, members = night
    first = Catalog(f"sqlite:///{tmp_path / 'a.sqlite'}", tmp_path / "a", blobs=store)
    second = Catalog(f"sqlite:///{tmp_path / 'b.sqlite'}", tmp_path / "b", blobs=store)
    first.ingest(tarball)
    second.ingest(tarball)
    (mine,), (theirs,) = _paths(first), _paths(second)
    assert mine != theirs and set(_objects(store)) == {mine, theirs}
    first.delete(names=[NIGHT])  # removes its own object only
    assert set(_objects(store)) == {theirs}
    assert {c: second.get_alert(c, raw=True) for c in members} == members
    second.delete()
    assert _objects(store) == {}
    first.close()
    second.close()


def test_a_ranged_read_returns_exactly_the_rows_bytes_or_fails(store, night, tmp_path):
    tarball, members = night
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}", tmp_path / "c", blobs=store)
    catalog.ingest(tarball)
    (url,) = _paths(catalog)
    end = len(_objects(store)[url])
    candid = min(members)
    with catalog.engine.begin() as conn:  # a row pointing past the end of its object
        conn.execute(update(alerts).where(alerts.c.candid == candid).values(blob_offset=end - 5))
    with pytest.raises(PacketReadError) as caught:
        catalog.get_alert(candid, raw=True)
    assert str(candid) in str(caught.value) and url in str(caught.value)
    assert "got 5 bytes" in str(caught.value) or "shorter" in str(caught.value)
    with catalog.engine.begin() as conn:  # a damaged size is refused before any request
        conn.execute(update(alerts).where(alerts.c.candid == candid).values(blob_size=MAX_READ + 1))
    with pytest.raises(PacketReadError, match="outside"):
        catalog.get_alert(candid, raw=True)
    other = max(members)
    assert catalog.get_alert(other, raw=True) == members[other]
    catalog.close()


def test_the_recorded_store_is_where_other_workers_put_their_nights(night, tmp_path, monkeypatch):
    tarball, members = night
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    shared = tmp_path / "nfs"
    first = Catalog(url, tmp_path / "one", blobs=shared)
    spec = synthetic.make_night(tmp_path / "ztf_public_20180820.tar.gz", night="20180820", n_alerts=6, seed=8)
    first.ingest(tarball)
    first.close()
    second = Catalog(url, tmp_path / "two")  # no blobs given: the catalog's own store
    assert second.blobs == shared.resolve().as_uri()
    second.ingest(spec.path)
    assert all(p.startswith(shared.resolve().as_uri() + "/alerts/") for p in _paths(second))
    assert len(list((shared / "alerts").iterdir())) == 2
    with pytest.raises(ZtfcatError, match="converted"):
        second.convert_layout("files")
    second.close()
    monkeypatch.setenv("ZTFCAT_BLOB_URL", str(tmp_path / "elsewhere"))
    assert Catalog(url, tmp_path / "three").blobs == (tmp_path / "elsewhere").resolve().as_uri()
    with pytest.raises(ZtfcatError, match="pack"):
        Catalog(url, tmp_path / "four", layout="files").ingest(tarball, force=True)


def test_default_catalogs_keep_their_packets_under_the_data_dir(night, tmp_path):
    tarball, members = night
    for layout, expected in (
        ("files", "alerts/ztf_public_20180819/"),
        ("pack", "alerts/ztf_public_20180819.tar"),
    ):
        catalog = Catalog(f"sqlite:///{tmp_path / layout}.sqlite", tmp_path / layout, layout=layout)
        catalog.ingest(tarball)
        assert all(p.startswith(expected) for p in _paths(catalog)) and catalog.info()["blobs"] is None
        assert {c: catalog.get_alert(c, raw=True) for c in members} == members
        catalog.close()


def test_directory_store_puts_atomically_and_never_overwrites(tmp_path):
    store = DirectoryStore(str(tmp_path / "root"))
    night = tmp_path / "night.tar"
    night.write_bytes(b"x" * 5000)
    url = store.put(night, "alerts/n.1.tar")
    assert url == (tmp_path / "root" / "alerts" / "n.1.tar").as_uri()
    assert store.read(url, 10, 20) == b"x" * 20 and store.exists(url)
    night.write_bytes(b"y" * 10)
    with pytest.raises(StorageError, match="already exists"):
        store.put(night, "alerts/n.1.tar")
    assert (tmp_path / "root" / "alerts" / "n.1.tar").read_bytes() == b"x" * 5000
    assert sorted(p.name for p in (tmp_path / "root" / "alerts").iterdir()) == ["n.1.tar"]  # no partials
    store.delete(url)
    store.delete(url)  # gone already: fine
    assert not store.exists(url)


def test_store_urls_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SettingError, match="unknown scheme"):
        open_store("s3://bucket/x")
    with pytest.raises(SettingError):
        open_store("gs://")
    assert open_store(f"file://{tmp_path}").url == tmp_path.resolve().as_uri()
    assert open_store("gs://b/some/prefix/").url == "gs://b/some/prefix"


def test_cli_ingest_blobs(night, tmp_path):
    from ztfcat.cli.root import main

    tarball, members = night
    base = ["--data-dir", str(tmp_path / "d"), "--database-url", f"sqlite:///{tmp_path / 'c.sqlite'}"]
    result = CliRunner().invoke(main, [*base, "ingest", "--blobs", str(tmp_path / "shared"), str(tarball)])
    assert result.exit_code == 0, result.output
    candid = min(members)
    out = tmp_path / "one.avro"
    result = CliRunner().invoke(main, [*base, "show", "--raw", str(candid), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == members[candid]
    result = CliRunner().invoke(main, [*base, "info"])
    assert result.exit_code == 0 and f"blobs:     {(tmp_path / 'shared').resolve().as_uri()}" in result.output


@pytest.mark.slow
@pytest.mark.gcs
def test_the_lookup_benchmark_runs(tmp_path, gcs_emulator):
    pytest.importorskip("gcp_storage_emulator")
    argv = [sys.executable, str(REPO / "benchmarks" / "shared_blobs.py"), "--alerts", "40", "--lookups", "20"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZTFCAT_", "STORAGE_EMULATOR"))}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [*argv, "--work", str(tmp_path)], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["store"] for r in rows] == ["data dir (pack)", "shared directory", "GCS emulator"]
    assert all(r["alerts"] == 40 and r["median_ms"] > 0 for r in rows) and rows[2]["bare_http_median_ms"] > 0


class _FlakyProxy:
    """An HTTP proxy on 127.0.0.1 in front of the emulator that answers the first ``fail`` packet reads
    (``alt=media`` GETs) with 503, or stalls each one ``stall`` seconds: a real socket, a real client."""

    def __init__(self, upstream: str, fail: int = 0, stall: float = 0.0) -> None:
        import http.server
        import threading

        import requests

        proxy = self
        self.fail, self.stall, self.reads = fail, stall, 0
        session = requests.Session()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if method == "GET" and "alt=media" in self.path:
                    proxy.reads += 1
                    if proxy.stall:
                        time.sleep(proxy.stall)
                    if proxy.reads <= proxy.fail:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                try:
                    got = session.request(
                        method, upstream + self.path, data=body, headers=headers, timeout=10
                    )
                except requests.RequestException:  # the emulator stopped after its test (a stalled read)
                    return
                self.send_response(got.status_code)
                for key, value in got.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(got.content)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(got.content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.gcs
@pytest.mark.parametrize("case", ["transient", "down", "stalled"])
def test_ranged_reads_retry_transient_errors_and_stay_bounded(case, night, tmp_path, gcs_bucket, monkeypatch):
    from ztfcat.store import blobstore

    tarball, members = night
    db = f"sqlite:///{tmp_path / 'c.sqlite'}"
    Catalog(db, tmp_path / "worker", blobs=f"gs://{gcs_bucket.name}/p").ingest(tarball)
    proxy = _FlakyProxy(os.environ["STORAGE_EMULATOR_HOST"], **{
        "transient": {"fail": 2}, "down": {"fail": 10**6}, "stalled": {"stall": 2.0}}[case])  # fmt: skip
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    monkeypatch.setattr(blobstore, "_cache", {})  # a client made now talks to the proxy
    monkeypatch.setattr(blobstore, "RETRY_SECONDS", 1.0)
    monkeypatch.setenv("ZTFCAT_STALL_TIMEOUT", "0.3")
    reader = _reader(db, tmp_path)
    candid = min(members)
    try:
        started = time.monotonic()
        if case == "transient":
            assert reader.get_alert(candid, raw=True) == members[candid]
            assert proxy.reads == 3
        else:
            with pytest.raises(PacketReadError) as caught:
                reader.get_alert(candid, raw=True)
            message = str(caught.value)
            assert "\n" not in message and str(candid) in message and "after retries" in message
            assert time.monotonic() - started < 8  # bounded: the retry deadline, not the stall
            assert proxy.reads >= 2  # it did retry
    finally:
        reader.close()
        proxy.close()


@pytest.fixture
def _pg_blob_db():
    """A fresh PostgreSQL database (the ``database_url`` fixture's, for one chosen combination)."""
    from tests.pg import fresh_database, postgres_url

    if postgres_url() is None:
        pytest.skip("no PostgreSQL server: set ZTFCAT_TEST_POSTGRES_URL")
    with fresh_database(postgres_url()) as url:
        yield url


WORKER = """
import sys
from ztfcat import Catalog
catalog = Catalog(sys.argv[1], sys.argv[2], blobs=sys.argv[3])
print(catalog.ingest(sys.argv[4]).status)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["sqlite-directory", pytest.param("postgres-gcs", marks=[pytest.mark.postgres, pytest.mark.gcs])]
)
def test_workers_on_separate_data_dirs_fill_one_catalog_and_one_store_at_once(kind, night, tmp_path, request):
    if kind == "postgres-gcs":
        database_url = request.getfixturevalue("_pg_blob_db")
        store = f"gs://{request.getfixturevalue('gcs_bucket').name}/packs"
    else:
        database_url, store = f"sqlite:///{tmp_path / 'fleet.sqlite'}", str(tmp_path / "shared")
    tarball, members = night
    other = synthetic.make_night(
        tmp_path / "ztf_public_20180820.tar.gz", night="20180820", n_alerts=10, seed=9
    )
    expected = {**members, **_members(other.path)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database_url, str(tmp_path / f"machine{i}"), store, str(path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, path in enumerate((tarball, other.path))
    ]
    assert [w.communicate(timeout=120)[0].strip() for w in workers] == ["complete", "complete"]
    reader = _reader(database_url, tmp_path)
    try:
        assert {c: reader.get_alert(c, raw=True) for c in reader.alert_ids()} == expected
        assert len(_objects(store)) == 2 and _paths(reader) == set(_objects(store))
    finally:
        reader.close()


def _history_dump(catalog: Catalog) -> dict[str, list[tuple]]:
    """Every light-curve row, ids apart, in a fixed order: what two ingests must agree on."""
    from ztfcat.store.tables import fp_hists, prv_candidates

    out = {}
    with catalog.engine.connect() as conn:
        for table in (prv_candidates, fp_hists):
            cols = [c for c in table.columns if c.name != "id"]
            out[table.name] = sorted(conn.execute(select(*cols)).all(), key=repr)
    return out


@pytest.mark.gcs
def test_a_bucket_stream_derives_history_from_the_staged_pack(night, tmp_path, gcs_bucket):
    """Ingesting a gs:// tarball runs the early-history workers during the main pass; they read the
    packets from the staging file before anything is put to the store."""
    tarball, members = night
    gcs_bucket.blob(f"in/{NIGHT}").upload_from_filename(str(tarball))
    shared = Catalog(
        f"sqlite:///{tmp_path / 's.sqlite'}", tmp_path / "s", blobs=f"gs://{gcs_bucket.name}/packs"
    )
    report = shared.ingest(f"gs://{gcs_bucket.name}/in/{NIGHT}")
    assert report.status == "complete" and report.errors == []
    local = Catalog(f"sqlite:///{tmp_path / 'l.sqlite'}", tmp_path / "l", layout="pack")
    local.ingest(tarball)
    assert _history_dump(shared) == _history_dump(local) and _history_dump(local)["prv_candidates"]
    assert {c: shared.get_alert(c, raw=True) for c in members} == members
    shared.close()
    local.close()
