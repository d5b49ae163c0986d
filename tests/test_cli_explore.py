"""The exploration commands: plot, lightcurve, cone and export, run through click as a user runs them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner
from matplotlib.image import imread

from ztfcat.cli.root import main
from ztfcat.plotting import plot_cutout, plot_lightcurve, plot_stamps
from ztfcat.store.conesearch import cone_search
from ztfcat.store.lightcurve import lightcurve
from ztfcat.testing.synthetic import make_night


@pytest.fixture
def cli(catalog, tmp_path):
    """``run(*args)`` of the ztfcat command on a catalog (each database) holding one synthetic night."""
    spec = make_night(tmp_path / "ztf_public_20200101.tar.gz", night="20200101", n_alerts=20, seed=3)
    catalog.ingest(spec.path)
    root = ["--data-dir", str(catalog.data_dir), "--database-url", catalog.database_url]

    def run(*args: str, code: int = 0):
        result = CliRunner().invoke(main, [*root, *args])
        assert result.exit_code == code, result.output
        return result

    return run, catalog, spec


def pixels(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def reference(fig, path: Path) -> np.ndarray:
    fig.savefig(path, dpi=120)
    return imread(path)


def test_commands_are_on_the_root_group() -> None:
    from ztfcat.cli import explore

    for name in ("plot", "lightcurve", "cone", "export"):
        assert main.commands[name] is getattr(explore, name)


def test_plot_draws_the_alerts_own_stamps(cli, tmp_path: Path) -> None:
    run, catalog, spec = cli
    candid, other = spec.candids[0], spec.candids[1]
    out = tmp_path / "stamps.png"
    assert "wrote" in run("plot", str(candid), "-o", str(out)).stderr
    image = pixels(out)
    assert image.shape[:2] == (round(3.9 * 120), 10 * 120)
    np.testing.assert_array_equal(
        image, reference(plot_stamps(catalog.get_alert(candid)), tmp_path / "a.png")
    )
    assert not np.array_equal(image, reference(plot_stamps(catalog.get_alert(other)), tmp_path / "b.png"))

    single = tmp_path / "diff.png"
    run("plot", str(candid), "-o", str(single), "--cutout", "difference")
    expected = reference(plot_cutout(catalog.get_alert(candid), "Difference"), tmp_path / "c.png")
    np.testing.assert_array_equal(pixels(single), expected)

    missing = run("plot", "42", "-o", str(tmp_path / "x.png"), code=1)
    assert "no alert with candid 42" in missing.output


def test_lightcurve_lists_and_draws(cli, tmp_path: Path) -> None:
    run, catalog, spec = cli
    object_id = max(spec.alerts_by_object, key=lambda o: len(spec.alerts_by_object[o]))
    expected = lightcurve(catalog.engine, object_id)
    assert set(expected["kind"]) == {"detection", "upper_limit", "forced"}

    listed = Table.read(run("lightcurve", object_id, "--format", "csv").stdout, format="ascii.csv")
    assert listed.colnames == expected.colnames
    assert list(listed["kind"]) == list(expected["kind"])
    np.testing.assert_allclose(listed["jd"], expected["jd"])
    assert (
        run("lightcurve", object_id, "--csv").stdout == run("lightcurve", object_id, "--format", "csv").stdout
    )

    shown = run("lightcurve", object_id).stdout
    assert shown.count("\n") == len(expected) + 2  # header, rule, one line per point
    points = [
        json.loads(line)
        for line in run("lightcurve", object_id, "--no-forced", "--format", "json").stdout.splitlines()
    ]
    assert len(points) == int(np.sum(expected["kind"] != "forced"))
    assert {p["candid"] for p in points if p["kind"] == "detection"} == set(
        expected["candid"][expected["kind"] == "detection"]
    )

    out = tmp_path / "lc.png"
    drawn = run("lightcurve", object_id, "-o", str(out))
    assert drawn.stdout == ""
    np.testing.assert_array_equal(pixels(out), reference(plot_lightcurve(expected), tmp_path / "ref.png"))

    missing = run("lightcurve", "ZTF99zzzzzzz", code=1)
    assert "ZTF99zzzzzzz" in missing.output


def test_cone_takes_negative_and_sexagesimal_positions(cli) -> None:
    run, catalog, spec = cli
    alert = catalog.get_alert(spec.candids[5])["candidate"]
    ra, dec = alert["ra"], alert["dec"]
    expected = cone_search(catalog.engine, ra, dec, 3600.0)
    assert len(expected) >= 1

    rows = [
        json.loads(x) for x in run("cone", str(ra), str(dec), "1deg", "--format", "json").stdout.splitlines()
    ]
    assert [r["candid"] for r in rows] == list(expected["candid"])
    np.testing.assert_allclose([r["separation"] for r in rows], expected["separation"])

    # A southern position, negative DEC as typed, and RA/DEC in sexagesimal.
    south = run("cone", "150.0", "-45.5", "5", "--format", "json")
    assert south.stdout == ""
    from astropy.coordinates import SkyCoord

    text = SkyCoord(ra, dec, unit="deg").to_string("hmsdms", sep=":", precision=4).split()
    again = run("cone", text[0], text[1], "60arcmin", "-c", "candid", "--format", "json").stdout.splitlines()
    assert [json.loads(x)["candid"] for x in again] == list(expected["candid"])

    one = run("cone", str(ra), str(dec), "1deg", "-n", "1", "-w", "fid >= 1", "--format", "csv").stdout
    assert Table.read(one, format="ascii.csv")["candid"].tolist() == [expected["candid"][0]]

    bad = run("cone", str(ra), "95", "5", code=1)
    assert "95" in bad.output


def test_export_writes_a_tarball_of_the_selection(cli, tmp_path: Path) -> None:
    run, catalog, spec = cli
    target = tmp_path / "sel.tar.gz"
    result = run("export", "--where", "fid = 1", "--night", "2020-01-01", "--to-tar", str(target))
    wanted = catalog.alert_ids("fid = 1")
    assert f"exported {len(wanted)} alerts" in result.stdout
    with tarfile.open(target, "r|gz") as tar:
        names = [info.name for info in tar]
    assert names == [f"{c}.avro" for c in wanted]

    folder = tmp_path / "dir"
    run("export", "--object", spec.object_ids[0], "--to-dir", str(folder))
    for path in folder.iterdir():
        assert path.read_bytes() == catalog.get_alert(int(path.stem), raw=True)
    assert sorted(int(p.stem) for p in folder.iterdir()) == sorted(spec.alerts_by_object[spec.object_ids[0]])

    assert "already exists" in run("export", "--to-tar", str(target), code=1).output
    assert "--to-dir" in run("export", code=2).output
