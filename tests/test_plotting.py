"""The pictures hold what they claim: each cutout's own pixels, the right titles, every photometric point."""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import fastavro
import matplotlib
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import MaskedColumn, Table
from astropy.visualization import ImageNormalize
from matplotlib.figure import Figure
from matplotlib.image import imread

from ztfcat.errors import AlertDecodeError
from ztfcat.plotting import CUTOUTS, cutout_array, plot_cutout, plot_lightcurve, plot_stamps

ALERTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf-alerts" / "alerts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def stamp(data: np.ndarray, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data.astype(">f4")).writeto(buffer)
    return gzip.compress(buffer.getvalue()) if compress else buffer.getvalue()


def make_alert(**cutouts: bytes | None) -> dict:
    rng = np.random.default_rng(0)
    alert: dict = {
        "objectId": "ZTF21testobj",
        "candid": 1234567890123456789,
        "candidate": {"jd": 2459300.5123456, "fid": 2, "magpsf": 18.25, "sigmapsf": 0.07},
    }
    for i, panel in enumerate(CUTOUTS):
        key = "cutout" + panel
        if panel in cutouts:
            value = cutouts[panel]
            alert[key] = None if value is None else {"fileName": "x.fits.gz", "stampData": value}
            continue
        data = rng.normal(100 * (i + 1), 5, (63, 63))
        data[30:33, 30:33] += 500  # a source
        if panel == "Science":
            data[:4, :] = np.nan  # a chip edge
        alert[key] = {"fileName": f"{panel}.fits.gz", "stampData": stamp(data)}
    return alert


def read_alert(path: Path) -> dict:
    with path.open("rb") as handle:
        return next(fastavro.reader(handle))


def real(version: str, name: str | None = None) -> list[Path]:
    folder = ALERTS / version
    if not folder.is_dir():
        pytest.skip(f"no shared sample alerts in {folder}")
    paths = sorted(folder.glob("*.avro"))
    if name is not None:
        paths = [p for p in paths if p.name == name]
        if not paths:
            pytest.skip(f"{name} not in {folder}")
    return paths


def shown(ax) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)


def check_stamps(alert: dict, fig: Figure) -> None:
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == list(CUTOUTS)
    for ax, panel in zip(axes, CUTOUTS, strict=True):
        expected = cutout_array(alert, panel)
        if expected is None:
            assert not ax.images
            assert "no cutout" in [t.get_text() for t in ax.texts]
            continue
        assert len(ax.images) == 1
        np.testing.assert_array_equal(shown(ax), expected)
        norm = ax.images[0].norm
        assert isinstance(norm, ImageNormalize) and np.isfinite([norm.vmin, norm.vmax]).all()
        assert norm.vmin < norm.vmax
    title = fig.get_suptitle()
    assert alert["objectId"] in title and str(alert["candid"]) in title
    assert f"{alert['candidate']['jd']:.5f}" in title


def test_cutout_array_decodes_gzip_and_plain_fits_and_null() -> None:
    data = np.arange(63 * 63, dtype=float).reshape(63, 63)
    alert = make_alert(Science=stamp(data), Template=stamp(data * 2, compress=False), Difference=None)
    science = cutout_array(alert, "Science")
    assert science.dtype == np.float64 and science.dtype.isnative
    np.testing.assert_array_equal(science, data)
    np.testing.assert_array_equal(cutout_array(alert, "cutouttemplate"), data * 2)
    assert cutout_array(alert, "Difference") is None
    alert["cutoutDifference"] = {"fileName": "x", "stampData": None}
    assert cutout_array(alert, "difference") is None
    with pytest.raises(ValueError, match="unknown cutout"):
        cutout_array(alert, "Weird")


def test_cutout_array_names_the_alert_when_the_stamp_is_damaged() -> None:
    alert = make_alert(Science=gzip.compress(b"not a fits file at all" * 200))
    with pytest.raises(AlertDecodeError, match="1234567890123456789.*cutoutScience"):
        cutout_array(alert, "Science")
    alert = make_alert(Template=stamp(np.ones((63, 63)))[:60])
    with pytest.raises(AlertDecodeError, match="cutoutTemplate"):
        cutout_array(alert, "Template")


def test_plot_stamps_shows_each_panels_own_cutout() -> None:
    alert = make_alert()
    fig = plot_stamps(alert)
    assert isinstance(fig, Figure)
    check_stamps(alert, fig)
    arrays = [shown(ax) for ax in fig.axes]
    assert not np.array_equal(arrays[0], arrays[1], equal_nan=True)
    assert not np.array_equal(arrays[1], arrays[2])
    # The chip edge stays NaN (drawn in the "bad" colour), not zero or clipped.
    assert np.isnan(arrays[0][:4]).all() and np.isfinite(arrays[0][4:]).all()
    assert "r = 18.25 ± 0.07" in fig.get_suptitle()


def test_null_and_damaged_cutouts_leave_labelled_panels() -> None:
    alert = make_alert(Template=None, Difference=b"\x1f\x8b garbage")
    fig = plot_stamps(alert)
    science, template, difference = fig.axes
    assert len(science.images) == 1
    assert not template.images and [t.get_text() for t in template.texts] == ["no cutout"]
    assert not difference.images and [t.get_text().split("\n")[0] for t in difference.texts] == ["unreadable cutout:"]
    assert [ax.get_title() for ax in fig.axes] == list(CUTOUTS)


def test_savefig_writes_a_png_with_a_picture(tmp_path: Path) -> None:
    fig = plot_stamps(make_alert())
    out = tmp_path / "stamps.png"
    fig.savefig(out, dpi=60)
    assert out.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(out)
    assert pixels.shape[0] > 100 and pixels.std() > 0.05
    # What IPython's inline display does with a Figure that is a cell's value.
    buffer = io.BytesIO()
    fig.canvas.print_figure(buffer, format="png")
    assert buffer.getvalue()[:8] == PNG_MAGIC


def test_plot_stamps_into_given_figure_and_single_cutout() -> None:
    alert = make_alert()
    given = Figure()
    assert plot_stamps(alert, fig=given) is given and len(given.axes) == 3
    fig = plot_cutout(alert, "Difference")
    (ax,) = fig.axes
    assert ax.get_title() == "Difference"
    np.testing.assert_array_equal(shown(ax), cutout_array(alert, "Difference"))
    other = Figure()
    target = other.add_subplot()
    assert plot_cutout(alert, "template", ax=target) is other
    np.testing.assert_array_equal(shown(target), cutout_array(alert, "Template"))


def test_show_works_without_pyplot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A backend of our own records what show() does, as a GUI backend would display.
    (tmp_path / "ztfcat_recording_backend.py").write_text(
        "from matplotlib.backend_bases import FigureManagerBase\n"
        "from matplotlib.backends.backend_agg import FigureCanvasAgg\n"
        "shown = []\n"
        "class FigureManager(FigureManagerBase):\n"
        "    def show(self):\n"
        "        shown.append((self.canvas.figure, self.get_window_title()))\n"
        "class FigureCanvas(FigureCanvasAgg):\n"
        "    manager_class = FigureManager\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fig = plot_stamps(make_alert())
    assert fig.canvas.manager is None
    with matplotlib.rc_context({"backend": "module://ztfcat_recording_backend"}):
        fig.show()
    import ztfcat_recording_backend

    assert ztfcat_recording_backend.shown == [(fig, fig.get_suptitle())]
    # Headless Agg: show() is a quiet no-op, as for a pyplot figure, never an AttributeError.
    monkeypatch.delenv("DISPLAY", raising=False)
    with matplotlib.rc_context({"backend": "agg"}):
        other = plot_lightcurve(lightcurve_table())
        other.show()
    assert other.canvas.manager is not None
    assert pickle.loads(pickle.dumps(plot_stamps(make_alert()))).get_suptitle()


def test_importing_plotting_loads_no_matplotlib() -> None:
    code = "import sys, ztfcat.plotting; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def lightcurve_table() -> Table:
    # fid, jd, magpsf, sigmapsf, diffmaglim, isdiffpos, upper_limit, forced flux, unc, zeropoint
    nan = np.nan
    rows = [
        (1, 2459000.5, 18.0, 0.05, 20.0, "t", False, nan, nan, nan),
        (1, 2459001.5, 18.2, 0.06, 20.1, "t", False, nan, nan, nan),
        (1, 2459002.5, 18.4, 0.07, 20.2, "1", False, nan, nan, nan),
        (1, 2459003.5, 18.9, 0.10, 20.3, "f", False, nan, nan, nan),
        (1, 2459004.5, nan, nan, 20.4, "", True, nan, nan, nan),
        (1, 2459005.5, nan, nan, 20.5, "", True, nan, nan, nan),
        (2, 2459000.6, 17.5, 0.04, 20.0, "t", False, nan, nan, nan),
        (2, 2459001.6, 17.6, 0.04, 20.0, "t", False, nan, nan, nan),
        (2, 2459002.6, nan, nan, 19.5, "", True, nan, nan, nan),
        (2, 2459003.6, nan, nan, 19.6, "", True, nan, nan, nan),
        (2, 2459004.6, nan, nan, 19.7, "", True, nan, nan, nan),
        (3, 2459000.7, 17.0, 0.03, 19.0, "t", False, nan, nan, nan),
        (1, 2459006.5, nan, nan, 20.0, "", False, 1000.0, 50.0, 26.0),
        (1, 2459007.5, nan, nan, 20.0, "", False, 100.0, 25.0, 26.0),
        (1, 2459008.5, nan, nan, 20.0, "", False, 50.0, 25.0, 26.0),
        (1, 2459009.5, nan, nan, 20.0, "", False, -99999.0, 25.0, 26.0),
        (2, 2459009.6, nan, nan, 20.0, "", False, -300.0, 25.0, 26.0),
    ]
    names = ("fid", "jd", "magpsf", "sigmapsf", "diffmaglim", "isdiffpos", "upper_limit")
    names += ("forcediffimflux", "forcediffimfluxunc", "magzpsci")
    table = Table(rows=rows, names=names)
    table.meta["objectId"] = "ZTF21testobj"
    return table


def lines_by_gid(fig: Figure) -> dict:
    return {line.get_gid(): line for line in fig.axes[0].lines if line.get_gid()}


def test_lightcurve_draws_every_point_by_filter_and_kind() -> None:
    table = lightcurve_table()
    fig = plot_lightcurve(table)
    ax = fig.axes[0]
    lines = lines_by_gid(fig)
    counts = {gid: len(line.get_xdata()) for gid, line in lines.items()}
    assert counts == {
        "g:detection": 3,
        "g:negative": 1,
        "g:upper_limit": 2,
        "g:forced": 2,
        "r:detection": 2,
        "r:upper_limit": 3,
        "i:detection": 1,
    }
    limits = lines["r:upper_limit"]
    assert limits.get_marker() == "v" and limits.get_markerfacecolor() == "none"
    np.testing.assert_allclose(limits.get_ydata(), [19.5, 19.6, 19.7])
    np.testing.assert_allclose(limits.get_xdata(), [59002.1, 59003.1, 59004.1])
    np.testing.assert_allclose(lines["g:forced"].get_ydata(), [26 - 2.5 * 3, 26 - 2.5 * 2])
    assert matplotlib.colors.same_color(lines["g:detection"].get_color(), "tab:green")
    assert matplotlib.colors.same_color(lines["r:detection"].get_color(), "tab:red")
    assert matplotlib.colors.same_color(lines["i:detection"].get_color(), "goldenrod")
    assert lines["g:negative"].get_markerfacecolor() == "white"
    assert ax.yaxis_inverted()
    assert ax.get_title() == "ZTF21testobj" and ax.get_xlabel() == "MJD"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"g", "r", "i", "g upper limit", "r upper limit"} <= set(legend)


def test_lightcurve_with_mjd_masked_values_and_given_axes() -> None:
    table = Table(
        {
            "fid": [1, 1, 2],
            "mjd": [59000.0, 59001.0, 59002.0],
            "magpsf": MaskedColumn([18.0, 0.0, 17.0], mask=[False, True, False]),
            "sigmapsf": [0.1, 0.0, 0.1],
            "diffmaglim": [20.0, 20.5, 20.0],
        }
    )
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_lightcurve(table, ax=ax) is fig
    lines = lines_by_gid(fig)
    assert {gid: len(line.get_xdata()) for gid, line in lines.items()} == {
        "g:detection": 1,
        "g:upper_limit": 1,
        "r:detection": 1,
    }
    np.testing.assert_allclose(lines["g:upper_limit"].get_xdata(), [59001.0])
    assert ax.yaxis_inverted()
    with pytest.raises(ValueError, match="fid"):
        plot_lightcurve(Table({"jd": [1.0]}))
    empty = plot_lightcurve(Table(names=("fid", "jd", "magpsf"), dtype=(int, float, float)))
    assert "no photometry" in [t.get_text() for t in empty.axes[0].texts]


@pytest.mark.shared
@pytest.mark.parametrize("version", ["v3.3", "v4.02"])
def test_real_alerts_stamps(version: str) -> None:
    paths = real(version)[:6]
    for path in paths:
        alert = read_alert(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig = plot_stamps(alert)
        assert not [w for w in caught if issubclass(w.category, VerifyWarning)]
        check_stamps(alert, fig)
        for panel in CUTOUTS:
            assert cutout_array(alert, panel).shape == (63, 63)


@pytest.mark.shared
@pytest.mark.parametrize("version", ["v1.3", "v1.7", "v1.8"])
def test_schema_1_jpeg_stamps_are_drawn(version: str) -> None:
    """Schema 1.x stamps are JPEG pictures: every panel shows their grey levels, as Pillow reads them."""
    from PIL import Image

    paths = real(version)[:4]
    if not paths:
        pytest.skip(f"no {version} sample")
    for path in paths:
        alert = read_alert(path)
        fig = plot_stamps(alert)
        for ax, panel in zip(fig.axes, CUTOUTS, strict=False):
            stamp = alert[f"cutout{panel}"]["stampData"]
            if not stamp or stamp[:3] != b"\xff\xd8\xff":
                continue
            (image,) = ax.images
            with Image.open(io.BytesIO(stamp)) as jpeg:
                pixels = np.asarray(jpeg.convert("L"), dtype=float)
            np.testing.assert_array_equal(np.flipud(cutout_array(alert, panel)), pixels)
            assert np.ma.getdata(image.get_array()).shape == pixels.shape


@pytest.mark.shared
def test_real_alert_without_cutouts() -> None:
    (path,) = real("v3.3", "1382302730115015012.avro")
    alert = read_alert(path)
    fig = plot_stamps(alert)
    check_stamps(alert, fig)
    assert all(not ax.images for ax in fig.axes)


@pytest.mark.shared
def test_real_v402_lightcurve_counts(tmp_path: Path) -> None:
    (path,) = real("v4.02", "2752190655615010016.avro")
    alert = read_alert(path)
    points = [*(alert["prv_candidates"] or []), alert["candidate"]]
    table = Table(
        {
            "fid": [p["fid"] for p in points],
            "jd": [p["jd"] for p in points],
            "magpsf": [np.nan if p["magpsf"] is None else p["magpsf"] for p in points],
            "sigmapsf": [np.nan if p["sigmapsf"] is None else p["sigmapsf"] for p in points],
            "diffmaglim": [np.nan if p["diffmaglim"] is None else p["diffmaglim"] for p in points],
            "isdiffpos": [p["isdiffpos"] or "" for p in points],
            "upper_limit": [p["candid"] is None for p in points],
        },
        meta={"objectId": alert["objectId"]},
    )
    fig = plot_lightcurve(table)
    counts: dict[str, int] = {}
    for gid, line in lines_by_gid(fig).items():
        counts[gid] = len(line.get_xdata())
    detections = [p for p in points if p["candid"] is not None]
    assert sum(v for k, v in counts.items() if not k.endswith("upper_limit")) == len(detections)
    assert sum(v for k, v in counts.items() if k.endswith("upper_limit")) == len(points) - len(detections)
    out = tmp_path / "lc.png"
    fig.savefig(out, dpi=50)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_nan_pixels_are_drawn_in_the_bad_colour_not_clipped() -> None:
    import matplotlib.colors

    from ztfcat.plotting import NAN_COLOUR

    fig = plot_stamps(make_alert())
    image = fig.axes[0].images[0]
    rgba = image.to_rgba(image.get_array())  # what the renderer paints: norm, then colormap
    assert tuple(rgba[0, 0]) == pytest.approx(matplotlib.colors.to_rgba(NAN_COLOUR))  # the NaN chip edge
    red, green, blue, _alpha = rgba[20, 20]
    assert red == green == blue  # finite pixels stay grey
