"""The catalog as columnar data for the wider ecosystem: typed Parquet datasets and a HATS catalog.

:mod:`ztfcat.export.parquet` writes the alerts (partitioned by night) and the light-curve tables as
Parquet whose column types are the Avro types (float32 stays float32); :mod:`ztfcat.export.hats`
turns the alerts into a HATS catalog with ``hats-import`` on a ``dask.distributed`` cluster, so LSDB
can cone-search and cross-match them past one machine.  Both need the optional ``ztfcat[hats]``
dependencies, imported only when an export runs (:func:`require`), never at ``import ztfcat``.
"""

from __future__ import annotations

import importlib

from ..errors import ZtfcatError

#: What ``ztfcat[hats]`` brings, by import name, for the message when one is missing.
HATS_MODULES: tuple[str, ...] = ("pyarrow", "hats", "hats_import", "lsdb", "dask.distributed")


class MissingExtraError(ZtfcatError, ImportError):
    """A columnar export needs packages of an optional extra that is not installed."""


def require(*modules: str) -> None:
    """Import ``modules`` (default: every one of ``ztfcat[hats]``) or raise a one-line error naming the extra.

    Raises
    ------
    MissingExtraError
        The first module that cannot be imported, and the ``pip install`` line that brings it.
    """
    for name in modules or HATS_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"the columnar export needs {name.split('.')[0]}, which is not installed: "
                f"pip install 'ztfcat[hats]'"
            ) from exc
