"""Alert records decoded straight into rows in the catalog's column order, without building dicts.

fastavro turns every alert into ~100 candidate fields and ~16 ``prv_candidates`` (plus ~10 ``fp_hists`` in
4.x) as dicts, which are then read again to build row tuples: for the history that is ~1 ms of interpreter
work per alert (PERF-FACTS.md), the ingest's wall once every alert's history must be read.  Here a writer
schema is compiled once into a flat *plan* (one opcode per field, its union branches, and the column each
field lands in), and the C extension :mod:`ztfcat.ingest._rowdecode` runs the plan over the datum bytes, building
only the row tuples.  Where the extension is absent (a pure-Python install), the plan runs as generated
Python (:mod:`ztfcat.ingest._rowdecode_py`, ~2x faster than fastavro then tuples, ~7x slower than C); where a
schema uses something the plan does not cover (maps, enums, fixed, logical types, recursive records), the
same rows are made from fastavro's record.  fastavro stays the reference: the tests compare all three.

The plan covers the top-level fields up to the last history field; the cutouts after them are never read.

The same executor reads stored packets back for users (``get_alert``, ``iter_alerts``): a *whole* plan
(:func:`compile_record_reader`) keeps every field and makes each record a dict, NaN and all, exactly what
fastavro gives, with none of fastavro's per-value dispatch on the schema.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

import fastavro

from ..errors import AlertDecodeError
from ..store.fields import FIELDS, TOP_FIELDS
from ._rowdecode_py import PythonPlan

try:  # the compiled executor is optional: a pure-Python install runs the plan as generated Python
    from . import _rowdecode
except ImportError:  # pragma: no cover - depends on the build
    _rowdecode = None

#: The plan format the C executor understands; an extension built from another version is not used.
PLAN_FORMAT = 2

# Opcodes, shared with _rowdecode.c.
NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, STRING, BYTES, RECORD, ARRAY, UNION = range(11)
_PRIMITIVES = {
    "null": NULL,
    "boolean": BOOLEAN,
    "int": INT,
    "long": LONG,
    "float": FLOAT,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
}
_MIN_SIZE = {NULL: 0, BOOLEAN: 1, INT: 1, LONG: 1, FLOAT: 4, DOUBLE: 8, STRING: 1, BYTES: 1}
#: A field decoded and discarded (kept out of every tuple).
SKIP = -1

# Same definitions as ztfcat.store.tables (a test checks they agree), without importing SQLAlchemy: the
# decoding side of an ingest may run in a process that has no use for it.
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(n for n in FIELDS["candidate"] if n != "candid")
PRV_COLUMNS: tuple[str, ...] = tuple(FIELDS["prv_candidate"])
FP_COLUMNS: tuple[str, ...] = tuple(FIELDS["fp_hist"])

KNOWN_TOP_FIELDS = frozenset(name for names in TOP_FIELDS.values() for name in names)
#: Top-level fields the rows carry, in the order of the top-level tuple the executor returns.
_TOP_SLOTS = ("schemavsn", "objectId", "candid", "candidate", "prv_candidates", "fp_hists")
_HISTORY = ("prv_candidates", "fp_hists")
_PRV, _FP = _TOP_SLOTS.index("prv_candidates"), _TOP_SLOTS.index("fp_hists")


#: The executors :meth:`RowPlan.decode` can be asked for.
Path = Literal["auto", "compiled", "python", "fastavro"]


class DecodedAlert(NamedTuple):
    """One alert as rows: what the ``alerts``, ``prv_candidates`` and ``fp_hists`` tables take.

    ``candidate`` is in :data:`CANDIDATE_COLUMNS` order, each ``prv`` tuple in :data:`PRV_COLUMNS` order,
    each ``fp`` tuple in :data:`FP_COLUMNS` order; a field the writer schema lacks is None, and so is a
    NaN.  ``extra`` holds the candidate fields :mod:`ztfcat.store.fields` does not know (None when there are
    none); ``prv``/``fp`` are None when the history was not asked for, and ``fp`` is an empty list for a
    schema without ``fp_hists`` (or a null one).  ``unknown_top_level`` names top-level fields of the writer
    schema that no known ZTF schema version has.
    """

    candid: int | None
    objectId: str | None
    schemavsn: str
    candidate: tuple
    extra: dict | None
    prv: list[tuple] | None
    fp: list[tuple] | None
    unknown_top_level: tuple[str, ...]


class _NotCompilable(Exception):
    """The schema uses something the plan does not cover; its alerts are decoded through fastavro."""


@dataclass(frozen=True)
class RowPlan:
    """One writer schema compiled for row decoding (made by :func:`compile_plan`, cached per schema).

    ``nodes`` are ``(opcode, a, b, minimum size in bytes)``: a union's branches are ``branches[a:a+b]``,
    a record's ``a`` is its program, an array's ``a`` its item node.  A program is ``(tuple size, side
    size, fields)`` with each field ``(slot, node, name)``: a slot >= 0 is a tuple position, ``SKIP`` a
    field read and dropped, ``-2 - i`` position ``i`` of the side tuple (unknown candidate fields).
    Program 0 is the top-level record; ``prefix_fields``/``history_fields`` say how many of its fields to
    read (through ``candidate``, through the last history field).
    """

    version: str
    unknown_top_level: tuple[str, ...]
    unknown_candidate: tuple[str, ...]
    prefix_fields: int
    history_fields: int
    nodes: tuple[tuple[int, int, int, int], ...]
    branches: tuple[int, ...]
    programs: tuple[tuple[int, int, tuple[tuple[int, int, str], ...]], ...]
    not_compiled: str | None
    fastavro_prefix: Any
    fastavro_history: Any
    executor: Any

    @cached_property
    def python(self) -> PythonPlan | None:
        """The plan as generated Python, made when first asked for (None if the plan does not cover it)."""
        return None if self.not_compiled else PythonPlan(self.nodes, self.branches, self.programs)

    def decode(
        self, datum: bytes | memoryview, *, history: bool = True, path: Path = "auto"
    ) -> tuple[DecodedAlert, int]:
        """Rows of one record starting at byte 0 of ``datum``, and the byte position after the fields read.

        Parameters
        ----------
        datum : bytes or memoryview
            The record's Avro binary encoding (a one-record block, inflated); bytes after the history
            (the cutouts) are not read.
        history : bool
            False stops after ``candidate``: ``prv`` and ``fp`` come back None.
        path : {"auto", "compiled", "python", "fastavro"}
            Which executor: ``auto`` takes the C one where built, else the generated Python one, else
            fastavro; the others force one (tests and benchmarks compare them).

        Raises
        ------
        AlertDecodeError
            Truncated or damaged bytes, a union branch out of range, a string that is not UTF-8 or holds
            a NUL byte (named with its field), or no candidate.
        ValueError
            ``path`` names an executor this plan does not have.
        """
        nfields = self.history_fields if history else self.prefix_fields
        if path == "auto":
            executor = self.executor or self.python
        elif path == "compiled":
            executor = self.executor
        elif path == "python":
            executor = self.python
        elif path == "fastavro":
            executor = None
        else:
            raise ValueError(f"unknown decoding path {path!r}")
        if executor is not None:
            top, end = executor.run(datum, nfields)
        elif path in ("auto", "fastavro"):
            top, end = self._fastavro_top(datum, history)
        else:
            raise ValueError(
                f"no {path} executor for schema {self.version}: {self.not_compiled or 'not built'}"
            )
        return self._finish(top, history), end

    def _finish(self, top: tuple, history: bool) -> DecodedAlert:
        schemavsn, object_id, candid, candidate, prv, fp = top
        if candidate is None:
            raise AlertDecodeError("the record has no candidate")
        extra = None
        if self.unknown_candidate:
            candidate, side = candidate
            extra = dict(zip(self.unknown_candidate, side, strict=True))
        if history:
            prv = [] if prv is None else prv
            fp = [] if fp is None else fp
        return DecodedAlert(
            candid,
            object_id,
            str(schemavsn or self.version),
            candidate,
            extra,
            prv,
            fp,
            self.unknown_top_level,
        )

    def _fastavro_top(self, datum: bytes | memoryview, history: bool) -> tuple[tuple, int]:
        """The executors' output made from fastavro's record: for schemas the plan does not cover."""
        stream = io.BytesIO(datum)
        try:
            record = fastavro.schemaless_reader(
                stream, self.fastavro_history if history else self.fastavro_prefix
            )
        except Exception as exc:  # EOFError, UnicodeDecodeError, ValueError, IndexError...
            raise AlertDecodeError(f"the record does not decode: {type(exc).__name__}: {exc}") from exc
        candidate = record.get("candidate")
        if candidate is not None:
            if not isinstance(candidate, dict):
                raise AlertDecodeError("the record's candidate is not a record")
            row = _row(candidate, CANDIDATE_COLUMNS, "candidate")
            if self.unknown_candidate:
                candidate = (row, _row(candidate, self.unknown_candidate, "candidate"))
            else:
                candidate = row
        top = [
            _value(record.get("schemavsn"), "schemavsn"),
            _value(record.get("objectId"), "objectId"),
            record.get("candid"),
            candidate,
            None,
            None,
        ]
        if history:
            for slot, columns in ((_PRV, PRV_COLUMNS), (_FP, FP_COLUMNS)):
                name = _TOP_SLOTS[slot]
                points = record.get(name)
                if points is None:
                    continue
                if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
                    raise AlertDecodeError(f"the record's {name} is not an array of records")
                top[slot] = [_row(p, columns, f"{name}[{i}]") for i, p in enumerate(points)]
        return tuple(top), stream.tell()


def _value(value: Any, name: str) -> Any:
    if value.__class__ is float and value != value:
        return None
    if value.__class__ is str and "\x00" in value:
        raise AlertDecodeError(f"{name} holds a NUL byte")
    return value


def _row(record: dict, columns: tuple[str, ...], where: str) -> tuple:
    """``record`` in ``columns`` order, NaN as None; a NUL in a string is an error naming the field."""
    values = [record.get(c) for c in columns]
    for i, value in enumerate(values):
        if value.__class__ is float:
            if math.isnan(value):
                values[i] = None
        elif value.__class__ is str and "\x00" in value:
            raise AlertDecodeError(f"{where}.{columns[i]} holds a NUL byte")
    return tuple(values)


class _Compiler:
    """Walks a writer schema, resolving named types, into the node and program tables of a plan."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int, int, int]] = []
        self.branches: list[int] = []
        self.programs: list[Any] = [None]  # program 0, the top level, is filled in last
        self.named: dict[str, tuple[dict, str]] = {}
        self.records: dict[tuple[str, tuple[str, ...] | None], int] = {}
        self.open: set[str] = set()

    def _node(self, kind: int, a: int = 0, b: int = 0, size: int = 0) -> int:
        self.nodes.append((kind, a, b, size))
        return len(self.nodes) - 1

    def _fullname(self, name: str, namespace: str) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def type(self, avro: Any, namespace: str, columns: tuple[str, ...] | None = None) -> int:
        """The node of an Avro type; ``columns`` maps a record's fields (None: a record of skips)."""
        if isinstance(avro, str):
            if avro in _PRIMITIVES:
                kind = _PRIMITIVES[avro]
                return self._node(kind, size=_MIN_SIZE[kind])
            for name in (self._fullname(avro, namespace), avro):
                if name in self.named:
                    definition, space = self.named[name]
                    return self._record(definition, space, name, columns)
            raise _NotCompilable(f"unknown type {avro!r}")
        if isinstance(avro, list):
            branches = [self.type(branch, namespace, columns) for branch in avro]
            first = len(self.branches)
            self.branches.extend(branches)
            return self._node(UNION, first, len(branches), 1)
        if not isinstance(avro, dict):
            raise _NotCompilable(f"not an Avro type: {avro!r}")
        if "logicalType" in avro:
            raise _NotCompilable(f"logical type {avro['logicalType']!r}")
        kind = avro.get("type")
        if kind in _PRIMITIVES:
            return self.type(kind, namespace, columns)
        if kind == "record":
            name = self._fullname(str(avro.get("name")), str(avro.get("namespace", namespace)))
            self.named[name] = (avro, name.rpartition(".")[0])
            return self._record(avro, name.rpartition(".")[0], name, columns)
        if kind == "array":
            item = self.type(avro.get("items"), namespace, columns)
            return self._node(ARRAY, item, 0, 1)
        raise _NotCompilable(f"type {kind!r}")

    def _record(self, avro: dict, namespace: str, name: str, columns: tuple[str, ...] | None) -> int:
        key = (name, columns)
        if key not in self.records:
            if name in self.open:
                raise _NotCompilable(f"recursive record {name!r}")
            self.open.add(name)
            index = len(self.programs)
            self.programs.append(None)
            self.programs[index] = self.program(avro, namespace, columns or ())
            self.open.discard(name)
            self.records[key] = index
        index = self.records[key]
        size = sum(self.nodes[node][3] for _slot, node, _name in self.programs[index][2])
        return self._node(RECORD, index, 0, size)

    def program(self, avro: dict, namespace: str, columns: tuple[str, ...], side: tuple[str, ...] = ()):
        """A record's fields as (slot, node, name); the unknown ones land in the side tuple if listed."""
        fields = avro.get("fields")
        if not isinstance(fields, list):
            raise _NotCompilable("a record without a field list")
        names = [f.get("name") for f in fields]
        if len(set(names)) != len(names):
            raise _NotCompilable("a record with two fields of one name")
        position = {name: i for i, name in enumerate(columns)}
        place = {name: -2 - i for i, name in enumerate(side)}
        out = []
        for f in fields:
            name = str(f["name"])
            slot = position.get(name, place.get(name, SKIP))
            node = self.type(f["type"], namespace, None)
            if slot != SKIP and not self._scalar(node):
                raise _NotCompilable(f"field {name!r} is not a scalar")
            out.append((slot, node, name))
        return (len(columns), len(side), tuple(out))

    def _scalar(self, node: int) -> bool:
        kind, a, b, _size = self.nodes[node]
        if kind == UNION:
            return all(self._scalar(branch) for branch in self.branches[a : a + b])
        return kind < RECORD


def compile_plan(
    schema_json: bytes | str, version: str, fastavro_prefix: Any, fastavro_history: Any
) -> RowPlan:
    """Compile the ``ztf.alert`` writer schema of a packet into a :class:`RowPlan`.

    Parameters
    ----------
    schema_json : bytes or str
        The schema as embedded in the packet's header.
    version : str
        The schema's version (:attr:`ztfcat.ingest.avro.ParsedSchema.version`), the ``schemavsn`` of alerts whose
        record has none (1.x).
    fastavro_prefix, fastavro_history : parsed fastavro schemas
        The writer schema cut after ``candidate`` and after the history fields, for the fastavro path.

    Raises
    ------
    AlertDecodeError
        The schema is not a ZTF alert record.
    """
    try:
        schema = json.loads(schema_json)
    except ValueError as exc:
        raise AlertDecodeError(f"the embedded schema is not JSON: {exc}") from exc
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list) or "candidate" not in [f.get("name") for f in fields]:
        raise AlertDecodeError("the embedded schema is not a ZTF alert record")
    names = [str(f.get("name")) for f in fields]
    unknown_top = tuple(n for n in names if n not in KNOWN_TOP_FIELDS)
    prefix_fields = names.index("candidate") + 1
    history_fields = max([names.index(n) + 1 for n in _HISTORY if n in names] or [prefix_fields])
    candidate_record = _record_of(fields[names.index("candidate")]["type"], schema, names)
    candidate_names = [str(f.get("name")) for f in (candidate_record or {}).get("fields", [])]
    unknown_candidate = tuple(n for n in candidate_names if n not in FIELDS["candidate"])

    compiler = _Compiler()
    namespace = _namespace(schema)
    columns = {"candidate": CANDIDATE_COLUMNS, "prv_candidates": PRV_COLUMNS, "fp_hists": FP_COLUMNS}
    not_compiled = None
    try:
        top = []
        for f in fields[:history_fields]:
            name = str(f["name"])
            slot = _TOP_SLOTS.index(name) if name in _TOP_SLOTS else SKIP
            if name == "candidate":
                node = _candidate_node(compiler, f["type"], namespace, unknown_candidate)
            else:
                node = compiler.type(f["type"], namespace, columns.get(name))
            top.append((slot, node, name))
        compiler.programs[0] = (len(_TOP_SLOTS), 0, tuple(top))
    except (_NotCompilable, KeyError, TypeError) as exc:
        not_compiled = f"the plan does not cover this schema ({exc}); decoded with fastavro"
    if not_compiled is None and executor_available():
        try:
            executor = _rowdecode.Plan(compiler.nodes, compiler.branches, compiler.programs, AlertDecodeError)
        except ValueError as exc:  # a plan the C executor's checks refuse: a compiler bug, not bad data
            not_compiled = f"the C executor refuses the plan ({exc}); decoded with fastavro"
    else:
        executor = None

    plan = RowPlan(
        version=version,
        unknown_top_level=unknown_top,
        unknown_candidate=unknown_candidate,
        prefix_fields=prefix_fields,
        history_fields=history_fields,
        nodes=tuple(compiler.nodes),
        branches=tuple(compiler.branches),
        programs=tuple(compiler.programs) if not_compiled is None else (),
        not_compiled=not_compiled,
        fastavro_prefix=fastavro_prefix,
        fastavro_history=fastavro_history,
        executor=executor if not_compiled is None else None,
    )
    return plan


class _WholeCompiler(_Compiler):
    """The tables of a whole plan: every field of every record kept, in schema order."""

    def program(self, avro: dict, namespace: str, columns: tuple[str, ...], side: tuple[str, ...] = ()):
        fields = avro.get("fields")
        if not isinstance(fields, list):
            raise _NotCompilable("a record without a field list")
        names = [f["name"] for f in fields]
        if not all(isinstance(name, str) for name in names):  # fastavro keys the dict by them as they are
            raise _NotCompilable("a field name that is not a string")
        if len(set(names)) != len(names):
            raise _NotCompilable("a record with two fields of one name")
        out = tuple(
            (i, self.type(f["type"], namespace, None), name)
            for i, (f, name) in enumerate(zip(fields, names, strict=True))
        )
        return (len(out), 0, out)


def compile_record_reader(schema_json: bytes | str) -> Any | None:
    """The C executor of a writer schema's whole plan, or None where there can be none.

    ``reader.run(datum, -1)`` gives ``(record, end)``: the record as ``fastavro.schemaless_reader`` gives
    it with that schema (a test compares every real packet of every version), or
    :class:`~ztfcat.errors.AlertDecodeError` naming the damaged field.  None where the extension is not
    built or the schema uses what plans do not cover (maps, enums, fixed, logical types, recursion):
    fastavro reads those.
    """
    if not executor_available():
        return None
    try:
        schema = json.loads(schema_json)
        namespace = _namespace(schema)
        compiler = _WholeCompiler()
        compiler.open.add(compiler._fullname(str(schema.get("name")), namespace))
        compiler.programs[0] = compiler.program(schema, namespace, ())
        return _rowdecode.Plan(
            compiler.nodes, compiler.branches, compiler.programs, AlertDecodeError, whole=True
        )
    except (_NotCompilable, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _namespace(schema: dict) -> str:
    """The namespace the top-level record's named types resolve in."""
    if "." in str(schema.get("name", "")):
        return str(schema["name"]).rpartition(".")[0]
    return str(schema.get("namespace", ""))


def _candidate_node(compiler: _Compiler, avro: Any, namespace: str, unknown: tuple[str, ...]) -> int:
    """The candidate's node: its record maps known fields to columns and unknown ones to the side tuple."""
    if isinstance(avro, list):
        branches = [_candidate_node(compiler, branch, namespace, unknown) for branch in avro]
        first = len(compiler.branches)
        compiler.branches.extend(branches)
        return compiler._node(UNION, first, len(branches), 1)
    if isinstance(avro, dict) and avro.get("type") == "record":
        space = str(avro.get("namespace", namespace))
        name = compiler._fullname(str(avro.get("name")), space)
        compiler.named[name] = (avro, name.rpartition(".")[0])
        index = len(compiler.programs)
        compiler.programs.append(None)
        compiler.programs[index] = compiler.program(avro, name.rpartition(".")[0], CANDIDATE_COLUMNS, unknown)
        size = sum(compiler.nodes[node][3] for _slot, node, _name in compiler.programs[index][2])
        return compiler._node(RECORD, index, 0, size)
    if avro == "null":
        return compiler.type(avro, namespace)
    raise _NotCompilable("candidate is not a record")


def _record_of(avro: Any, schema: dict, names: list[str]) -> dict | None:
    if isinstance(avro, dict) and avro.get("type") == "record":
        return avro
    if isinstance(avro, list):
        for branch in avro:
            found = _record_of(branch, schema, names)
            if found:
                return found
    return None


def executor_available() -> bool:
    """True where the compiled executor is built and speaks this module's plan format."""
    return _rowdecode is not None and getattr(_rowdecode, "PLAN_FORMAT", None) == PLAN_FORMAT
