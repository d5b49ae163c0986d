"""tools/generate_fields.py and tools/add_schema.py: fields.py is what ZTF's schemas give, never a hand edit.

The committed ``ztfcat/store/fields.py`` must equal the generator's output on the committed schemas (so a hand
edit fails here), the generator must carry a new version through (newest declaration wins, new fields
appended, numeric version order), and every field of every real packet's writer schema must be known
to fields.py with the same Avro type.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import fastavro
import numpy as np
import pytest

from ztfcat.store import fields
from ztfcat.testing import synthetic

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tools" / "generate_fields.py"
ADD_SCHEMA = ROOT / "tools" / "add_schema.py"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load(GENERATOR)


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _exec_fields(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102
    return namespace


# ------------------------------------------------------------------------------------- the committed file


def test_committed_fields_py_is_the_generators_output(gen, tmp_path):
    out = tmp_path / "fields.py"
    done = _run(GENERATOR, "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == gen.OUTPUT.read_text(encoding="utf-8")
    # the constant names the module the package imports, wherever the coordinator moves it
    assert Path(fields.__file__).resolve() == gen.OUTPUT.resolve()
    assert _run(GENERATOR, "--check").returncode == 0


def test_check_fails_on_a_hand_edit(gen, tmp_path):
    edited = tmp_path / "fields.py"
    text = gen.OUTPUT.read_text(encoding="utf-8")
    doc = fields.FIELDS["candidate"]["fid"][2]  # short enough to sit on one line
    assert repr(doc) in text
    edited.write_text(text.replace(repr(doc), repr(doc + " (edited)"), 1), encoding="utf-8")
    done = _run(GENERATOR, "--check", "--output", str(edited))
    assert done.returncode == 1
    assert str(edited) in done.stdout and "tools/generate_fields.py" in done.stdout
    assert edited.read_text(encoding="utf-8") != text  # --check writes nothing


def test_the_generated_tables_are_the_imported_ones(gen):
    tables = gen.derive(gen.load_schemas())
    assert tables["KNOWN_VERSIONS"] == fields.KNOWN_VERSIONS
    assert tables["TOP_FIELDS"] == fields.TOP_FIELDS
    assert tables["FIELDS"] == fields.FIELDS
    assert tables["VERSION_FIELDS"] == fields.VERSION_FIELDS


def test_one_schema_file_per_known_version(gen):
    folders = sorted(p.parent.name for p in gen.SCHEMAS.glob("*/alert.avsc"))
    assert sorted(fields.KNOWN_VERSIONS) == folders
    for version in fields.KNOWN_VERSIONS:
        text = (gen.SCHEMAS / version / "alert.avsc").read_text(encoding="utf-8")
        schema = json.loads(text)
        fastavro.parse_schema(schema)
        assert schema["version"] == version
        # what synthetic packets embed is the file's text, byte for byte
        assert synthetic.schema.schema_json(version) + "\n" == text


def test_fields_against_a_plain_walk_of_each_schema():
    """A second, plain reading of each schema: names, order and types; the newest version gives the docs."""
    for version in fields.KNOWN_VERSIONS:
        schema = synthetic.writer_schema(version)
        assert tuple(f["name"] for f in schema["fields"]) == fields.TOP_FIELDS[version]
        for top in schema["fields"]:
            if top["name"] not in ("candidate", "prv_candidates", "fp_hists"):
                continue
            t = top["type"]
            record = next(x for x in t if x != "null")["items"] if isinstance(t, list) else t
            part = record["name"].split(".")[-1]
            assert tuple(f["name"] for f in record["fields"]) == fields.VERSION_FIELDS[part][version]
            newest = version == max(
                (v for v in fields.KNOWN_VERSIONS if v in fields.VERSION_FIELDS[part]),
                key=lambda v: tuple(map(int, v.split("."))),
            )
            for f in record["fields"]:
                kind = f["type"]
                nullable = isinstance(kind, list)
                base = next(x for x in kind if x != "null") if nullable else kind
                assert fields.FIELDS[part][f["name"]][0] == base, (version, part, f["name"])
                if newest:
                    assert fields.FIELDS[part][f["name"]] == (base, nullable, f.get("doc", ""))


# ------------------------------------------------------------------------------------- a new version


def _new_version(schemas: Path) -> None:
    """A made-up 4.10 (after 4.02, before nothing): 4.02 with one new field and one reworded doc."""
    schema = json.loads((schemas / "4.02" / "alert.avsc").read_text(encoding="utf-8"))
    schema["version"] = "4.10"
    candidate = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    rb = next(f for f in candidate["fields"] if f["name"] == "rb")
    rb["doc"] = "reworded in 4.10"
    candidate["fields"].append(
        {"default": None, "doc": "new in 4.10", "name": "newfield", "type": ["null", "int"]}
    )
    (schemas / "4.10").mkdir()
    (schemas / "4.10" / "alert.avsc").write_text(json.dumps(schema) + "\n", encoding="utf-8")


def test_a_new_schema_version_goes_through(gen, tmp_path):
    schemas = tmp_path / "schemas"
    shutil.copytree(gen.SCHEMAS, schemas)
    _new_version(schemas)
    out = tmp_path / "fields.py"
    done = _run(GENERATOR, "--schemas", str(schemas), "--output", str(out))
    assert done.returncode == 0, done.stderr
    new = _exec_fields(out)
    assert new["KNOWN_VERSIONS"] == (*fields.KNOWN_VERSIONS, "4.10")
    assert new["FIELDS"]["candidate"]["newfield"] == ("int", True, "new in 4.10")
    assert list(new["FIELDS"]["candidate"])[-1] == "newfield"
    assert new["FIELDS"]["candidate"]["rb"] == ("float", True, "reworded in 4.10")
    assert new["VERSION_FIELDS"]["candidate"]["4.10"] == (
        *fields.VERSION_FIELDS["candidate"]["4.02"],
        "newfield",
    )
    for part, versions in fields.VERSION_FIELDS.items():
        for version, names in versions.items():
            assert new["VERSION_FIELDS"][part][version] == names
    assert new["TOP_FIELDS"]["4.10"] == fields.TOP_FIELDS["4.02"]
    # the rest of the file is unchanged: only the new version's entries and the rb doc differ
    old_lines = set(gen.OUTPUT.read_text(encoding="utf-8").splitlines())
    added = [line for line in out.read_text(encoding="utf-8").splitlines() if line not in old_lines]
    assert any("'4.10'" in line for line in added) and any("newfield" in line for line in added)


def test_a_schema_it_cannot_read_is_one_line_naming_the_file(gen, tmp_path):
    schemas = tmp_path / "schemas"
    shutil.copytree(gen.SCHEMAS, schemas)
    path = schemas / "4.02" / "alert.avsc"
    schema = json.loads(path.read_text(encoding="utf-8"))
    candidate = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    candidate["fields"][0]["type"] = {"type": "array", "items": "double"}
    path.write_text(json.dumps(schema), encoding="utf-8")
    out = tmp_path / "fields.py"
    done = _run(GENERATOR, "--schemas", str(schemas), "--output", str(out))
    assert done.returncode == 1 and not out.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "candidate.jd" in lines[0], done.stderr
    (schemas / "4.02" / "alert.avsc").write_text("{not json", encoding="utf-8")
    done = _run(GENERATOR, "--schemas", str(schemas), "--output", str(out))
    assert done.returncode == 1 and str(path) in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_versions_sort_numerically(gen):
    assert sorted(["4.10", "4.02", "3.5", "10.0", "4.01"], key=gen.version_key) == [
        "3.5",
        "4.01",
        "4.02",
        "4.10",
        "10.0",
    ]


# ------------------------------------------------------------------------------------- add_schema


def _packet(path: Path, version: str) -> Path:
    record = synthetic.make_alert(
        np.random.default_rng(3),
        version=version,
        object_id="ZTF18abcdefg",
        candid=595147624915010001,
        jd=2458349.6,
        ra=1.0,
        dec=2.0,
    )
    path.write_bytes(synthetic.alert_bytes(record, version))
    return path


def test_add_schema_copies_the_packets_header_text(tmp_path):
    packet = _packet(tmp_path / "a.avro", "4.02")
    schemas = tmp_path / "schemas"
    done = _run(ADD_SCHEMA, str(packet), "--schemas", str(schemas))
    assert done.returncode == 0, done.stderr
    copied = (schemas / "4.02" / "alert.avsc").read_text(encoding="utf-8")
    with packet.open("rb") as f:
        assert copied == fastavro.reader(f).metadata["avro.schema"] + "\n"
    assert copied == synthetic.schema.schema_json("4.02") + "\n"
    # the same schema again is fine; a different one under that version needs --force
    assert _run(ADD_SCHEMA, str(packet), "--schemas", str(schemas)).returncode == 0
    other = _packet(tmp_path / "b.avro", "4.01")
    done = _run(ADD_SCHEMA, str(other), "--schemas", str(schemas), "--version", "4.02")
    assert done.returncode == 1 and "--force" in done.stderr
    assert (schemas / "4.02" / "alert.avsc").read_text(encoding="utf-8") == copied
    assert (
        _run(ADD_SCHEMA, str(other), "--schemas", str(schemas), "--version", "4.02", "--force").returncode
        == 0
    )
    assert (schemas / "4.02" / "alert.avsc").read_text(encoding="utf-8") == synthetic.schema.schema_json(
        "4.01"
    ) + "\n"
    done = _run(ADD_SCHEMA, str(tmp_path / "missing.avro"), "--schemas", str(schemas))
    assert done.returncode == 1 and "missing.avro" in done.stderr


# ------------------------------------------------------------------------------------- real packets


def _real_schemas(root: Path) -> dict[str, str]:
    """Each distinct embedded writer schema of the sample data, with one packet that carries it."""
    found: dict[str, str] = {}
    files = sorted((root / "alerts").glob("*/*.avro")) + sorted((root / "multi-record").glob("*.avro"))
    for path in files:
        with path.open("rb") as f:
            found.setdefault(fastavro.reader(f).metadata["avro.schema"], str(path))
    for path in sorted((root / "tarballs").glob("*.tar.gz")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".avro"):
                    data = tar.extractfile(member).read()
                    schema = fastavro.reader(io.BytesIO(data)).metadata["avro.schema"]
                    found.setdefault(schema, f"{path}:{member.name}")
    return found


def _parts(schema: dict):
    for top in schema["fields"]:
        if top["name"] in ("candidate", "prv_candidates", "fp_hists"):
            t = top["type"]
            t = next(x for x in t if x != "null") if isinstance(t, list) else t
            yield top["name"], (t["items"] if t["type"] == "array" else t)


@pytest.mark.shared
def test_every_field_of_every_real_packet_is_known_with_its_type(shared_alerts):
    real = _real_schemas(shared_alerts)
    assert len(real) >= len(fields.KNOWN_VERSIONS)
    tops = {name for names in fields.TOP_FIELDS.values() for name in names}
    checked = 0
    for text, where in real.items():
        schema = json.loads(text)
        assert schema["version"] in fields.KNOWN_VERSIONS, where
        assert {f["name"] for f in schema["fields"]} <= tops, where
        for top, record in _parts(schema):
            part = record["name"].split(".")[-1]
            assert part == {"candidate": "candidate", "prv_candidates": "prv_candidate"}.get(top, "fp_hist")
            for f in record["fields"]:
                kind = f["type"]
                nullable = isinstance(kind, list) and "null" in kind
                base = next(x for x in kind if x != "null") if isinstance(kind, list) else kind
                assert f["name"] in fields.FIELDS[part], (where, part, f["name"])
                known_type, known_nullable, _doc = fields.FIELDS[part][f["name"]]
                assert base == known_type, (where, part, f["name"], base, known_type)
                # a column that may hold null must be nullable (3.5's ranr/decnr are the converse)
                assert known_nullable or not nullable, (where, part, f["name"])
                checked += 1
    assert checked > 1000


@pytest.mark.shared
def test_each_committed_schema_is_a_real_packets_own(gen, shared_alerts):
    real = _real_schemas(shared_alerts)
    for version in fields.KNOWN_VERSIONS:
        text = (gen.SCHEMAS / version / "alert.avsc").read_text(encoding="utf-8")
        assert text.removesuffix("\n") in real, version
