"""One error hierarchy for the whole package.

Every error names the file, release, night or id at fault, so a message read in a log is enough to act
on.  Third-party exceptions are wrapped with ``raise ... from`` so the original cause stays visible.
"""

from __future__ import annotations


class ZtfcatError(Exception):
    """Base class of every error ztfcat raises on purpose."""


class NotFoundError(ZtfcatError, LookupError):
    """An alert, object, release or night that the catalog or the archive does not have."""


class SchemaOutOfDateError(ZtfcatError):
    """The catalog's tables are older than this version of ztfcat; ``ztfcat db upgrade`` fixes it."""


class SchemaTooNewError(ZtfcatError):
    """The catalog was made or upgraded by a newer ztfcat; only upgrading ztfcat itself helps."""


class CatalogUnreadableError(ZtfcatError):
    """The catalog database cannot be opened: not a SQLite file, truncated, corrupt, or not writable."""


class IngestError(ZtfcatError):
    """A tarball could not be ingested as a whole (not gzip, truncated, unreadable)."""


class AlertDecodeError(ZtfcatError):
    """One Avro alert packet could not be decoded; the rest of its night still goes in."""


class ChecksumMismatchError(ZtfcatError):
    """Downloaded bytes do not match the archive's MD5SUMS entry or Content-Length."""


class DownloadError(ZtfcatError):
    """A release could not be fetched from the archive (HTTP error, connection lost past retries)."""


class InvalidQueryError(ZtfcatError, ValueError):
    """A filter names an unknown column or operator, or an ad-hoc SQL statement is not read-only."""


class StorageError(ZtfcatError):
    """Google Cloud Storage refused a request: no bucket, no permission or no credentials."""


class InvalidNightError(ZtfcatError, ValueError):
    """A date that is not a real night (``20180631``), rejected before any request is made."""


class ManifestFormatError(ZtfcatError, ValueError):
    """A malformed ``MD5SUMS`` line (named by its line number) or a digest that is not 32 hex digits."""


class SettingError(ZtfcatError, ValueError):
    """A setting (argument or ``ZTFCAT_*`` environment variable) that is not a usable value."""


class ReadOnlyViolationError(InvalidQueryError):
    """Ad-hoc SQL tried to write, attach, vacuum or otherwise change the catalog, and the database refused."""


class QueryTimeoutError(InvalidQueryError):
    """Ad-hoc SQL ran past its time limit and was stopped."""


class QueryInterruptedError(ZtfcatError):
    """Ad-hoc SQL was stopped by Ctrl-C (or another canceller) before it finished."""


class PacketReadError(ZtfcatError):
    """An alert's raw packet could not be read back from shared storage (object gone, short read,
    store unreachable); the message names the alert, the object and the reason."""


class FleetError(ZtfcatError):
    """Nights cannot be spread over workers: a SQLite catalog, no scheduler, a night given twice."""


class ReleaseBusyError(ZtfcatError):
    """Another process holds a release's ingest lock (it is ingesting or deleting that release now)."""
