"""Tests of ztfcat.ingest.rowdecode: alert rows from every executor of a plan equal fastavro's.

The reference is ``fastavro.reader`` on the original bytes, turned into rows here with nothing but the
column lists; the C executor, the generated-Python one and the fastavro path must all give exactly that,
for every real packet of every schema version and for synthetic ones, and must refuse damaged bytes
cleanly (and alike: the C and Python executors are run against each other on damaged bytes).
"""

from __future__ import annotations

import io
import json
import math
import os

import fastavro
import pytest

from tests.avrocraft import damaged_copies, record_bytes, rewritten, seeded_packet, with_a_map
from ztfcat.errors import AlertDecodeError
from ztfcat.ingest import rowdecode
from ztfcat.ingest._rowdecode_py import PythonPlan
from ztfcat.ingest.avro import AlertDecoder, read_header
from ztfcat.store import tables
from ztfcat.store.fields import FIELDS, KNOWN_VERSIONS, TOP_FIELDS

#: Every executor, each forced; "compiled" is dropped where the C extension is not built.
MODES = ("compiled", "python", "fastavro") if rowdecode.executor_available() else ("python", "fastavro")
KNOWN_TOP = {name for names in TOP_FIELDS.values() for name in names}


# --------------------------------------------------------------------------------------- the reference


def _clean(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _reference(packet: bytes) -> tuple:
    """What the rows must be, from ``fastavro.reader`` alone: (candid, objectId, schemavsn, ...)."""
    reader = fastavro.reader(io.BytesIO(packet))
    (record,) = list(reader)
    schema = json.loads(reader.metadata["avro.schema"])
    cand = record["candidate"]
    candidate = tuple(_clean(cand.get(c)) for c in tables.CANDIDATE_COLUMNS)
    unknown = [n for n in cand if n not in FIELDS["candidate"]]
    extra = {n: _clean(cand[n]) for n in unknown} or None
    prv = [tuple(_clean(p.get(c)) for c in tables.PRV_COLUMNS) for p in record.get("prv_candidates") or []]
    fp = [tuple(_clean(p.get(c)) for c in tables.FP_COLUMNS) for p in record.get("fp_hists") or []]
    version = str(record.get("schemavsn") or schema.get("version"))
    top = tuple(f["name"] for f in schema["fields"] if f["name"] not in KNOWN_TOP)
    return (record["candid"], record["objectId"], version, candidate, extra, prv, fp, top)


def _rows(decoder: AlertDecoder, packet: bytes, mode: str, history: bool = True):
    return decoder.rows(packet, history=history, path=mode)


def _check_against_reference(decoder: AlertDecoder, packet: bytes, name: str, modes=MODES) -> None:
    expected = _reference(packet)
    for mode in modes:
        got = _rows(decoder, packet, mode)
        assert tuple(got) == expected, f"{name}: {mode} path differs from fastavro"
        for i, column in enumerate(tables.CANDIDATE_COLUMNS):  # equal *and* of the same type (1 vs 1.0)
            assert type(got.candidate[i]) is type(expected[3][i]), f"{name}: {mode} candidate.{column}"
    for mode in ("auto", "fastavro"):
        short = _rows(decoder, packet, mode, history=False)
        assert short.prv is None and short.fp is None
        assert short._replace(prv=expected[5], fp=expected[6]) == expected


@pytest.fixture(scope="module")
def decoder() -> AlertDecoder:
    return AlertDecoder()


# ------------------------------------------------------------------------------------------------ tests


def test_the_columns_are_the_tables_columns():
    assert rowdecode.CANDIDATE_COLUMNS == tables.CANDIDATE_COLUMNS
    assert rowdecode.PRV_COLUMNS == tables.PRV_COLUMNS
    assert rowdecode.FP_COLUMNS == tables.FP_COLUMNS


def test_the_extension_is_built_where_it_should_be():
    """CI installs with ``pip install -e``, which compiles it; elsewhere a missing build only skips."""
    if rowdecode.executor_available():
        return
    if os.environ.get("CI") == "true" and not os.environ.get("ZTFCAT_NO_EXTENSION"):
        pytest.fail("ztfcat.ingest._rowdecode is not built: pip install -e . should have compiled it")
    pytest.skip(
        "ztfcat.ingest._rowdecode is not built here (pip install -e . compiles it); Python runs the plans"
    )


@pytest.mark.shared
@pytest.mark.slow
def test_every_real_packet_of_every_version(decoder, shared_alerts):
    files = sorted((shared_alerts / "alerts").glob("*/*.avro"))
    assert len(files) >= 1013
    versions = set()
    for path in files:
        packet = path.read_bytes()
        _check_against_reference(decoder, packet, path.name)
        versions.add(decoder.rows(packet).schemavsn)
    assert {"1.3", "3.3", "4.02"} <= versions
    if rowdecode.executor_available():
        assert all(p.executor is not None for p in decoder.cache._plans.values())


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_synthetic_packets_of_every_version(decoder, version):
    for seed, (n_prv, n_fp) in enumerate([(15, 10), (0, 0), (1, 3)]):
        packet = seeded_packet(version, seed, n_prv=n_prv, n_fp=n_fp, cutouts=seed != 1)
        _check_against_reference(decoder, packet, f"{version}/{seed}")
    if rowdecode.executor_available():
        assert decoder.cache.plan(read_header(packet).schema_json).executor is not None


def test_without_the_extension_the_plan_runs_as_python(monkeypatch):
    monkeypatch.setattr(rowdecode, "_rowdecode", None)
    decoder = AlertDecoder()
    packet = seeded_packet("4.02", 2)
    plan = decoder.cache.plan(read_header(packet).schema_json)
    assert plan.executor is None and plan.python is not None
    assert tuple(decoder.rows(packet)) == _reference(packet)
    with pytest.raises(ValueError, match="no compiled executor"):
        decoder.rows(packet, path="compiled")


def test_deflate_and_memoryview_packets(decoder):
    packet = rewritten(seeded_packet("4.02", 3), codec="deflate")
    assert read_header(packet).codec == "deflate"
    _check_against_reference(decoder, packet, "deflate")
    assert decoder.rows(memoryview(packet)) == decoder.rows(packet)


def test_nan_is_none(decoder):
    def change(record):
        record["candidate"]["sgscore1"] = math.nan
        record["candidate"]["magnr"] = math.nan
        record["prv_candidates"][0]["magpsf"] = math.nan
        record["fp_hists"][0]["forcediffimflux"] = math.nan

    packet = rewritten(seeded_packet("4.02", 4), change)
    _check_against_reference(decoder, packet, "nan")
    for mode in MODES:
        got = _rows(decoder, packet, mode)
        assert got.candidate[tables.CANDIDATE_COLUMNS.index("sgscore1")] is None
        assert got.prv[0][tables.PRV_COLUMNS.index("magpsf")] is None
        assert got.fp[0][tables.FP_COLUMNS.index("forcediffimflux")] is None


def test_unknown_fields_of_a_future_schema(decoder):
    """Unknown candidate fields come back in ``extra``; unknown top-level ones are named, also after
    the history (never read) and before it (read and dropped)."""

    def schema_change(schema):
        candidate = schema["fields"][[f["name"] for f in schema["fields"]].index("candidate")]["type"]
        candidate["fields"].append({"name": "newscore", "type": ["null", "float"], "default": None})
        candidate["fields"].insert(3, {"name": "newname", "type": "string", "default": ""})
        schema["fields"].insert(5, {"name": "future", "type": ["null", "string"], "default": None})
        schema["fields"].append({"name": "later", "type": {"type": "map", "values": "long"}, "default": {}})

    def change(record):
        record["candidate"]["newscore"] = 0.5
        record["candidate"]["newname"] = "x"
        record["future"] = "something"
        record["later"] = {"a": 1}

    packet = rewritten(seeded_packet("4.02", 5), change, schema_change)
    _check_against_reference(decoder, packet, "future")
    for mode in MODES:
        got = _rows(decoder, packet, mode)
        assert got.extra == {"newname": "x", "newscore": 0.5}
        assert got.unknown_top_level == ("future", "later")
        assert len(got.prv) == 15 and len(got.fp) == 10
    plan = decoder.cache.plan(read_header(packet).schema_json)
    assert plan.not_compiled is None  # the map lies after the history: never read, so still compiled


def test_a_schema_the_plan_does_not_cover_goes_through_fastavro(decoder):
    packet = with_a_map(seeded_packet("3.3", 6))
    plan = decoder.cache.plan(read_header(packet).schema_json)
    assert plan.executor is None and plan.python is None and "map" in plan.not_compiled
    _check_against_reference(decoder, packet, "map", modes=("auto", "fastavro"))
    for mode in ("compiled", "python"):
        with pytest.raises(ValueError, match="does not cover"):
            decoder.rows(packet, path=mode)


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ("top", "objectId"),
        ("candidate", "ssnamenr"),
        ("prv_candidates", "isdiffpos"),
        ("prv_candidates", "pdiffimfilename"),
        ("fp_hists", "procstatus"),
    ],
)
def test_a_nul_byte_in_a_string_is_refused_naming_the_field(decoder, part, field):
    def change(record):
        target = {"top": record, "candidate": record["candidate"]}.get(part) or record[part][1]
        target[field] = "ZTF\x00x"

    packet = rewritten(seeded_packet("4.02", 7), change)
    for mode in MODES:
        with pytest.raises(AlertDecodeError, match=f"{field}.*NUL"):
            _rows(decoder, packet, mode)


@pytest.mark.shared
def test_real_damaged_packets(decoder, shared_alerts):
    """Truncated files fail in the framing; their partial block, run through the plan, either decodes
    to exactly what fastavro gives or fails cleanly, on both paths alike."""
    files = sorted((shared_alerts / "damaged").glob("*.avro"))
    assert files
    for path in files:
        data = path.read_bytes()
        for mode in MODES:
            with pytest.raises(AlertDecodeError):
                _rows(decoder, data, mode)
        plan = decoder.cache.plan(read_header(data).schema_json)
        partial = record_bytes(data + bytes(16))  # what the block holds up to the end of the file
        outcomes = []
        for mode in MODES:
            try:
                outcomes.append(plan.decode(partial, path=mode))
            except AlertDecodeError as exc:
                outcomes.append(type(exc))
        assert len(set(map(repr, outcomes))) == 1, path.name


def _outcome(plan, datum, path):
    """The decoded rows, or the error message without its byte position."""
    try:
        return plan.decode(datum, path=path)
    except AlertDecodeError as exc:
        return str(exc).split(" (byte")[0]


def test_a_truncated_datum_at_every_offset_fails_cleanly(decoder):
    packet = seeded_packet("4.02", 8, n_prv=4, n_fp=2, cutouts=False)
    plan = decoder.cache.plan(read_header(packet).schema_json)
    datum = record_bytes(packet)
    whole, end = plan.decode(datum)
    assert whole == decoder.rows(packet)
    assert end == len(datum) - 3  # all but the three null cutouts
    assert {plan.decode(datum, path=mode)[1] for mode in MODES} == {end}
    for cut in range(end):
        messages = {_outcome(plan, datum[:cut], mode) for mode in MODES if mode != "fastavro"}
        assert len(messages) == 1 and isinstance(messages.pop(), str), cut
        if cut % 17 == 0:
            with pytest.raises(AlertDecodeError):
                plan.decode(datum[:cut], path="fastavro")
    for cut in range(0, len(packet), 97):  # and the packet itself, framing included
        with pytest.raises(AlertDecodeError):
            decoder.rows(packet[:cut])


def test_random_damage_gives_the_same_answer_on_every_path(decoder):
    """A bounded fuzzing run: bytes of a datum overwritten at random.  The C and Python executors give
    the same rows or the same error (field and reason); fastavro the same rows or an error, with one
    known exception: it takes a negative union index as Python takes a list index (-1: the last
    branch), where the executors see damage."""
    packet = seeded_packet("4.02", 9, n_prv=5, n_fp=3, cutouts=False)
    plan = decoder.cache.plan(read_header(packet).schema_json)
    datum = record_bytes(packet)
    assert plan.decode(datum)[1] == len(datum) - 3
    decoded = stricter = 0
    for damaged in damaged_copies(datum, 1000, seed=12):
        ours = {repr(_outcome(plan, damaged, mode)) for mode in MODES if mode != "fastavro"}
        assert len(ours) == 1
        outcome = _outcome(plan, damaged, "python")
        reference = _outcome(plan, damaged, "fastavro")
        if isinstance(outcome, str) and not isinstance(reference, str):
            assert "union branch out of range" in outcome
            stricter += 1
            continue
        assert isinstance(outcome, str) == isinstance(reference, str)
        if not isinstance(outcome, str):
            assert outcome == reference
            decoded += 1
    assert 0 < decoded < 1000 and stricter < 100


def test_a_negative_union_index_is_refused():
    """fastavro reads index -1 as the last branch; the executor calls it what it is, damage."""
    schema = {"type": "record", "name": "x", "fields": [{"name": "a", "type": ["null", "long"]}]}
    assert fastavro.schemaless_reader(io.BytesIO(b"\x01\x02"), schema) == {"a": 1}
    long_, null = (rowdecode.LONG, 0, 0, 1), (rowdecode.NULL, 0, 0, 0)
    tables_ = ((null, long_, (rowdecode.UNION, 0, 2, 1)), (0, 1), ((1, 0, ((0, 2, "a"),)),))
    python = PythonPlan(*tables_)
    assert python.run(b"\x02\x02", 1) == ((1,), 2)
    with pytest.raises(AlertDecodeError, match="a holds a union branch out of range"):
        python.run(b"\x01\x02", 1)
    if not rowdecode.executor_available():
        pytest.skip("no compiled executor")
    from ztfcat.ingest import _rowdecode

    plan = _rowdecode.Plan(*tables_, AlertDecodeError)
    assert plan.run(b"\x02\x02", 1) == ((1,), 2)
    with pytest.raises(AlertDecodeError, match="a holds a union branch out of range"):
        plan.run(b"\x01\x02", 1)


@pytest.mark.shared
def test_members_rows_of_a_multi_record_file(decoder, shared_alerts):
    data = (shared_alerts / "multi-record" / "avro_multi_alerts_other.avro").read_bytes()
    records = list(fastavro.reader(io.BytesIO(data)))
    for mode in MODES:
        members = decoder.members_rows(data, path=mode)
        assert [r.candid for _packet, _parsed, r in members] == [r["candid"] for r in records]
        for packet, _parsed, rows in members:
            assert tuple(rows) == _reference(bytes(packet))


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_members_rows_of_a_synthetic_multi_record_file(decoder, codec):
    packets = [seeded_packet("4.02", 20 + i, candid=595147624915010001 + i) for i in range(3)]
    schema = json.loads(fastavro.reader(io.BytesIO(packets[0])).metadata["avro.schema"])
    records = [next(iter(fastavro.reader(io.BytesIO(p)))) for p in packets]
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    for mode in MODES:
        members = decoder.members_rows(out.getvalue(), path=mode)
        assert [tuple(rows) for _packet, _parsed, rows in members] == [_reference(p) for p in packets]


def test_members_rows_of_a_normal_packet(decoder):
    packet = seeded_packet("4.01", 10)
    ((same, parsed, rows),) = decoder.members_rows(packet)
    assert same is packet and parsed.version == "4.01"
    assert tuple(rows) == _reference(packet)


def test_a_damaged_plan_is_refused_by_the_executor():
    """The executor checks a plan's tables once, so a bad plan cannot make it read or recurse wildly."""
    if not rowdecode.executor_available():
        pytest.skip("no compiled executor")
    from ztfcat.ingest import _rowdecode

    string = (rowdecode.STRING, 0, 0, 1)
    good = ((string,), (), ((1, 0, ((0, 0, "objectId"),)),))
    assert _rowdecode.Plan(*good, AlertDecodeError).run(b"\x02a", 1) == (("a",), 2)
    for bad in [
        ((string, (rowdecode.ARRAY, 1, 0, 1)), (), ((1, 0, ((0, 1, "x"),)),)),  # an array of itself
        ((string, (rowdecode.RECORD, 0, 0, 1)), (), ((1, 0, ((0, 1, "x"),)),)),  # the top record again
        ((string,), (), ((1, 0, ((5, 0, "x"),)),)),  # a slot past the tuple
        ((string, (rowdecode.UNION, 0, 3, 1)), (0,), ((1, 0, ((0, 1, "x"),)),)),  # branches past the end
    ]:
        with pytest.raises(ValueError):
            _rowdecode.Plan(*bad, AlertDecodeError)
