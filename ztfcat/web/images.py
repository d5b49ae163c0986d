"""PNG images of alerts and light curves, drawn on request by :mod:`ztfcat.plotting` and cached.

A stamp never changes (a packet is immutable once ingested), so it is cached by candid and panel.  A
light curve grows when new nights are ingested, so it is cached by objectId together with the number of
points and the latest jd: a new point is a new key, and the stale image ages out of the LRU.

Drawing holds one lock: matplotlib's Agg renderer and font cache are not documented as thread-safe, the
machine serving is usually a laptop, and a cached image costs nothing to serve again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

#: Default bound of the cache, in bytes of PNG (a stamp is ~20 kB, a light curve ~40 kB).
DEFAULT_CACHE_BYTES = 64 << 20

#: Pixel sizes: a stamp on the alert page, a thumbnail in an object's table of alerts.
STAMP_INCHES = {"full": (3.2, 3.4), "thumb": (1.2, 1.2)}
DPI = 100


class ImageCache:
    """A thread-safe LRU of PNG bytes, bounded by total size.

    Parameters
    ----------
    max_bytes : int
        Images are dropped, least recently used first, once the total passes this.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._size

    def get_or_make(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The cached bytes of ``key``, or ``make()``'s, stored (two racing misses both draw; one wins)."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._size += len(data)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)
        return data


_DRAW_LOCK = threading.Lock()


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def stamp_png(alert: Mapping[str, Any], panel: str, size: str = "full") -> bytes:
    """One cutout as :func:`ztfcat.plotting.plot_cutout` draws it (zscale + asinh, NaN pixels marked)."""
    from matplotlib.figure import Figure

    from ztfcat.plotting import plot_cutout

    with _DRAW_LOCK:
        fig = Figure(figsize=STAMP_INCHES[size], layout="constrained")
        ax = fig.add_subplot()
        plot_cutout(alert, panel, ax=ax)
        if size == "thumb":
            ax.set_title("")
        return _png(fig)


def stamps_png(alert: Mapping[str, Any]) -> bytes:
    """The three cutouts side by side, exactly the figure :func:`ztfcat.plotting.plot_stamps` makes."""
    from ztfcat.plotting import plot_stamps

    with _DRAW_LOCK:
        return _png(plot_stamps(alert))


def lightcurve_png(table) -> bytes:
    """An object's light curve as :func:`ztfcat.plotting.plot_lightcurve` draws it."""
    from ztfcat.plotting import plot_lightcurve

    with _DRAW_LOCK:
        return _png(plot_lightcurve(table))
