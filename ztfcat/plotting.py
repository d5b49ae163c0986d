"""Pictures of alerts: the three image cutouts and a light curve.

Everything is drawn on a :class:`matplotlib.figure.Figure` made here or handed in, never through pyplot's
global figure list, so plots work headless (``fig.savefig``), in notebooks (a Figure displays itself as
the value of a cell) and in threads, and importing this module changes nothing.  matplotlib and astropy
are imported when a function runs, not at import.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import warnings
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ztfcat.errors import AlertDecodeError

if TYPE_CHECKING:
    from astropy.table import Table
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Panel names, in display order; ``"Science"`` reads ``alert["cutoutScience"]``.
CUTOUTS: tuple[str, ...] = ("Science", "Template", "Difference")
#: ZTF filter id -> (band name, colour).
FILTERS: dict[int, tuple[str, str]] = {1: ("g", "tab:green"), 2: ("r", "tab:red"), 3: ("i", "goldenrod")}
_OTHER_FILTER = ("other", "tab:gray")
#: Colour of NaN pixels (chip edges, masked pixels): clearly not part of the sky.
NAN_COLOUR = "tab:blue"
_MJD_OFFSET = 2400000.5
_FORCED_SNR = 3.0


@functools.cache
def _alert_figure_class() -> type[Figure]:
    """The :class:`AlertFigure` class, built on first use so that importing this module loads no matplotlib."""
    from matplotlib.figure import Figure

    class AlertFigure(Figure):
        """A Figure whose :meth:`show` works although pyplot did not make it.

        A bare ``Figure`` has no manager, so its ``show`` raises ``AttributeError``.  Attaching one
        when the figure is made would open a window (or start a GUI toolkit) for every plot, even in
        batch jobs that only ``savefig``.  So the manager of the user's configured backend is attached
        only when ``show`` is called, the one moment a window is asked for, and the figure stays out of
        pyplot's global figure list.  As with any pyplot figure, ``show`` does not run a GUI event loop:
        on a non-interactive backend (Agg, a notebook's inline backend) it does nothing but warn when a
        display is set; in notebooks, show the figure by making it a cell's value.
        """

        def show(self, warn: bool = True) -> None:
            if self.canvas.manager is None:
                _attach_manager(self)
            super().show(warn=warn)

    AlertFigure.__module__ = __name__
    AlertFigure.__qualname__ = "AlertFigure"
    return AlertFigure


def __getattr__(name: str) -> Any:
    # ``ztfcat.plotting.AlertFigure`` resolves lazily (and so pickled figures load again).
    if name == "AlertFigure":
        return _alert_figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _figure(figsize: tuple[float, float]) -> Figure:
    """A new :class:`AlertFigure` of the given size, laid out without overlaps."""
    return _alert_figure_class()(figsize=figsize, layout="constrained")


def _attach_manager(fig: Figure) -> None:
    """Give ``fig`` a canvas and manager from the configured backend, outside pyplot's figure list."""
    import matplotlib
    from matplotlib.backends import backend_registry

    backend = matplotlib.get_backend()  # resolves "auto" to a backend that can run here
    canvas_class = backend_registry.load_backend_module(backend).FigureCanvas
    manager = canvas_class.new_manager(fig, 1)
    manager.set_window_title(fig.get_suptitle() or "ztfcat")


def _cutout_key(which: str) -> str:
    name = which[len("cutout") :] if which.lower().startswith("cutout") else which
    for panel in CUTOUTS:
        if panel.lower() == name.lower():
            return "cutout" + panel
    raise ValueError(f"unknown cutout {which!r}; expected one of {', '.join(CUTOUTS)}")


def cutout_array(alert: Mapping[str, Any], which: str) -> np.ndarray | None:
    """The 2-D image of one cutout of an alert, or None when the alert carries none.

    Parameters
    ----------
    alert : mapping
        A decoded alert packet (``fastavro`` record): ``alert["cutoutScience"]["stampData"]`` etc.
    which : str
        ``"Science"``, ``"Template"`` or ``"Difference"`` (any case, ``cutout`` prefix allowed).

    Returns
    -------
    numpy.ndarray or None
        Native-endian ``float64`` pixels, NaNs kept.  None if the cutout or its ``stampData`` is null
        (some real alerts have no cutouts).

    Raises
    ------
    AlertDecodeError
        The stamp is not a gzip'd (or plain) FITS image; names the alert's candid and the cutout.
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning

    key = _cutout_key(which)
    cutout = alert.get(key)
    stamp = cutout.get("stampData") if isinstance(cutout, Mapping) else None
    if not stamp:
        return None
    where = f"alert {alert.get('candid', '?')} ({alert.get('objectId', '?')}): {key}"
    if bytes(stamp[:3]) == JPEG_MAGIC:
        return _jpeg_pixels(stamp, where)
    try:
        # astropy does not recognise gzip on a memory stream, so decompress first.
        raw = gzip.decompress(stamp) if bytes(stamp[:2]) == b"\x1f\x8b" else bytes(stamp)
        with warnings.catch_warnings():
            # ZTF stamp headers have a non-standard SIMPLE card: expected, not the user's problem.
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdus:
                for hdu in hdus:
                    if hdu.data is not None and np.ndim(hdu.data) == 2:
                        return np.array(hdu.data, dtype=np.float64)
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as exc:
        raise AlertDecodeError(f"{where} is not a readable FITS image: {exc}") from exc
    raise AlertDecodeError(f"{where} holds no 2-D image")


JPEG_MAGIC = b"\xff\xd8\xff"


def _jpeg_pixels(stamp: bytes, where: str) -> np.ndarray:
    """Schema 1.x stamps are JPEG pictures, not FITS: their grey levels, bottom row first like FITS."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(stamp))) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise AlertDecodeError(f"{where} is not a readable JPEG image: {exc}") from exc
    return np.flipud(pixels)  # JPEG rows run top down; the panels draw with origin="lower"


def _image_norm(data: np.ndarray) -> Any:
    """zscale limits on the finite pixels with an asinh stretch: faint structure visible, NaN-proof."""
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    finite = data[np.isfinite(data)]
    vmin, vmax = (0.0, 1.0) if finite.size == 0 else ZScaleInterval().get_limits(finite)
    if not vmax > vmin:
        vmax = vmin + 1.0
    # clip=False: clipping here would unmask NaN pixels; the colormap clips (under/over) instead.
    return ImageNormalize(vmin=float(vmin), vmax=float(vmax), stretch=AsinhStretch(), clip=False)


def _draw_cutout(ax: Axes, alert: Mapping[str, Any], which: str) -> None:
    import matplotlib

    panel = _cutout_key(which)[len("cutout") :]
    ax.set_title(panel)
    ax.set_xticks([])
    ax.set_yticks([])
    try:
        data = cutout_array(alert, panel)
        missing = "no cutout"
    except AlertDecodeError as exc:
        # A picture is for looking: one damaged stamp should not hide the other two.
        data, missing = None, "unreadable cutout:\n" + _short_reason(exc)
    if data is None:
        ax.set_facecolor("0.92")
        ax.text(0.5, 0.5, missing, transform=ax.transAxes, ha="center", va="center", color="0.3")
        return
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=NAN_COLOUR, under="black", over="white")
    # origin="lower": FITS puts pixel (1, 1) at the bottom left.
    # Masked, NaN pixels take the colormap's "bad" colour instead of being clipped to white.
    image = np.ma.masked_invalid(data)
    ax.imshow(image, origin="lower", cmap=cmap, norm=_image_norm(data), interpolation="nearest")


def _short_reason(exc: Exception) -> str:
    reason = str(exc).rsplit(": ", 1)[-1]
    return reason if len(reason) <= 40 else reason[:37] + "..."


def _band(fid: Any) -> tuple[str, str]:
    try:
        return FILTERS.get(int(fid), _OTHER_FILTER)
    except (TypeError, ValueError):
        return _OTHER_FILTER


def _alert_title(alert: Mapping[str, Any]) -> str:
    candidate = alert.get("candidate") or {}
    parts = [str(alert.get("objectId", "?")), f"candid {alert.get('candid', candidate.get('candid', '?'))}"]
    jd = candidate.get("jd")
    if jd is not None:
        parts.append(f"JD {jd:.5f}")
    mag = candidate.get("magpsf")
    if mag is not None:
        band = _band(candidate.get("fid"))[0]
        sigma = candidate.get("sigmapsf")
        parts.append(f"{band} = {mag:.2f}" + (f" ± {sigma:.2f}" if sigma is not None else ""))
    return "   ".join(parts)


def plot_stamps(alert: Mapping[str, Any], fig: Figure | None = None) -> Figure:
    """Science, Template and Difference cutouts of one alert side by side.

    Parameters
    ----------
    alert : mapping
        A decoded alert packet.
    fig : matplotlib.figure.Figure, optional
        Figure to draw into (three axes are added); a new one when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel titled with its name and showing its own cutout (zscale + asinh, NaN pixels in
        :data:`NAN_COLOUR`); a null cutout is an empty grey panel saying "no cutout".  The suptitle
        carries objectId, candid, JD and the PSF magnitude with its filter.  ``fig.savefig`` works
        without a display and ``fig.show()`` works as on a pyplot figure.
    """
    if fig is None:
        fig = _figure((10.0, 3.9))
    axes = fig.subplots(1, len(CUTOUTS), squeeze=False)[0]
    for ax, panel in zip(axes, CUTOUTS, strict=True):
        _draw_cutout(ax, alert, panel)
    fig.suptitle(_alert_title(alert))
    return fig


def plot_cutout(alert: Mapping[str, Any], which: str = "Science", ax: Axes | None = None) -> Figure:
    """One cutout of an alert, on ``ax`` or on a new figure; returns the figure that holds it."""
    if ax is None:
        fig = _figure((4.0, 4.3))
        ax = fig.add_subplot()
        fig.suptitle(_alert_title(alert), fontsize="small")
    _draw_cutout(ax, alert, which)
    return ax.get_figure()


def _floats(table: Table, name: str) -> np.ndarray:
    """A column as float64 with masked or missing values as NaN."""
    if name not in table.colnames:
        return np.full(len(table), np.nan)
    column = table[name]
    values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    return np.asarray(values, dtype=np.float64)


def _negative(table: Table) -> np.ndarray:
    """Rows from the negative (reference minus science) subtraction, by ``isdiffpos``."""
    if "isdiffpos" not in table.colnames:
        return np.zeros(len(table), dtype=bool)
    values = np.ma.filled(np.ma.asarray(table["isdiffpos"]).astype(object), "t")
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return np.array([t.strip().lower() in {"f", "0", "false"} for t in text], dtype=bool)


def plot_lightcurve(table: Table, ax: Axes | None = None, fig: Figure | None = None) -> Figure:
    """Magnitude against MJD, one colour per filter.

    Parameters
    ----------
    table : astropy.table.Table
        One row per photometric point with ``fid``, ``jd`` (or ``mjd``), ``magpsf``, ``sigmapsf``,
        ``diffmaglim``, ``isdiffpos`` and ``upper_limit`` (bool; when absent, rows without ``magpsf``
        are upper limits).  Rows that are neither detections nor upper limits but carry forced
        photometry (``forcediffimflux``, ``forcediffimfluxunc``, ``magzpsci``) are drawn as forced
        points when their signal-to-noise is at least 3.  ``table.meta["objectId"]`` becomes the title.
    ax, fig : optional
        Axes to draw on, or a figure to add one to; a new figure when both are omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Detections as error bars (open circles for negative subtractions), upper limits as open
        downward triangles at ``diffmaglim``, forced photometry as small squares; magnitudes grow
        downward; x is MJD = JD - 2400000.5.  Each data line has a ``gid`` ``"<band>:<kind>"`` with
        kind ``detection``, ``negative``, ``upper_limit`` or ``forced``.
    """
    names = set(table.colnames)
    if "fid" not in names or not ({"jd", "mjd"} & names):
        raise ValueError(f"a light curve needs 'fid' and 'jd' or 'mjd' columns; got {sorted(names)}")
    if ax is None:
        fig = fig if fig is not None else _figure((8.0, 4.5))
        ax = fig.add_subplot()
    fig = ax.get_figure()

    mjd = _floats(table, "mjd") if "mjd" in names else _floats(table, "jd") - _MJD_OFFSET
    mag, sigma, limit = _floats(table, "magpsf"), _floats(table, "sigmapsf"), _floats(table, "diffmaglim")
    if "upper_limit" in names:
        upper = np.asarray(np.ma.filled(np.ma.asarray(table["upper_limit"], dtype=bool), False))
    else:
        upper = ~np.isfinite(mag)
    detected = ~upper & np.isfinite(mag) & np.isfinite(mjd)
    negative = detected & _negative(table)
    limits = upper & np.isfinite(limit) & np.isfinite(mjd)
    flux, flux_unc = _floats(table, "forcediffimflux"), _floats(table, "forcediffimfluxunc")
    zeropoint = _floats(table, "magzpsci")
    with np.errstate(divide="ignore", invalid="ignore"):
        forced = (
            ~detected
            & ~upper
            & np.isfinite(mjd)
            & np.isfinite(zeropoint)
            & (flux != -99999)
            & (flux_unc > 0)
            & (flux / flux_unc >= _FORCED_SNR)
        )
        forced_mag = zeropoint - 2.5 * np.log10(flux)
        forced_err = 2.5 / math.log(10) * flux_unc / flux

    fids = np.ma.filled(np.ma.asarray(table["fid"]), -1)
    for fid in sorted({int(f) for f in np.asarray(fids)}):
        band, colour = _band(fid)
        rows = np.asarray(fids) == fid
        kinds = [
            ("detection", rows & detected & ~negative, band, {"fmt": "o", "ms": 5}),
            ("negative", rows & negative, f"{band} (negative diff)", {"fmt": "o", "ms": 5, "mfc": "white"}),
            ("forced", rows & forced, f"{band} forced", {"fmt": "s", "ms": 3, "alpha": 0.6}),
        ]
        for kind, sel, label, style in kinds:
            if not sel.any():
                continue
            y, yerr = (forced_mag, forced_err) if kind == "forced" else (mag, sigma)
            errors = np.where(np.isfinite(yerr[sel]), yerr[sel], 0.0)
            container = ax.errorbar(
                mjd[sel], y[sel], yerr=errors, color=colour, capsize=2, lw=1, label=label, **style
            )
            container.lines[0].set_gid(f"{band}:{kind}")
        sel = rows & limits
        if sel.any():
            (line,) = ax.plot(
                mjd[sel], limit[sel], ls="none", marker="v", mfc="none", mec=colour, ms=6,
                label=f"{band} upper limit", alpha=0.8,
            )  # fmt: skip
            line.set_gid(f"{band}:upper_limit")

    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_xlabel("MJD")
    ax.set_ylabel("magnitude (AB)")
    object_id = table.meta.get("objectId") if table.meta else None
    if object_id:
        ax.set_title(str(object_id))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no photometry", transform=ax.transAxes, ha="center", va="center")
    return fig
