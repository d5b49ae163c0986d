"""The Google Cloud Storage Transfer Service URL list: which archive files a bucket still needs.

The service copies public HTTP(S) files into a bucket from a TSV "URL list".  Two details made the seed's
tables useless, and this module exists to get them right:

* the MD5 column is the **base64** of the 16 raw digest bytes (24 characters); a hex MD5 makes the
  transfer fail;
* the service names each object ``HOST/PATH`` (``ztf.uw.edu/alerts/public/ztf_public_20180626.tar.gz``),
  so "already in the bucket" has to be decided under that name, never by the bare file name.

Everything here is pure: the bucket's contents come in as a mapping (``ztfcat.sources.gcs.bucket_md5s`` reads
one), and the output is text or an astropy table.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ManifestFormatError

if TYPE_CHECKING:
    from astropy.table import Table

TSV_HEADER = "TsvHttpData-1.0"
"""First line of every URL list; the service rejects a file without it."""

EMPTY_NIGHT_MAX_BYTES = 100
"""Real empty nights are gzip'd empty tars of 0-74 bytes; no real night with alerts comes near 100 bytes."""

REASON_NEW = "new"
REASON_COMPOSITE = "no md5 in bucket (composite object)"


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive as the URL list needs it.

    Attributes
    ----------
    name : str
        Bare file name, e.g. ``ztf_public_20180626.tar.gz``.
    url : str
        Full HTTP(S) URL the service will fetch.
    size : int
        Exact size in bytes (the service skips a file whose size differs).
    md5_hex : str
        MD5 as 32 hex digits, as ``MD5SUMS`` gives it.
    """

    name: str
    url: str
    size: int
    md5_hex: str


@dataclass(frozen=True)
class SyncRow:
    """One line of the URL list, with the reason it is there.

    Attributes
    ----------
    url : str
        URL to transfer.
    size : int
        Exact size in bytes.
    md5_base64 : str
        Base64 MD5 (24 characters), the form the service and GCS both use.
    reason : str
        ``"new"``, ``"md5 differs (bucket X, archive Y)"`` or ``"no md5 in bucket (composite object)"``.
    """

    url: str
    size: int
    md5_base64: str
    reason: str


def md5_base64(md5_hex: str) -> str:
    """Base64 of the 16 raw digest bytes of a hex MD5 (24 characters, e.g. ``wHENa08V36iPYAsOa2JAdw==``).

    This is the form the transfer service demands and the form GCS reports as ``md5Hash``.

    Raises
    ------
    ManifestFormatError
        (a ValueError) If ``md5_hex`` is not 32 hex digits.
    """
    text = md5_hex.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise ManifestFormatError(f"not a hex MD5: {md5_hex!r}") from exc
    if len(raw) != 16:
        raise ManifestFormatError(f"not a hex MD5 (need 32 hex digits, got {len(text)}): {md5_hex!r}")
    return base64.b64encode(raw).decode("ascii")


def md5_hex_from_base64(md5_b64: str) -> str:
    """Hex MD5 from its base64 form; the inverse of :func:`md5_base64`.

    Raises
    ------
    ValueError
        If ``md5_b64`` is not base64 of 16 bytes.
    """
    try:
        raw = base64.b64decode(md5_b64.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not a base64 MD5: {md5_b64!r}") from exc
    if len(raw) != 16:
        raise ValueError(f"not a base64 MD5 (decodes to {len(raw)} bytes, need 16): {md5_b64!r}")
    return raw.hex()


def transfer_object_name(url: str, prefix: str = "") -> str:
    """The object name the transfer service gives the file at ``url``: ``[prefix/]HOST/PATH``.

    The port, query and fragment are not part of the name; the path is kept as written in the URL.

    Parameters
    ----------
    url : str
        HTTP(S) URL of the file.
    prefix : str, optional
        The transfer job's destination folder in the bucket; a trailing ``/`` is added if missing.

    Raises
    ------
    ValueError
        If ``url`` is not an HTTP(S) URL with a host and a path.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path in ("", "/"):
        raise ValueError(f"not an HTTP(S) file URL: {url!r}")
    name = f"{parts.hostname}{parts.path}"
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def _exact_size(value: Any, url: str) -> int:
    """An integral byte count from an int, a float like ``804057887.0`` or its text."""
    try:
        number = float(value) if isinstance(value, str) else value
        size = int(number)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{url}: size {value!r} is not a byte count") from exc
    if size != number or size < 0:
        raise ValueError(f"{url}: size {value!r} is not an exact byte count")
    return size


def _as_archive_file(item: Any) -> ArchiveFile:
    """Accept an :class:`ArchiveFile`, a ``(name, url, size, md5_hex)`` or ``(url, size, md5_hex)`` tuple,
    or any object with ``url``, ``size`` and ``md5_hex`` (or ``md5``) attributes."""
    if isinstance(item, ArchiveFile):
        name, url, size, md5 = item.name, item.url, item.size, item.md5_hex
    elif isinstance(item, tuple) and len(item) == 4:
        name, url, size, md5 = item
    elif isinstance(item, tuple) and len(item) == 3:
        url, size, md5 = item
        name = ""
    else:
        url, size = item.url, item.size
        md5 = getattr(item, "md5_hex", None) or getattr(item, "md5", None)
        name = getattr(item, "name", "")
    if size is None:
        raise ValueError(f"{url}: size unknown; the transfer service needs the exact size")
    if not md5:
        raise ValueError(f"{url}: MD5 unknown; the transfer service needs it to verify the copy")
    return ArchiveFile(name or posixpath.basename(urlsplit(url).path), url, _exact_size(size, url), md5)


def sync_rows(
    files: Iterable[Any],
    bucket_objects: Mapping[str, str | None] | None,
    *,
    prefix: str = "",
    include_empty: bool = True,
    empty_max_bytes: int = EMPTY_NIGHT_MAX_BYTES,
) -> list[SyncRow]:
    """The files a bucket still needs, as URL-list rows sorted by URL (UTF-8 byte order).

    A file is left out only when the bucket holds an object under the service's name for it
    (``[prefix/]HOST/PATH``) with the same MD5.  A copy under any other name (a bare
    ``ztf_public_20180626.tar.gz`` at the bucket root, say) does not count: the service would write the
    ``HOST/PATH`` object anyway.  Composite objects have no MD5, so a copy cannot be verified; they are
    listed again (reason ``"no md5 in bucket (composite object)"``) because a transfer costs bandwidth
    while a wrong copy silently corrupts the catalog.

    Parameters
    ----------
    files : iterable
        Archive files: :class:`ArchiveFile`, ``(name, url, size, md5_hex)`` or ``(url, size, md5_hex)``
        tuples, or objects with ``url``, ``size`` and ``md5_hex`` attributes.
    bucket_objects : mapping or None
        Object name to base64 MD5 (``None`` for composite objects), as ``ztfcat.sources.gcs.bucket_md5s`` returns;
        ``None`` when there is no bucket, which lists every file.
    prefix : str, optional
        Destination folder of the transfer job inside the bucket.
    include_empty : bool, optional
        ``False`` leaves out empty nights (size at most ``empty_max_bytes``).
    empty_max_bytes : int, optional
        Largest size counted as an empty night.

    Returns
    -------
    list of SyncRow

    Raises
    ------
    ValueError
        If a file has no exact size or MD5, or one URL comes twice with different sizes or MD5s (the
        real ``MD5SUMS`` has such a night: which copy is right cannot be guessed here).
    """
    by_url: dict[str, ArchiveFile] = {}
    for item in files:
        record = _as_archive_file(item)
        seen = by_url.get(record.url)
        if seen is not None and (seen.size, seen.md5_hex.lower()) != (record.size, record.md5_hex.lower()):
            raise ValueError(
                f"{record.url} listed twice: {seen.size} bytes md5 {seen.md5_hex} and "
                f"{record.size} bytes md5 {record.md5_hex}; keep the right one"
            )
        by_url[record.url] = record

    rows = []
    for record in by_url.values():
        if not include_empty and record.size <= empty_max_bytes:
            continue
        archive_md5 = md5_base64(record.md5_hex)
        if bucket_objects is None:
            reason = REASON_NEW
        else:
            name = transfer_object_name(record.url, prefix)
            if name not in bucket_objects:
                reason = REASON_NEW
            else:
                bucket_md5 = bucket_objects[name]
                if bucket_md5 is None:
                    reason = REASON_COMPOSITE
                elif bucket_md5 == archive_md5:
                    continue
                else:
                    reason = f"md5 differs (bucket {bucket_md5}, archive {archive_md5})"
        rows.append(SyncRow(record.url, record.size, archive_md5, reason))
    rows.sort(key=lambda row: row.url.encode("utf-8"))
    return rows


def format_tsv(rows: Iterable[SyncRow]) -> str:
    """The URL list as text: ``TsvHttpData-1.0``, then ``url<TAB>size<TAB>md5_base64`` lines.

    Every line ends with a newline; sizes are written as integers.  Rows are written in the order given
    (:func:`sync_rows` already sorts them).
    """
    lines = [TSV_HEADER]
    lines.extend(f"{row.url}\t{int(row.size)}\t{row.md5_base64}" for row in rows)
    return "\n".join(lines) + "\n"


def write_tsv(rows: Iterable[SyncRow], path: str | os.PathLike[str]) -> Path:
    """Write the URL list to ``path`` (UTF-8, ``\\n`` line ends) and return the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(format_tsv(rows))
    return path


def sync_table(rows: Iterable[SyncRow]) -> Table:
    """The rows as an astropy table with columns ``url``, ``size``, ``md5`` (base64) and ``reason``."""
    from astropy.table import Table

    rows = list(rows)
    return Table(
        {
            "url": [row.url for row in rows],
            "size": [int(row.size) for row in rows],
            "md5": [row.md5_base64 for row in rows],
            "reason": [row.reason for row in rows],
        },
        dtype=[str, "int64", str, str],
    )
