"""Write the README's column tables from the schema this ztfcat defines (``Catalog.columns``).

    python docs/schema_columns.py          # rewrite README.md between the columns markers
    python docs/schema_columns.py --check  # exit 1 if README.md is out of date (a test runs this)

Each table's rows are ``Catalog.columns(table)``: name, type, and ZTF's own description (the ``doc`` of
the field in ZTF's Avro schemas) or what ztfcat keeps in its own columns.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- columns:start (docs/schema_columns.py writes this) -->", "<!-- columns:end -->"
TABLES = ("alerts", "prv_candidates", "fp_hists")


def render() -> str:
    """The ``<details>`` blocks, one per table."""
    sys.path.insert(0, str(ROOT))
    from ztfcat import Catalog

    blocks = []
    for table in TABLES:
        rows = Catalog(data_dir=ROOT / ".no-catalog").columns(table)
        lines = [
            f"<details><summary><code>{table}</code>: {len(rows)} columns</summary>",
            "",
            "| column | type | description |",
            "|---|---|---|",
        ]
        lines += [f"| `{name}` | {kind} | {doc.replace('|', '/')} |" for name, kind, doc in rows]
        lines += ["", "</details>"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: list[str]) -> int:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}\n{END}{tail}"
    if "--check" in argv:
        if new != text:
            print("README.md's column tables are out of date: run python docs/schema_columns.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
