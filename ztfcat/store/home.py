"""Which data directory holds a catalog's local packets, so a process with another one cannot write.

Without a blob store (:mod:`ztfcat.store.blobstore`) a night's packets are files in the data directory
of the process that ingested it, and its rows name them by relative paths.  Several processes may
share one catalog (a PostgreSQL server, or a SQLite file outside the data directory) with data
directories of their own: reading its rows is fine, but writing is not.  Light curves are rebuilt from
the packets of *every* release that holds an object's points (a delete, a failed or forced ingest, a
repair), and a purge removes a night's files from its own data directory, so a process whose data
directory holds only some of the catalog's packets would fail half-way, or leave files nobody removes.
Such a fleet must put its packets in one shared store (``--blobs``); :func:`check` refuses the other
set-up with a one-line error before anything is written.

How a data directory is known: the first process to write local packets puts a random token in
``<data_dir>/packets-home`` and records it in ``catalog_settings``; a data directory moved or mounted
elsewhere keeps its token.  A process whose token differs (or which has none) is let in only if the
catalog holds no local packets that its data directory lacks (one indexed probe per release, and one
``stat``): a catalog from before the token, a token file lost, or a fleet on a blob store whose last
local night is gone.  Two processes that pass the check at once, before either stored a row, could
both take the home; a local ingest therefore calls :func:`confirm` once its rows are stored, and the
one overtaken fails its night.  Not told apart: two *copies* of one data directory (an rsync, a
restored backup) used at once carry the same token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..errors import ZtfcatError
from .blobstore import is_shared
from .tables import alert_releases, catalog_settings, releases

if TYPE_CHECKING:
    from sqlalchemy import Engine

TOKEN_FILE = "packets-home"
KEY = "packets_home"
"""The ``catalog_settings`` key: the token of the data directory holding the local packets, or
:data:`NOWHERE`."""
NOWHERE = "-"
"""Recorded once a check found no local packets at all: processes that write none then pass at once."""


def check(engine: Engine, data_dir: Path, local: bool, *, raced: bool = False) -> None:
    """Raise :class:`ZtfcatError` unless this data directory may write to the catalog.

    ``local``: the caller is about to write packets into ``data_dir`` (an ingest without a blob store,
    a layout conversion), which makes it the catalog's home if it has none.  One query and one small
    read on the usual path; the probes of :func:`_survey` only when the directory is not the one
    recorded.  ``raced``: another process recorded a home between this one's read and its write.
    """
    mine = _token(data_dir)
    with engine.connect() as conn:
        recorded = conn.execute(
            select(catalog_settings.c.value).where(catalog_settings.c.key == KEY)
        ).scalar()
    if recorded is not None and (recorded == mine or (recorded == NOWHERE and not local)):
        return
    any_local, missing = _survey(engine, data_dir)
    if missing is not None or (raced and recorded != NOWHERE):
        # Lost a race: the winner writes local packets elsewhere now, none of them stored yet.
        night, path = missing or ("another process's ingest", "being written")
        raise ZtfcatError(
            f"{data_dir}: the packets of {night} ({path}) are in another data directory; processes "
            "with data directories of their own must share a blob store (--blobs), or run where the "
            "packets are"
        )
    # Every local packet is here (or there is none): this directory is the home from now on.
    if not _record(engine, recorded, _make_token(data_dir) if local or any_local else NOWHERE):
        check(engine, data_dir, local, raced=True)  # another process recorded a home meanwhile


def _token(data_dir: Path) -> str | None:
    """The token of ``data_dir``, or None if it has none; a token file that cannot be read, or holds
    no token, is a one-line error naming it (taking it for absent would make a second home)."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZtfcatError(f"{path}: cannot read this data directory's token: {exc}") from None
    if len(token) != 32 or token.strip("0123456789abcdef"):
        raise ZtfcatError(f"{path}: holds no token of 32 hex digits; delete it if this is the data directory "
                          "that holds the catalog's local packets, and run again")  # fmt: skip
    return token


def _make_token(data_dir: Path) -> str:
    """This data directory's token, created first if it has none: written whole to a hidden name, then
    hard-linked into place, never over an existing one, so processes sharing the directory all read the
    same, complete token (where hard links are refused, created with ``O_EXCL`` instead)."""
    mine = _token(data_dir)
    if mine is not None:
        return mine
    path, fresh = data_dir / TOKEN_FILE, secrets.token_hex(16)
    temporary = data_dir / f".{TOKEN_FILE}.{fresh}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary.write_text(fresh + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process of this directory made it first
            pass
        except OSError:  # a file system without hard links
            with contextlib.suppress(FileExistsError), open(path, "x") as fh:
                fh.write(fresh + "\n")
    except OSError as exc:
        raise ZtfcatError(
            f"{path}: cannot write this data directory's token: {exc.strerror or exc}"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
    return _token(data_dir) or fresh


def confirm(engine: Engine, data_dir: Path, name: str) -> None:
    """Raise unless this data directory is still the recorded home: called by a local ingest once its
    rows are stored (any process that checks after that sees its packets and is refused), so of two
    processes that both passed :func:`check` before either stored a row, the one overtaken fails its
    night instead of leaving local packets in two data directories."""
    with engine.connect() as conn:
        recorded = conn.execute(
            select(catalog_settings.c.value).where(catalog_settings.c.key == KEY)
        ).scalar()
    if recorded != _token(data_dir):
        raise ZtfcatError(
            f"{name}: another data directory became the home of this catalog's local packets while "
            f"this night was ingested into {data_dir}; only one data directory may write local packets"
        )


def _survey(engine: Engine, data_dir: Path) -> tuple[bool, tuple[str, str] | None]:
    """Whether the catalog holds local packets, and ``(night, path)`` of the first release whose
    packets this data directory lacks (or None): the path its first row names, one probe each."""
    any_local = False
    with engine.connect() as conn:
        names = conn.execute(select(releases.c.id, releases.c.name).order_by(releases.c.name)).all()
        for release_id, name in names:
            path = conn.execute(
                select(alert_releases.c.blob_path).where(alert_releases.c.release_id == release_id).limit(1)
            ).scalar()
            if path and not is_shared(path):
                any_local = True
                if not (data_dir / path).exists():
                    return any_local, (name, path)
    return any_local, None


def _record(engine: Engine, recorded: str | None, value: str) -> bool:
    """Replace ``recorded`` by ``value`` if it is still what the catalog holds; False if another
    process changed it first (two first writers at once: one wins, the other checks again)."""
    key = catalog_settings.c.key == KEY
    try:
        with engine.begin() as conn:
            if recorded is None:
                conn.execute(catalog_settings.insert().values(key=KEY, value=value))
                return True
            stale = catalog_settings.c.value == recorded
            return conn.execute(update(catalog_settings).where(key, stale).values(value=value)).rowcount == 1
    except IntegrityError:  # inserted by another process since it was read
        return False
