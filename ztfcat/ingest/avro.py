"""Decoding ZTF alert packets: Avro object container files holding one ``ztf.alert`` record.

Every packet embeds its ~23 KB writer schema; parsing it again for each alert costs more than decoding
the alert (PERF-FACTS.md), so schemas are parsed once per distinct header and cached.  Each cached
schema comes in three cuts: the prefix up to ``candidate`` (all the ``alerts`` table needs; fastavro
stops reading there, so the history and the cutouts cost nothing), the prefix up to the history fields
(``prv_candidates``, ``fp_hists``) for the light-curve tables, and the whole record for readers.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro

from ..errors import AlertDecodeError
from ..store.fields import FIELDS
from ._rowdecode_py import _Bad, _long
from .rowdecode import KNOWN_TOP_FIELDS, DecodedAlert, Path, RowPlan, compile_plan, compile_record_reader

MAGIC = b"Obj\x01"
_HISTORY_FIELDS = ("prv_candidates", "fp_hists")
_REQUIRED = ("objectId", "candid", "candidate")
#: A ZTF packet inflates to about 100 KB; more than this from one container is a deflate bomb.
MAX_INFLATED = 32 << 20
#: Splitting a multi-record container copies its header (~23 KB of schema) into every packet: these
#: bound the records and bytes one container may turn into, whatever its block counts claim.
MAX_RECORDS = 100_000
MAX_SPLIT = 128 << 20


@dataclass(frozen=True)
class Header:
    """What a container's header says, and where its first data block starts."""

    schema_json: bytes
    codec: str
    sync: bytes
    data_start: int


@dataclass
class ParsedSchema:
    """A writer schema parsed once, cut three ways, with what the catalog needs to know about it."""

    version: str
    full: Any
    prefix: Any
    history: Any
    unknown_candidate_fields: tuple[str, ...] = field(default=())
    unknown_top_fields: tuple[str, ...] = field(default=())


def _read_long(buf: bytes | memoryview, pos: int, where: str = "the Avro header") -> tuple[int, int]:
    """Avro's zig-zag varint, by the one reader of varints (the Python row executor's): a 64-bit long."""
    try:
        byte = buf[pos]
        if not byte & 0x80:
            return (byte >> 1) ^ -(byte & 1), pos + 1
        return _long(buf, pos + 1, byte)
    except IndexError:
        raise AlertDecodeError(f"{where} is truncated") from None
    except _Bad as exc:
        raise AlertDecodeError(
            f"{where} holds a malformed number ({exc.what.removeprefix('holds ')})"
        ) from None


def _read_bytes(buf: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    length, pos = _read_long(buf, pos)
    end = pos + length
    if length < 0 or end > len(buf):
        raise AlertDecodeError("the Avro header is truncated")
    return bytes(buf[pos:end]), end


def read_header(data: bytes | memoryview) -> Header:
    """Parse an object container header (magic, metadata map, sync marker)."""
    if bytes(data[:4]) != MAGIC:
        raise AlertDecodeError("not an Avro object container file (bad magic bytes)")
    pos = 4
    meta: dict[str, bytes] = {}
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _size, pos = _read_long(data, pos)
        for _ in range(count):
            key, pos = _read_bytes(data, pos)
            value, pos = _read_bytes(data, pos)
            meta[key.decode("utf-8", "replace")] = value
    sync = bytes(data[pos : pos + 16])
    if len(sync) != 16:
        raise AlertDecodeError("the Avro header is truncated")
    if "avro.schema" not in meta:
        raise AlertDecodeError("the Avro header has no schema")
    try:
        codec = meta.get("avro.codec", b"null").decode() or "null"
    except UnicodeDecodeError:
        raise AlertDecodeError(
            f"the Avro header names a codec that is not text: {meta['avro.codec']!r}"
        ) from None
    return Header(meta["avro.schema"], codec, sync, pos + 16)


class SchemaCache:
    """Parsed writer schemas keyed by their JSON bytes: one parse per distinct schema, not per alert."""

    def __init__(self) -> None:
        self._cache: dict[bytes, ParsedSchema] = {}
        self._plans: dict[bytes, RowPlan] = {}
        self._readers: dict[bytes, Any] = {}
        self._last: dict[int, tuple[bytes, Any]] = {}  # per table: the schema asked for last, its entry

    def get(self, schema_json: bytes) -> ParsedSchema:
        """The parsed schema for these JSON bytes, parsing it only the first time it is seen."""
        parsed = self._cache.get(schema_json)
        if parsed is None:
            parsed = self._cache[schema_json] = _parse(schema_json)
        return parsed

    def plan(self, schema_json: bytes) -> RowPlan:
        """The row-decoding plan of this schema (:mod:`ztfcat.ingest.rowdecode`), compiled the first time it is seen."""

        def make() -> RowPlan:
            parsed = self.get(schema_json)
            return compile_plan(schema_json, parsed.version, parsed.prefix, parsed.history)

        return self._remembered(self._plans, schema_json, make)

    def reader(self, schema_json: bytes) -> Any | None:
        """This schema's compiled whole-record reader, or None (:func:`.rowdecode.compile_record_reader`).

        The schema is parsed (and refused if it is not a ZTF alert's) the first time it is seen.
        """

        def make() -> Any | None:
            self.get(schema_json)
            return compile_record_reader(schema_json)

        return self._remembered(self._readers, schema_json, make)

    def _remembered(self, table: dict[bytes, Any], schema_json: bytes, make: Callable[[], Any]) -> Any:
        """``table[schema_json]``, made by ``make`` the first time.

        A night's packets nearly all share one schema: comparing with the one asked for last (a
        memcmp) costs a fifth of hashing the 23 KB of JSON of each packet.
        """
        last = self._last.get(id(table))
        if last is not None and last[0] == schema_json:
            return last[1]
        if schema_json in table:
            entry = table[schema_json]
        else:
            entry = table[schema_json] = make()
        self._last[id(table)] = (schema_json, entry)
        return entry

    def __len__(self) -> int:
        return len(self._cache)


def _parse(schema_json: bytes) -> ParsedSchema:
    try:
        schema = json.loads(schema_json)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise AlertDecodeError(f"the embedded schema is not JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise AlertDecodeError("the embedded schema is not an Avro record")
    fields = schema.get("fields")
    if not isinstance(fields, list) or not all(isinstance(f, dict) and "type" in f for f in fields):
        raise AlertDecodeError("the embedded schema's fields are not a list of typed fields")
    names = [f.get("name") for f in fields]
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise AlertDecodeError(
            f"schema {schema.get('name')!r} version {schema.get('version')!r} is not a ZTF alert: "
            f"no {', '.join(missing)}"
        )
    upto_candidate = names.index("candidate") + 1
    last_history = max([names.index(n) + 1 for n in _HISTORY_FIELDS if n in names] or [upto_candidate])
    candidate_type = _record_type(schema["fields"][upto_candidate - 1]["type"])
    candidate_fields = candidate_type.get("fields") if candidate_type else None
    candidate_names = (
        [f.get("name") for f in candidate_fields if isinstance(f, dict)]
        if isinstance(candidate_fields, list)
        else []
    )
    unknown = tuple(n for n in candidate_names if isinstance(n, str) and n not in FIELDS["candidate"])
    unknown_top = tuple(n for n in names if n not in KNOWN_TOP_FIELDS)
    try:
        full = fastavro.parse_schema(schema)
        prefix = fastavro.parse_schema({**schema, "fields": schema["fields"][:upto_candidate]})
        history = fastavro.parse_schema({**schema, "fields": schema["fields"][:last_history]})
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise AlertDecodeError(f"the embedded schema cannot be parsed: {exc}") from exc
    empty = _empty_items(full)
    if empty:
        raise AlertDecodeError(
            f"the embedded schema's array {empty!r} holds items of no bytes: a few bytes could claim endless items"
        )
    version = str(schema.get("version", "")) or "unknown"
    return ParsedSchema(version, full, prefix, history, unknown, unknown_top)


def _empty_items(parsed: Any) -> str | None:
    """The name of an array whose items can take zero bytes (``null``, an empty record...), if any.

    fastavro fills such an array with as many items as its block count says, reading nothing: a
    335-byte packet claiming 10**12 nulls took memory until it ran out (measured).  ZTF's arrays hold
    records of many fields; any other item takes at least a byte, so the packet's size bounds the rest.
    """
    named: dict[str, Any] = {}
    arrays: list[tuple[str, Any]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, where)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "error", "enum", "fixed") and isinstance(node.get("name"), str):
                named[node["name"]] = node
            if node.get("type") == "array":
                arrays.append((where, node.get("items")))
            for field_ in node.get("fields") or ():
                if isinstance(field_, dict):
                    walk(field_.get("type"), str(field_.get("name")))
            for key in ("items", "values"):
                walk(node.get(key), where)
            if isinstance(node.get("type"), dict | list):
                walk(node["type"], where)

    def empty(node: Any, seen: frozenset[str]) -> bool:
        if isinstance(node, str):
            if node == "null":
                return True
            return node in named and node not in seen and empty(named[node], seen | {node})
        if not isinstance(node, dict):
            return False  # a union writes its branch index, a primitive at least a byte
        kind = node.get("type")
        if kind in ("record", "error"):
            return all(empty(f.get("type"), seen) for f in node.get("fields") or () if isinstance(f, dict))
        if kind == "fixed":
            return node.get("size") == 0
        return isinstance(kind, str | dict) and kind not in ("array", "map", "enum") and empty(kind, seen)

    walk(parsed, "")
    return next((where for where, items in arrays if empty(items, frozenset())), None)


def _record_type(avro_type: Any) -> dict | None:
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return avro_type
    if isinstance(avro_type, list):
        for branch in avro_type:
            found = _record_type(branch)
            if found:
                return found
    return None


def encode_long(value: int) -> bytes:
    """Avro's zig-zag varint of a long; the one encoder (:mod:`ztfcat.testing.synthetic` writes with it too)."""
    small = _SMALL_LONGS.get(value)
    if small is not None:
        return small
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_LONGS = {n: bytes(((n << 1) ^ (n >> 63),)) for n in range(-64, 64)}


def _blocks(data: bytes | memoryview, header: Header) -> list[tuple[int, bytes | memoryview]]:
    """Every data block as (record count, decompressed bytes), checking each sync marker.

    Whatever the counts and sizes claim, what comes out is bounded: ``MAX_INFLATED`` bytes inflated,
    and, for a container to be split, ``MAX_RECORDS`` records and ``MAX_SPLIT`` bytes of packets.
    """
    blocks = []
    pos = header.data_start
    inflated = records = 0
    while pos < len(data):
        count, pos = _read_long(data, pos, "a data block's header")
        size, pos = _read_long(data, pos, "a data block's header")
        end = pos + size
        if count < 0 or size < 0 or end + 16 > len(data):
            raise AlertDecodeError("truncated: a data block ends past the end of the file")
        if bytes(data[end : end + 16]) != header.sync:
            raise AlertDecodeError("expected sync marker not found after a data block")
        block = _inflate(data[pos:end], header.codec, MAX_INFLATED - inflated)
        inflated += len(block)
        records += count
        if records > 1 and (records > MAX_RECORDS or records * header.data_start + inflated > MAX_SPLIT):
            raise AlertDecodeError(
                f"claims {records} records: more than one container may hold "
                f"({MAX_RECORDS} records, {MAX_SPLIT >> 20} MiB once split)"
            )
        blocks.append((count, block))
        pos = end + 16
    return blocks


def _inflate(block: bytes | memoryview, codec: str, budget: int = MAX_INFLATED) -> bytes | memoryview:
    """A block's bytes decompressed, never more than ``budget`` of them (a deflate bomb stops here)."""
    if codec == "null":
        return block
    if codec == "deflate":
        inflater = zlib.decompressobj(-15)
        out = bytearray()
        pending = bytes(block)
        try:
            while not inflater.eof:  # 1 MiB at a time: one large call would double its buffer past the cap
                piece = inflater.decompress(pending, 1 << 20)
                pending = inflater.unconsumed_tail
                out += piece
                if len(out) > budget:
                    raise AlertDecodeError(f"deflate blocks inflate to more than {MAX_INFLATED >> 20} MiB")
                if not piece and not pending:
                    raise AlertDecodeError(
                        "deflate block does not inflate: it ends before its last deflate block"
                    )
        except zlib.error as exc:
            raise AlertDecodeError(f"deflate block does not inflate: {exc}") from exc
        return bytes(out)
    raise AlertDecodeError(f"unsupported Avro codec {codec!r}")


class AlertDecoder:
    """Decode alert packets with cached schemas; every method raises :class:`AlertDecodeError`."""

    def __init__(self, cache: SchemaCache | None = None) -> None:
        self.cache = cache or SchemaCache()

    def packets(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        """Split a container into one-alert containers; a normal ZTF packet comes back unchanged.

        A file holding several records (not something ZTF publishes, but seen in the wild) gives one
        packet per record: the original header followed by that record alone in a block of its own,
        so each alert keeps a valid Avro file made of the original bytes, in any layout.
        """
        header = read_header(data)
        blocks = _blocks(data, header)
        if len(blocks) == 1 and blocks[0][0] == 1:
            return [data]
        return self._split(data, header, blocks)

    def _split(self, data, header: Header, blocks) -> list[bytes | memoryview]:
        if not blocks or not any(count for count, _ in blocks):
            raise AlertDecodeError("holds no record")
        parsed = self.cache.get(header.schema_json)
        head = bytes(data[: header.data_start])
        packets: list[bytes | memoryview] = []
        for count, block in blocks:
            stream = io.BytesIO(block)
            for _ in range(count):
                start = stream.tell()
                self._read(stream, parsed.full)
                record = bytes(block[start : stream.tell()])
                if header.codec == "deflate":
                    packer = zlib.compressobj(wbits=-15)
                    record = packer.compress(record) + packer.flush()
                packets.append(
                    b"".join((head, encode_long(1), encode_long(len(record)), record, header.sync))
                )
        return packets

    def members_alerts(self, data: bytes | memoryview) -> list[tuple[bytes | memoryview, ParsedSchema, dict]]:
        """Every alert of one tar member: (one-alert packet, its schema, its record up to ``candidate``).

        The ingest's hot path: a normal packet's header is parsed once and its record decoded straight
        from its only block.
        """
        header = read_header(data)
        blocks = _blocks(data, header)
        parsed = self.cache.get(header.schema_json)
        if len(blocks) == 1 and blocks[0][0] == 1:
            return [(data, parsed, self._read(io.BytesIO(blocks[0][1]), parsed.prefix))]
        return [(packet, *self.prefix(packet)) for packet in self._split(data, header, blocks)]

    def _read(self, stream: io.BytesIO, schema: Any) -> dict:
        try:
            record = fastavro.schemaless_reader(stream, schema)
        except Exception as exc:  # EOFError, UnicodeDecodeError, ValueError, IndexError...
            raise AlertDecodeError(f"the record does not decode: {type(exc).__name__}: {exc}") from exc
        return _with_candidate(record)

    def _one_block(self, packet: bytes | memoryview, header: Header) -> bytes | memoryview:
        blocks = _blocks(packet, header)
        if len(blocks) != 1 or blocks[0][0] != 1:
            raise AlertDecodeError("holds more than one record; split it with AlertDecoder.packets")
        return blocks[0][1]

    def _decode(self, packet: bytes | memoryview, cut: str) -> tuple[ParsedSchema, dict]:
        header = read_header(packet)
        parsed = self.cache.get(header.schema_json)
        return parsed, self._read(io.BytesIO(self._one_block(packet, header)), getattr(parsed, cut))

    def prefix(self, packet: bytes | memoryview) -> tuple[ParsedSchema, dict]:
        """Top-level fields up to ``candidate`` of a one-alert packet: all the ``alerts`` table needs."""
        return self._decode(packet, "prefix")

    def history(self, packet: bytes | memoryview) -> tuple[ParsedSchema, dict]:
        """Fields up to ``prv_candidates``/``fp_hists``, without the cutouts."""
        return self._decode(packet, "history")

    def full(self, packet: bytes | memoryview) -> dict:
        """The whole packet, as ``fastavro.reader`` would give it (read by the compiled reader if built)."""
        header = read_header(packet)
        reader = self.cache.reader(header.schema_json)
        block = self._one_block(packet, header)
        if reader is not None:
            try:
                return _with_candidate(reader.run(block, -1)[0])
            except AlertDecodeError:
                # The reader is stricter than fastavro on some damage (a negative union index, which
                # fastavro takes as a list index).  The ingest's row plan may not have read that field,
                # so such a packet can be stored: it reads back as fastavro reads it, or fails as there.
                pass
        return self._read(io.BytesIO(block), self.cache.get(header.schema_json).full)

    def rows(self, packet: bytes | memoryview, *, history: bool = True, path: Path = "auto") -> DecodedAlert:
        """A one-alert packet as table rows, without building dicts and without reading the cutouts.

        Parameters
        ----------
        packet : bytes or memoryview
            A one-record Avro container (as ZTF ships alerts and the catalog stores them), codec null or
            deflate.
        history : bool
            False reads only up to ``candidate``: ``prv`` and ``fp`` come back None.
        path : {"auto", "compiled", "python", "fastavro"}
            The executor (:meth:`ztfcat.ingest.rowdecode.RowPlan.decode`): ``auto`` is the C one where built,
            else generated Python; the others force one.

        Returns
        -------
        DecodedAlert
            ``candidate`` in ``CANDIDATE_COLUMNS`` order, ``prv``/``fp`` rows in ``PRV_COLUMNS`` /
            ``FP_COLUMNS`` order (:mod:`ztfcat.store.tables`), NaN as None.

        Raises
        ------
        AlertDecodeError
            The packet is damaged or truncated, holds more than one record, or a string holds a NUL byte.
        """
        header = read_header(packet)
        blocks = _blocks(packet, header)
        if len(blocks) != 1 or blocks[0][0] != 1:
            raise AlertDecodeError("holds more than one record; split it with AlertDecoder.packets")
        plan = self.cache.plan(header.schema_json)
        return plan.decode(blocks[0][1], history=history, path=path)[0]

    def members_rows(
        self, data: bytes | memoryview, *, history: bool = True, path: Path = "auto"
    ) -> list[tuple[bytes | memoryview, ParsedSchema, DecodedAlert]]:
        """Every alert of one tar member as (one-alert packet, its schema, its rows).

        :meth:`members_alerts` with rows instead of a record up to ``candidate``: one header parse for
        a normal packet, its only block decoded in place; a multi-record file is split first.
        """
        header = read_header(data)
        blocks = _blocks(data, header)
        parsed = self.cache.get(header.schema_json)
        if len(blocks) == 1 and blocks[0][0] == 1:
            plan = self.cache.plan(header.schema_json)
            return [(data, parsed, plan.decode(blocks[0][1], history=history, path=path)[0])]
        return [
            (packet, parsed, self.rows(packet, history=history, path=path))
            for packet in self._split(data, header, blocks)
        ]


def _with_candidate(record: Any) -> dict:
    """The decoded record, if it is one with a ``candidate`` record; otherwise AlertDecodeError."""
    if not isinstance(record, dict) or not isinstance(record.get("candidate"), dict):
        raise AlertDecodeError("the record has no candidate")
    return record


def schema_version(parsed: ParsedSchema, record: dict) -> str:
    """The alert's schema version: its ``schemavsn`` field, or the schema's own ``version`` before 2.0."""
    return str(record.get("schemavsn") or parsed.version)
