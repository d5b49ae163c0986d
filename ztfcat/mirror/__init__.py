"""Keeping a copy of the archive: downloads into the catalog, the Storage Transfer table, bucket sync."""
