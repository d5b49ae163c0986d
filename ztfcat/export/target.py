"""Build an export beside its target and rename it into place, so a half-written catalog is never seen.

LSDB and DuckDB open whatever directory they are given; a catalog that an interrupted export left half
written would be read as if it were whole.  Every export therefore writes into a hidden sibling,
``.<name>.partial-<pid>``, and only a finished one is renamed to the target (a rename within one
directory is atomic on POSIX).  A replaced catalog is first renamed aside, so a failure at any point
leaves either the old catalog or the new one under the name, never a mixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import ZtfcatError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale(target: Path) -> None:
    """Remove the partial builds of ``target`` that a killed export left (their process is gone)."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty directory unless ``overwrite``."""
    if target.exists() and not target.is_dir():
        raise ZtfcatError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ZtfcatError(f"{target} is not empty; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def building(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; when the block ends without error, make it ``target``.

    Raises
    ------
    ZtfcatError
        ``target`` is a file, or a non-empty directory and ``overwrite`` is false (checked before any
        work is done).
    """
    target = Path(target).absolute()
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(target)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        yield partial
        check_target(target, overwrite)  # someone may have filled it meanwhile
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        try:
            partial.rename(target)
        except OSError:
            if old is not None:
                old.rename(target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
