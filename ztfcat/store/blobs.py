"""Raw alert packets on disk, byte for byte, in one of two layouts chosen per catalog.

``files``: one ``alerts/<release>/<candid>.avro`` per alert, as the seed kept them; easy to reach by
hand.  ``pack``: one uncompressed ``alerts/<release>.tar`` per night (a standard tar: ``tar tf`` lists it,
``tar xf`` extracts it) with each alert's offset and length in the catalog; creating one file per alert
costs ~6× more kernel time than appending, and a night becomes one file to move or delete.  Paths in
the catalog are relative to the data directory, so the directory can move.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ZtfcatError
from .blobstore import is_shared, read_shared

if TYPE_CHECKING:
    from .blobstore import StagedPack

LAYOUTS = ("files", "pack")
BLOCK = 512
# The fields of a ustar header after the name, for a regular file of mode 644, owner 0, mtime 0, as
# ``tarfile.TarInfo.tobuf(format=USTAR_FORMAT)`` writes them (a test compares the two byte for byte).
_MODE_IDS = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
_MTIME = b"00000000000\0"
_TAIL = b"0" + bytes(100) + b"ustar\x0000" + bytes(64 + 16 + 155)  # type .. prefix, no device numbers
_FIXED_SUM = sum(_TAIL) + 8 * 0x20  # the checksum field itself counts as eight spaces


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a packet in a pack file; what ``tarfile`` writes, ~20x cheaper.

    ``name`` is ``<candid>.avro`` (ASCII, well under 100 bytes) and ``size`` under 8 GiB.
    """
    head = name.encode("ascii").ljust(100, b"\0") + _MODE_IDS + b"%011o\0" % size + _MTIME
    checksum = sum(head) + _FIXED_SUM
    header = head + b"%06o\0 " % checksum + _TAIL
    return header + bytes(BLOCK - len(header))


def release_dir(release_key: str) -> str:
    """Relative folder of a release's packets in the ``files`` layout."""
    return f"alerts/{release_key}"


def pack_path(release_key: str) -> str:
    """Relative path of a release's pack file in the ``pack`` layout."""
    return f"alerts/{release_key}.tar"


class BlobWriter:
    """Writes one release's packets; ``write`` returns ``(relative path, offset or None)``.

    With ``staged`` (:func:`ztfcat.store.blobstore.stage`) the pack goes to that staging file and the path
    returned is the shared-storage object's URL.
    """

    def __init__(
        self, data_dir: Path, release_key: str, layout: str, *, staged: StagedPack | None = None
    ) -> None:
        if layout not in LAYOUTS:
            raise ZtfcatError(f"unknown blob layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.data_dir = data_dir
        self.release_key = release_key
        self.layout = layout
        self._pack = None
        if layout == "files":
            self._dir = release_dir(release_key)
            (data_dir / self._dir).mkdir(parents=True, exist_ok=True)
        else:
            # Staged for a blob store: written locally, rows record the object it will become.
            self._rel = pack_path(release_key) if staged is None else staged.url
            path = data_dir / self._rel if staged is None else staged.path
            path.parent.mkdir(parents=True, exist_ok=True)
            self._pack = open(path, "wb")  # noqa: SIM115 - held for the whole ingest, closed in close()
            self._offset = 0

    def write(self, candid: int, data: bytes) -> tuple[str, int | None]:
        """Store one packet; its path relative to the data dir, and its offset in a pack file."""
        if self._pack is None:
            rel = f"{self._dir}/{candid}.avro"
            fd = os.open(self.data_dir / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            return rel, None
        header = ustar_header(f"{candid}.avro", len(data))
        offset = self._offset + len(header)
        padding = b"\0" * ((-len(data)) % BLOCK)
        self._pack.write(header)
        self._pack.write(data)
        self._pack.write(padding)
        self._offset = offset + len(data) + len(padding)
        return self._rel, offset

    def flush(self) -> None:
        """Make every packet written so far readable before the rows that point at it are committed."""
        if self._pack is not None:
            self._pack.flush()

    def close(self) -> None:
        """Finish the pack file with tar's two end blocks."""
        if self._pack is not None:
            self._pack.write(bytes(2 * BLOCK))
            self._pack.close()
            self._pack = None


def read_blob(data_dir: Path, path: str, offset: int | None, size: int, candid: int | None = None) -> bytes:
    """The raw packet bytes stored at ``path`` (and ``offset`` in a pack file); ``path`` may be an
    object URL on shared storage (:mod:`ztfcat.store.blobstore`), whose errors name ``candid``."""
    if is_shared(path):
        return read_shared(data_dir, path, offset, size, candid)
    full = data_dir / path
    try:
        with open(full, "rb") as fh:
            if offset is not None:
                fh.seek(offset)
            data = fh.read(size)
    except FileNotFoundError as exc:
        raise ZtfcatError(f"the raw packet {full} is missing from the data directory") from exc
    if len(data) != size:
        raise ZtfcatError(f"the raw packet {full} is truncated ({len(data)} of {size} bytes)")
    return data


def remove_release(data_dir: Path, release_key: str) -> None:
    """Delete a release's packets in either layout; a missing folder or file is fine."""
    shutil.rmtree(data_dir / release_dir(release_key), ignore_errors=True)
    (data_dir / pack_path(release_key)).unlink(missing_ok=True)
