"""``ztfcat serve``: the ztfcat pages over HTTP on both databases, datasette's read-only SQL, the server.

A real uvicorn server runs in a thread on a free 127.0.0.1 port; pages are fetched with ``requests`` and
checked against the catalog read independently (``Catalog`` methods, the tables by SQLAlchemy, fastavro on
the raw bytes).  The browser tests are in tests/test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fastavro
import numpy as np
import pytest
import requests
from sqlalchemy import func, select

pytest.importorskip("datasette")

from ztfcat.store.fields import FIELDS  # noqa: E402
from ztfcat.store.tables import alerts, prv_candidates  # noqa: E402
from ztfcat.testing.synthetic import make_night  # noqa: E402
from ztfcat.web.app import make_datasette, serve  # noqa: E402
from ztfcat.web.images import ImageCache  # noqa: E402


def start_server(datasette) -> tuple[str, threading.Thread, object]:
    """Serve ``datasette`` on a free port in a thread; (base URL, thread, uvicorn server)."""
    ready: dict = {}
    started = threading.Event()

    def on_started(url, server):
        ready.update(url=url.rstrip("/"), server=server)
        started.set()

    thread = threading.Thread(
        target=serve, args=(datasette,), kwargs=dict(port=0, announce=lambda m: None, on_started=on_started)
    )
    thread.start()
    assert started.wait(30), "the server did not start"
    return ready["url"], thread, ready["server"]


@pytest.fixture
def night(catalog, tmp_path):
    spec = make_night(tmp_path / "ztf_public_20200101.tar.gz", night="20200101", n_alerts=40, seed=5)
    catalog.ingest(spec.path)
    return spec


@pytest.fixture
def live(catalog, night):
    """(base URL, catalog, night spec, datasette) of a server over a one-night catalog."""
    datasette = make_datasette(catalog, sql_time_limit_ms=1000, max_returned_rows=200)
    url, thread, server = start_server(datasette)
    yield url, catalog, night, datasette
    server.should_exit = True
    thread.join(10)


def png_pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data), format="png")


def test_alert_page_shows_every_field_links_and_neighbours(live) -> None:
    url, catalog, spec, _ = live
    candid = spec.candids[3]
    alert = catalog.get_alert(candid)
    page = requests.get(f"{url}/alert/{candid}", timeout=30)
    assert page.status_code == 200
    html = page.text
    for name in alert["candidate"]:
        assert f"<td>{name}</td>" in html
        doc = FIELDS["candidate"][name][2]
        assert doc.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in html
    assert f'href="/object/{alert["objectId"]}"' in html
    assert "ztf_public_20200101.tar.gz" in html
    for panel in ("Science", "Template", "Difference"):
        assert f'src="/alert/{candid}/{panel}.png"' in html
    # The raw packet is the stored bytes, byte for byte, and decodes to this alert.
    packet = requests.get(f"{url}/alert/{candid}.avro", timeout=30)
    assert packet.status_code == 200
    assert packet.headers["content-disposition"] == f'attachment; filename="{candid}.avro"'
    assert packet.content == catalog.get_alert(candid, raw=True)
    assert next(fastavro.reader(io.BytesIO(packet.content)))["candid"] == candid
    # Neighbours: everything cone_search finds within 5" but the alert itself.
    near = catalog.cone_search(alert["candidate"]["ra"], alert["candidate"]["dec"], 5)
    others = [int(c) for c in near["candid"] if int(c) != candid]
    table = html.split('id="neighbours"')[1].split("</table>")[0] if others else ""
    assert [int(c) for c in re.findall(r'href="/alert/(\d+)"', table)] == others


def test_stamps_are_drawn_once_and_cached(live) -> None:
    url, catalog, spec, datasette = live
    from ztfcat.web.app import state

    candid = spec.candids[0]
    cache = state(datasette).images
    shown = {}
    for panel in ("Science", "Template", "Difference"):
        response = requests.get(f"{url}/alert/{candid}/{panel}.png", timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        shown[panel] = png_pixels(response.content)
        assert shown[panel].shape[0] > 100 and np.ptp(shown[panel][..., :3]) > 0.2  # a picture, not a blank
    assert not np.array_equal(shown["Science"], shown["Difference"])
    misses = cache.misses
    again = requests.get(f"{url}/alert/{candid}/Science.png", timeout=30)
    assert again.content == requests.get(f"{url}/alert/{candid}/Science.png", timeout=30).content
    assert cache.misses == misses and cache.hits >= 2
    thumb = png_pixels(requests.get(f"{url}/alert/{candid}/Difference.png?size=thumb", timeout=30).content)
    assert thumb.shape[0] < shown["Difference"].shape[0]
    both = png_pixels(requests.get(f"{url}/alert/{candid}/stamps.png", timeout=30).content)
    assert both.shape[1] > 2 * both.shape[0]  # three panels side by side
    assert requests.get(f"{url}/alert/{candid}/Other.png", timeout=30).status_code == 404


def test_the_image_cache_is_bounded() -> None:
    cache = ImageCache(max_bytes=250)
    for i in range(10):
        assert cache.get_or_make(i, lambda i=i: bytes(100) + bytes([i])) == bytes(100) + bytes([i])
    assert cache.size <= 250 and len(cache) == 2
    assert cache.get_or_make(9, lambda: b"redrawn") == bytes(100) + bytes([9])  # kept: the newest
    assert cache.get_or_make(0, lambda: b"redrawn") == b"redrawn"  # dropped: the oldest


def test_object_page_summarises_the_light_curve(live) -> None:
    url, catalog, spec, _ = live
    with catalog.engine.connect() as conn:
        object_id, n = conn.execute(
            select(alerts.c.objectId, func.count()).group_by(alerts.c.objectId).order_by(func.count().desc())
        ).first()
        per_band = conn.execute(
            select(prv_candidates.c.fid, func.count(), func.min(prv_candidates.c.magpsf))
            .where(prv_candidates.c.objectId == object_id, prv_candidates.c.candid.is_not(None))
            .group_by(prv_candidates.c.fid)
        ).all()
    page = requests.get(f"{url}/object/{object_id}", timeout=30)
    assert page.status_code == 200
    bands = page.text.split('id="bands"')[1].split("</table>")[0]
    for fid, count, peak in per_band:
        band = {1: "g", 2: "r", 3: "i"}[fid]
        row = re.search(rf"<tr><td>{band}</td><td>(\d+)</td>.*?</tr>", bands, re.S).group(0)
        assert f"<td>{band}</td><td>{count}</td>" in row
        assert f"{peak:.3f} ±" in row
    listed = page.text.split('id="alerts"')[1]
    assert len(re.findall(r"Difference\.png\?size=thumb", listed)) == n
    image = png_pixels(requests.get(f"{url}/object/{object_id}/lightcurve.png", timeout=30).content)
    assert image.shape[1] > 400


def cone_candids(html: str) -> list[tuple[int, str]]:
    body = html.split('id="cone-results"')[1].split("</table>")[0]
    return [
        (int(c), s)
        for c, s in re.findall(
            r'<a href="/alert/(\d+)">.*?<td class="col-separation">([\d.]+)</td>', body, re.S
        )
    ]


def test_cone_page_is_catalog_cone_search(live) -> None:
    url, catalog, spec, _ = live
    first = catalog.get_alert(spec.candids[0])["candidate"]
    ra, dec = first["ra"], first["dec"]
    expected = catalog.cone_search(ra, dec, "2 deg", "rb > 0.2")
    assert len(expected) >= 1
    page = requests.get(f"{url}/cone", params={"ra": ra, "dec": dec, "radius": "2deg", "where": "rb > 0.2"})
    assert page.status_code == 400 and "larger than the 1 deg" in page.text
    expected = catalog.cone_search(ra, dec, "0.5 deg", "rb > 0.2", night="2020-01-01")
    page = requests.get(
        f"{url}/cone",
        params={"pos": f"{ra} {dec}", "radius": "0.5deg", "where": "rb > 0.2", "night": "2020-01-01"},
        timeout=30,
    )
    assert page.status_code == 200
    assert cone_candids(page.text) == [
        (int(c), f"{s:.4f}") for c, s in zip(expected["candid"], expected["separation"], strict=True)
    ]
    # Sexagesimal input finds the same alerts.
    from astropy.coordinates import SkyCoord

    text = SkyCoord(ra, dec, unit="deg").to_string("hmsdms", sep=":", precision=4)
    page = requests.get(f"{url}/cone", params={"pos": text, "radius": "0.5deg", "where": "rb > 0.2",
                                              "night": "2020-01-01"}, timeout=30)  # fmt: skip
    assert [c for c, _ in cone_candids(page.text)] == [int(c) for c in expected["candid"]]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/alert/123456789", 404, "no alert with candid 123456789"),
        ("/alert/abc", 400, "candid &#39;abc&#39; is not a positive integer"),
        ("/alert/123456789/Science.png", 404, "no alert with candid 123456789"),
        ("/object/ZTF99zzzzzzz", 404, "no object &#39;ZTF99zzzzzzz&#39;"),
        ("/object/x'%20OR%20'1'='1", 400, "is not an objectId"),
        ("/cone?ra=400&dec=10&radius=5", 400, "RA 400 is outside [0, 360) degrees"),
        ("/cone?ra=10&dec=95&radius=5", 400, "Dec 95 is outside [-90, 90] degrees"),
        ("/cone?ra=10&dec=10&radius=abc", 400, "cannot read a search radius from &#39;abc&#39;"),
        ("/cone?ra=10&dec=10&radius=5&limit=-3", 400, "limit &#39;-3&#39; is not a whole number"),
        (
            "/cone?ra=10&dec=10&where=rb%3E0.5;DROP%20TABLE%20alerts",
            400,
            "rb takes a number, not &#39;0.5;DROP TABLE alerts&#39;",
        ),
        ("/cone?ra=10&dec=10&where=nosuch%3E1", 400, "nosuch"),
        ("/cone?ra=10&dec=10&night=20201399", 400, "20201399"),
    ],
)
def test_bad_input_is_a_404_or_400_that_says_why(live, path, status, reason) -> None:
    url, catalog, _, _ = live
    before = catalog.count()
    response = requests.get(url + path, timeout=30)
    assert response.status_code == status, response.text[-500:]
    assert reason in response.text
    assert catalog.count() == before


def test_datasette_sql_page_is_read_only(live) -> None:
    url, catalog, _, datasette = live
    if not catalog.database_url.startswith("sqlite"):
        page = requests.get(url + "/", timeout=30)
        assert "need a SQLite catalog" in page.text
        return
    sqlite_file = Path(catalog.engine.url.database)
    before = sqlite_file.read_bytes()
    n = catalog.count()
    ok = requests.get(
        f"{url}/catalog.json", params={"sql": "select count(*) as n from alerts", "_shape": "array"}
    )
    assert ok.json() == [{"n": n}]
    attempts = [
        "delete from alerts",
        "insert into releases (name, status) values ('x', 'complete')",
        "attach database '/tmp/ztfcat-web-attack.sqlite' as other",
        "vacuum into '/tmp/ztfcat-web-copy.sqlite'",
        "pragma user_version = 7",
        "select 1; delete from alerts",
        "with x as (select 1) delete from alerts",
    ]
    for sql in attempts:
        response = requests.get(f"{url}/catalog", params={"sql": sql}, timeout=30)
        assert response.status_code == 400, sql
    # Below datasette's own SELECT check, its connections carry ztfcat's guard.
    db = datasette.get_database("catalog")
    for sql in attempts[:5]:
        with pytest.raises(Exception, match="not authorized|prohibited|read.only|denied|refused"):
            asyncio.run(db.execute(sql))
    assert not Path("/tmp/ztfcat-web-copy.sqlite").exists()
    # The time limit and the row cap hold on the SQL page.
    slow = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000000000) select count(*) from c"
    response = requests.get(f"{url}/catalog", params={"sql": slow}, timeout=30)
    assert response.status_code == 400 and "SQL query took too long" in response.text
    n_points = catalog.sql("select count(*) from prv_candidates")[1][0][0]
    assert n_points > 200
    capped = requests.get(
        f"{url}/catalog.json", params={"sql": "select * from prv_candidates"}, timeout=30
    ).json()
    assert capped["truncated"] is True and len(capped["rows"]) == 200
    assert catalog.count() == n and sqlite_file.read_bytes() == before
    # Canned queries run and link candids and objectIds to the ztfcat pages.
    drb = requests.get(f"{url}/catalog/high_drb", timeout=30)
    assert drb.status_code == 200 and re.search(r'href="/alert/\d+"', drb.text)
    many = requests.get(f"{url}/catalog/many_detections", params={"min_detections": 2}, timeout=30)
    assert many.status_code == 200 and 'href="/object/ZTF' in many.text
    table = requests.get(f"{url}/catalog/alerts", timeout=30)
    assert table.status_code == 200 and re.search(r'href="/object/ZTF\w+"', table.text)


@pytest.mark.slow
def test_twenty_clients_thousand_requests(live) -> None:
    url, catalog, spec, _ = live
    if not catalog.database_url.startswith("sqlite"):
        pytest.skip("the server is the same on both databases; one run of 1,000 requests is enough")
    objects = sorted(set(catalog.query(columns=["objectId"])["objectId"]))[:5]
    paths = [f"/alert/{c}" for c in spec.candids[:5]]
    paths += [f"/alert/{c}/Difference.png" for c in spec.candids[:5]]
    paths += [f"/object/{o}" for o in objects] + [
        "/cone?pos=10+10&radius=30",
        "/alert/1",
        "/cone?radius=abc&ra=1&dec=1",
    ]
    for path in paths:  # draw the images once, so the test measures serving
        requests.get(url + path, timeout=60)
    expected = {p: requests.get(url + p, timeout=60).status_code for p in paths}

    def client(k: int) -> list[tuple[str, int]]:
        with requests.Session() as session:
            return [
                (p, session.get(url + p, timeout=60).status_code)
                for p in (paths[(k + i) % len(paths)] for i in range(50))
            ]

    start = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        results = [r for batch in pool.map(client, range(20)) for r in batch]
    elapsed = time.perf_counter() - start
    assert len(results) == 1000
    assert all(code == expected[p] for p, code in results), {p: c for p, c in results if c != expected[p]}
    assert requests.get(url + "/", timeout=10).status_code == 200
    print(f"1000 requests from 20 clients in {elapsed:.1f} s")


def test_ctrl_c_stops_the_server_at_once(tmp_path) -> None:
    from ztfcat import Catalog

    spec = make_night(tmp_path / "ztf_public_20200101.tar.gz", night="20200101", n_alerts=5, seed=2)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    catalog.ingest(spec.path)
    catalog.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "ztfcat.cli.root", "--data-dir", str(catalog.data_dir),
           "--database-url", catalog.database_url, "serve", "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        session = requests.Session()  # a keep-alive connection stays open, as a browser's would
        assert session.get(match.group(1), timeout=30).status_code == 200
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - start < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_open_opens_the_browser_and_binds_localhost(monkeypatch, live) -> None:
    _, catalog, _, _ = live
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    datasette = make_datasette(catalog)
    done = threading.Event()

    def on_started(url, server):
        opened.append(requests.get(url, timeout=30).status_code)
        server.should_exit = True
        done.set()

    serve(datasette, port=0, open_browser=True, announce=lambda m: None, on_started=on_started)
    assert done.is_set()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", opened[0]) and opened[1] == 200


def test_serve_without_datasette_says_which_extra(monkeypatch) -> None:
    import importlib.util

    from click.testing import CliRunner

    from ztfcat.cli.root import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasette" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1
    assert result.output == "Error: ztfcat serve needs datasette: pip install 'ztfcat[web]'\n"


def test_immutable_opens_the_file_immutable(tmp_path) -> None:
    from ztfcat import Catalog

    spec = make_night(tmp_path / "ztf_public_20200101.tar.gz", night="20200101", n_alerts=5, seed=4)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}", tmp_path / "data")
    catalog.ingest(spec.path)
    datasette = make_datasette(catalog, immutable=True)
    assert datasette.get_database("catalog").is_mutable is False
    url, thread, server = start_server(datasette)
    try:
        rows = requests.get(f"{url}/catalog.json", params={"sql": "select candid from alerts order by candid",
                                                           "_shape": "array"}, timeout=30).json()  # fmt: skip
        assert [r["candid"] for r in rows] == sorted(spec.candids)
        assert (
            requests.get(f"{url}/catalog", params={"sql": "delete from alerts"}, timeout=30).status_code
            == 400
        )
    finally:
        server.should_exit = True
        thread.join(10)
        catalog.close()


def test_a_packet_with_undecodable_stamps_gets_its_page_with_the_reason(catalog, tmp_path) -> None:
    from tests.tarballs import write_tarball
    from ztfcat.testing.synthetic import alert_bytes, make_alert

    record = make_alert(np.random.default_rng(1), object_id="ZTF20aaaaaaa", candid=1095000000015010001,
                        jd=2458849.6, ra=150.1, dec=2.2)  # fmt: skip
    record["cutoutScience"]["stampData"] = b"\x1f\x8b not really gzip"
    record["cutoutTemplate"] = None
    catalog.ingest(write_tarball(tmp_path / "ztf_public_20200101.tar.gz", [("a.avro", alert_bytes(record))]))
    url, thread, server = start_server(make_datasette(catalog))
    try:
        page = requests.get(f"{url}/alert/{record['candid']}", timeout=30)
        assert page.status_code == 200
        science = page.text.split('id="stamp-Science-reason">')[1].split("</div>")[0]
        assert (
            f"alert {record['candid']} (ZTF20aaaaaaa): cutoutScience is not a readable FITS image" in science
        )
        template = page.text.split('id="stamp-Template-reason">')[1].split("</div>")[0]
        assert template == "this alert carries no cutout here"
        assert f'src="/alert/{record["candid"]}/Difference.png"' in page.text
        assert png_pixels(
            requests.get(f"{url}/alert/{record['candid']}/Difference.png", timeout=30).content
        ).size
        # The object page's thumbnail of the difference stamp and the three-panel figure still draw.
        assert requests.get(f"{url}/alert/{record['candid']}/stamps.png", timeout=30).status_code == 200
        assert requests.get(f"{url}/object/ZTF20aaaaaaa", timeout=30).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
