"""The row the ingest pipeline builds for each alert: an ``alerts`` row with names for its fields.

The rows go to the database drivers' ``executemany`` as they are, so they stay plain sequences in the
column order of :data:`ALERT_COLUMNS` (a list per alert: the fastest shape both drivers take, with
no conversion per row).  :class:`AlertRow` is that list with a name for each field the pipeline reads
or fills, so no code indexes a row by a bare number.  Three fields are known only once the writer
thread has stored the packet (its path and offset) or computed the sky pixels of the whole batch
(``hpx``): the decoder leaves them ``None`` and the writer sets them, by name, before the insert.
"""

from __future__ import annotations

from ..store.tables import CANDIDATE_COLUMNS

#: The ``alerts`` columns in the order an :class:`AlertRow` holds them: ztfcat's own, then every
#: candidate field in the order the row decoder returns them.
ALERT_COLUMNS: tuple[str, ...] = (
    "candid",
    "objectId",
    "schemavsn",
    "release_id",
    "blob_path",
    "blob_offset",
    "blob_size",
    "hpx",
    "extra",
    "night",
    *CANDIDATE_COLUMNS,
)

#: The ``alert_releases`` columns of a membership, in the order :meth:`AlertRow.membership` gives them.
MEMBER_COLUMNS: tuple[str, ...] = ("candid", "release_id", "blob_path", "blob_offset", "blob_size")


def _field(column: str) -> property:
    at = ALERT_COLUMNS.index(column)

    def get(row: list):
        return row[at]

    def put(row: list, value) -> None:
        row[at] = value

    return property(get, put, doc=f"The ``{column}`` column (position {at}).")


class AlertRow(list):
    """One ``alerts`` row, in :data:`ALERT_COLUMNS` order, with its fields named."""

    __slots__ = ()

    candid = _field("candid")
    object_id = _field("objectId")
    schemavsn = _field("schemavsn")
    release_id = _field("release_id")
    blob_path = _field("blob_path")
    blob_offset = _field("blob_offset")
    blob_size = _field("blob_size")
    hpx = _field("hpx")
    jd = _field("jd")
    ra = _field("ra")
    dec = _field("dec")

    def membership(self) -> tuple:
        """This alert's ``alert_releases`` row (:data:`MEMBER_COLUMNS`), once its packet is stored."""
        return (self.candid, self.release_id, self.blob_path, self.blob_offset, self.blob_size)
