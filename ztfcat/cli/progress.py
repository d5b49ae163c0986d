"""Progress bars of the CLI: the library's progress callbacks drawn with tqdm, on stderr.

One library draws every bar (rate, ETA, sizes in kB/MB), so downloads, ingests, exports, layout
conversions, deletes and bucket syncs look alike.  A bar is drawn only when stderr is a terminal
(``disable=None`` in tqdm's terms): in a pipe or a log file the commands stay quiet and stdout carries
only results.  The library calls back from its download and writer threads; tqdm's own lock and the
one here keep a bar whole.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from typing import IO, Any

from .output import plural


def _tqdm(**kwargs: Any):
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("leave", True)
    if _columns(kwargs["file"]):
        kwargs.setdefault("dynamic_ncols", True)  # follows the terminal when it is resized
    else:
        kwargs.setdefault("ncols", 100)  # a terminal that reports no size (some ptys) still gets a bar
    return tqdm(**kwargs)


def _columns(file: Any) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


class Bar:
    """A bar of ``total`` units (bytes, alerts or releases); call :meth:`to` or :meth:`add` to move it.

    Parameters
    ----------
    label : str
        What is in progress (a release name, "exporting").
    total : int, optional
        Units in all; None draws a counter with a rate but no ETA.
    unit : str
        ``"B"`` scales to kB/MB/GB; anything else is counted (``alert``, ``release``).
    hidden : bool
        True never draws (``--quiet``, ``--json``); otherwise the bar shows only on a terminal.
    file : file object, optional
        Where to draw; default stderr.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "B",
        hidden: bool = False,
        file: IO[str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        file = file or sys.stderr
        if hidden or (hasattr(file, "isatty") and not file.isatty()):  # what tqdm's disable=None decides
            self._bar: Any = _Hidden(total or None)  # and tqdm, 55 ms of imports, is never loaded
        else:
            self._bar = _tqdm(
                desc=label,
                total=total or None,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1000,
                file=file,
            )
        self.n = 0

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bar's line (and leave it on screen)."""
        self._bar.close()

    def set_total(self, total: int | None) -> None:
        """Learn the total once it is known (a download learns it from its first response)."""
        with self._lock:
            if total and not self._bar.total:
                self._bar.total = total
                self._bar.refresh()

    def to(self, n: int, note: str | None = None) -> None:
        """Move the bar to ``n`` units done (never backwards)."""
        with self._lock:
            if n > self.n:
                self._bar.update(n - self.n)
                self.n = n
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)

    def add(self, n: int = 1, note: str | None = None) -> None:
        """Move the bar ``n`` units on."""
        self.to(self.n + n, note)

    # The library's progress callbacks, as bound methods: a command passes ``progress=bar.ingested``.

    def ingested(self, n_alerts: int, n_bytes: int) -> None:
        """An ingest's ``progress(n_alerts, n_bytes)``: bytes read as the bar, alerts so far beside it."""
        self.to(n_bytes, plural(n_alerts, "alert"))

    def exported(self, n_alerts: int, _n_bytes: int) -> None:
        """An export's ``progress(n_alerts, n_bytes)``: alerts written as the bar."""
        self.to(n_alerts)

    def converted(self, name: str, n_packets: int) -> None:
        """A layout conversion's ``progress(name, n_packets)``: one release done."""
        self.add(1, f"{name}: {n_packets} packets")

    def deleted(self, name: str) -> None:
        """A delete's ``progress(name)``: one release gone."""
        self.add(1, name)


class _Hidden:
    """The part of tqdm's interface a :class:`Bar` uses, drawing nothing."""

    def __init__(self, total: int | None) -> None:
        self.total = total

    def update(self, _n: int) -> None:
        pass

    def refresh(self) -> None:
        pass

    def set_postfix_str(self, _note: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class DownloadBar(Bar):
    """The bar of one release download: bytes as the bar, alerts ingested so far beside it.

    Called with the library's :class:`~ztfcat.mirror.archive.DownloadState`.
    """

    def __init__(self, name: str, total: int | None, hidden: bool = False, file: IO[str] | None = None):
        super().__init__(name, total, "B", hidden, file)

    def __call__(self, state) -> None:
        self.set_total(state.bytes_total)
        self.to(state.bytes_done, f"{state.alerts} alerts")


class DownloadBars:
    """One :class:`DownloadBar` per release for callers that download several (``download_recent``).

    A state of a new release closes the previous bar and opens the next.
    """

    def __init__(self, hidden: bool = False, file: IO[str] | None = None) -> None:
        self._hidden = hidden
        self._file = file
        self._lock = threading.Lock()
        self._name: str | None = None
        self._bar: DownloadBar | None = None

    def __call__(self, state) -> None:
        with self._lock:
            if state.name != self._name:
                if self._bar is not None:
                    self._bar.close()
                self._name = state.name
                self._bar = DownloadBar(state.name, state.bytes_total, self._hidden, self._file)
            bar = self._bar
        bar(state)

    def close(self) -> None:
        """Finish the last bar."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __enter__(self) -> DownloadBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ObjectBars:
    """One bar per bucket object for a bucket sync, whose ``progress(obj, n_alerts, n_bytes)`` names the object.

    Objects are ingested one at a time, so the first call for a new object finishes the last one's bar.
    """

    def __init__(self, hidden: bool = False, file: IO[str] | None = None) -> None:
        self._hidden = hidden
        self._file = file
        self._lock = threading.Lock()
        self._name: str | None = None
        self._bar: Bar | None = None

    def __call__(self, obj, n_alerts: int, n_bytes: int) -> None:
        with self._lock:
            if obj.name != self._name:
                if self._bar is not None:
                    self._bar.close()
                self._name = obj.name
                self._bar = Bar(obj.name, obj.size, "B", self._hidden, self._file)
            bar = self._bar
        bar.to(n_bytes, f"{n_alerts} alerts")

    def close(self) -> None:
        """Finish the last bar."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __enter__(self) -> ObjectBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
