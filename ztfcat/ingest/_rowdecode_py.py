"""The Python executor of :mod:`ztfcat.ingest.rowdecode` plans: the C executor's twin, for installs without it.

A plan is turned into Python source once per writer schema, one function per record, straight-line code
per field (no dispatch on opcodes at run time), and compiled with :func:`compile`.  It reads what the C
executor reads, refuses what it refuses, and returns the same tuples; it is ~2x faster than fastavro
followed by dict-to-tuple conversion, because it builds no dicts.  Only plan data reaches the generated
source: field names are passed as constants in a table, never spliced into the code.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import AlertDecodeError

NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, STRING, BYTES, RECORD, ARRAY, UNION = range(11)


class _Bad(Exception):
    """Damage found in the data: what, where in the record, and the path of fields down to it."""

    def __init__(self, what: str, at: int) -> None:
        super().__init__(what)
        self.what = what
        self.at = at
        self.path: list[str] = []


def _long(buf: bytes, pos: int, byte: int) -> tuple[int, int]:
    """A varint whose first byte (``byte``, already read) has its continuation bit set."""
    start = pos - 1
    result = byte & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        if shift == 63 and byte & 0x7E:
            raise _Bad("holds a number longer than 64 bits", start)
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise _Bad("holds a number longer than 64 bits", start)


def _fail(exc: BaseException, name: str, items: Any, pos: int) -> BaseException:
    """``exc`` as damage of field ``name`` (``items``: the array read so far, for its index)."""
    if isinstance(exc, _Bad):
        bad = exc
    elif isinstance(exc, IndexError | struct.error):
        bad = _Bad("is truncated", pos)
    elif isinstance(exc, UnicodeDecodeError):
        bad = _Bad("is not UTF-8", pos)
    else:
        return exc
    bad.path.append(f"{name}[{len(items)}]" if isinstance(items, list) else name)
    return bad


class _Source:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


class PythonPlan:
    """A plan compiled to Python; ``run(datum, nfields)`` returns what the C ``Plan.run`` returns."""

    def __init__(self, nodes, branches, programs) -> None:
        self.nodes, self.branches, self.programs = nodes, branches, programs
        self._wanted: list[tuple[int, bool]] = [(0, True)]
        self._done: set[tuple[int, bool]] = set()
        self.names: dict[str, tuple[str, ...]] = {}
        src = _Source()
        while self._wanted:
            key = self._wanted.pop()
            if key not in self._done:
                self._done.add(key)
                self._function(src, *key)
        namespace: dict[str, Any] = {
            "_f": struct.Struct("<f").unpack_from,
            "_d": struct.Struct("<d").unpack_from,
            "_long": _long,
            "_Bad": _Bad,
            "_fail": _fail,
            **{f"_names_{k}": v for k, v in self.names.items()},
        }
        exec(compile("\n".join(src.lines), "<ztfcat row plan>", "exec"), namespace)
        self._top = namespace["_r0_1"]

    def run(self, datum: bytes | memoryview, nfields: int) -> tuple[tuple, int]:
        buf = bytes(datum)
        try:
            return self._top(buf, 0, len(buf), nfields)
        except _Bad as bad:
            path = ".".join(reversed(bad.path))
            raise AlertDecodeError(f"{path} {bad.what} (byte {bad.at} of {len(buf)} of the record)") from None

    # ------------------------------------------------------------------------------------ generation

    def _function(self, src: _Source, pi: int, want: bool) -> None:
        nslots, nside, fields = self.programs[pi]
        key = f"{pi}_{int(want)}"
        self.names[key] = tuple(name for _slot, _node, name in fields)
        top = pi == 0
        src.add(0, f"def _r{key}(buf, pos, size{', limit' if top else ''}):")
        src.add(1, "f = 0")
        src.add(1, "try:")
        values: list[str] = ["None"] * nslots
        side: list[str] = ["None"] * nside
        for k, (slot, node, _name) in enumerate(fields):
            keep = want and slot != -1
            target = f"v{k}" if keep else "_"
            if top:
                src.add(2, f"if limit == {k}:")
                src.add(3, f"return ({''.join(v + ', ' for v in values)}), pos")
            src.add(2, f"f = {k}")
            self._node(src, 2, node, target, keep)
            if keep and slot >= 0:
                values[slot] = target
            elif keep:
                side[-2 - slot] = target
        src.add(2, f"row = ({''.join(v + ', ' for v in values)})")
        if nside and want:
            src.add(2, f"row = (row, ({''.join(v + ', ' for v in side)}))")
        src.add(1, "except Exception as exc:")
        src.add(2, f"raise _fail(exc, _names_{key}[f], locals().get(f'v{{f}}'), pos) from None")
        src.add(1, "return row, pos" if want else "return None, pos")

    def _varint(self, src: _Source, i: int, target: str) -> None:
        src.add(i, "b = buf[pos]")
        src.add(i, "pos += 1")
        src.add(i, f"if b < 128: {target} = (b >> 1) ^ -(b & 1)")
        src.add(i, f"else: {target}, pos = _long(buf, pos, b)")

    def _node(self, src: _Source, i: int, ni: int, target: str, want: bool) -> None:
        kind, a, b, _size = self.nodes[ni]
        if kind == NULL:
            src.add(i, f"{target} = None")
        elif kind == BOOLEAN:
            src.add(i, f"{target} = buf[pos] != 0")
            src.add(i, "pos += 1")
        elif kind in (INT, LONG):
            self._varint(src, i, target)
        elif kind in (FLOAT, DOUBLE):
            size, unpack = (4, "_f") if kind == FLOAT else (8, "_d")
            src.add(i, f"{target} = {unpack}(buf, pos)[0]")
            src.add(i, f"pos += {size}")
            if want:
                src.add(i, f"if {target} != {target}: {target} = None")
        elif kind in (STRING, BYTES):
            self._varint(src, i, "n")
            src.add(i, "if n < 0: raise _Bad('has a negative length', pos)")
            src.add(i, "e = pos + n")
            src.add(i, "if e > size: raise _Bad('is truncated', pos)")
            if kind == BYTES:
                src.add(i, f"{target} = buf[pos:e]")
            else:
                src.add(i, f"{target} = buf[pos:e].decode()")
                if want:
                    src.add(i, f"if '\\x00' in {target}: raise _Bad('holds a NUL byte', pos)")
            src.add(i, "pos = e")
        elif kind == UNION:
            # Branch j is the byte 2j (its zig-zag varint): dispatch on the byte itself, and bring a
            # longer (non-canonical) varint back to that form first.
            src.add(i, "u = buf[pos]")
            src.add(i, "pos += 1")
            src.add(i, "if u > 127:")
            src.add(i + 1, "u, pos = _long(buf, pos, u)")
            src.add(i + 1, f"u = 2 * u if 0 <= u < {b} else 1")
            for j in range(b):
                src.add(i, f"{'if' if j == 0 else 'elif'} u == {2 * j}:")
                self._node(src, i + 1, self.branches[a + j], target, want)
            src.add(i, "else: raise _Bad('holds a union branch out of range', pos)")
        elif kind == RECORD:
            self._wanted.append((a, want))
            src.add(i, f"{target}, pos = _r{a}_{int(want)}(buf, pos, size)")
        elif kind == ARRAY:
            self._array(src, i, a, target, want)
        else:  # pragma: no cover - the compiler makes no other opcode
            raise ValueError(f"opcode {kind}")

    def _array(self, src: _Source, i: int, item: int, target: str, want: bool) -> None:
        minsize = self.nodes[item][3]
        count = f"c{i}"  # names of their own, should an array hold arrays
        src.add(i, f"{target} = []" if want else f"{target} = None")
        src.add(i, "while True:")
        self._varint(src, i + 1, count)
        src.add(i + 1, f"if {count} == 0: break")
        src.add(i + 1, f"if {count} < 0:")
        src.add(i + 2, f"{count} = -{count}")
        self._varint(src, i + 2, "_")
        limit = f"{count} > (size - pos) // {minsize}" if minsize else f"{count} > 16777216"
        src.add(i + 1, f"if {limit}: raise _Bad('holds an array longer than the record', pos)")
        src.add(i + 1, f"for _ in range({count}):")
        item_target = f"w{i}" if want else "_"
        self._node(src, i + 2, item, item_target, want)
        if want:
            src.add(i + 2, f"{target}.append({item_target})")
