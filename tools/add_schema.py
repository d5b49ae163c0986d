"""Copy the writer schema out of a real ZTF alert packet into ``ztfcat/schemas/<version>/alert.avsc``.

    python tools/add_schema.py PACKET.avro                # version from the schema's own "version"
    python tools/add_schema.py PACKET.avro --version 3.3  # where the packet's schema says otherwise

ZTF publishes its schemas as separate files (``alert.avsc``, ``candidate.avsc``, ...) that name each
other, but what a reader meets is the one resolved schema its producer embeds in every packet's Avro
header, with its own key order, union order and JSON escaping.  ztfcat keeps that embedded text, byte
for byte (plus a final newline), so that synthetic packets carry exactly the header real ones do.
The first step of a new schema version; then run ``tools/generate_fields.py`` (docs/schema-versions.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import fastavro

ROOT = Path(__file__).resolve().parents[1]
#: Where the schemas live, one folder per version (tools/generate_fields.py reads the same folder).
SCHEMAS = ROOT / "ztfcat" / "schemas"


def embedded_schema(packet: Path) -> str:
    """The ``avro.schema`` text of ``packet``'s Avro header, exactly as written."""
    with packet.open("rb") as f:
        return fastavro.reader(f).metadata["avro.schema"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("packet", type=Path, help="a real alert packet (.avro) of the new version")
    parser.add_argument("--version", help="the version to file it under (default: the schema's own)")
    parser.add_argument(
        "--schemas", type=Path, default=SCHEMAS, help="the schema folder (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="replace a different schema already there")
    args = parser.parse_args(argv)
    try:
        text = embedded_schema(args.packet)
        version = args.version or json.loads(text)["version"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args.packet}: no readable writer schema with a version: {exc}", file=sys.stderr)
        return 1
    target = args.schemas / version / "alert.avsc"
    if target.exists() and target.read_text(encoding="utf-8") != text + "\n" and not args.force:
        print(
            f"{target}: a different schema {version} is already there (--force replaces it)", file=sys.stderr
        )
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")
    print(f"{target}: schema {version} from {args.packet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
