"""Avro object-container framing of ``ztfcat.ingest.avro`` on random multi-block containers, against fastavro.

``fastavro.writer`` writes containers of random records, codecs (null, deflate) and block sizes; fastavro
reads them back as the reference.  Block ends are found independently, as the places the file's sync
marker (from fastavro's reading of the header) occurs.  A container cut exactly at a block end is a
shorter valid container, and the lean framing must read what fastavro reads; a cut anywhere else, or a
damaged sync marker in any block, must be an :class:`AlertDecodeError`, never a wrong answer.
"""

from __future__ import annotations

import random

import pytest

from tests.avrocraft import alert, fastavro_blocks, fastavro_header, fastavro_records, written
from ztfcat.errors import AlertDecodeError
from ztfcat.ingest.avro import AlertDecoder, _blocks, read_header


def _container(rng: random.Random) -> tuple[bytes, list[dict]]:
    records = [
        alert(1_000_000_000 + rng.randrange(10**6), n_prv=rng.randrange(4))
        for _ in range(rng.randrange(2, 12))
    ]
    codec = rng.choice(["null", "deflate"])
    return written(records, codec, sync_interval=rng.choice([1, 2000, 6000, 100_000])), records


def _block_ends(data: bytes) -> list[int]:
    """Where each block ends (just after its sync marker), from the marker fastavro read in the header."""
    header, start = fastavro_header(data)
    sync = header["sync"]
    ends, pos = [], start
    while (found := data.find(sync, pos)) >= 0:
        ends.append(found + len(sync))
        pos = found + len(sync)
    return ends


@pytest.mark.parametrize("seed", range(8))
def test_random_containers_frame_as_fastavro_frames_them(seed):
    rng = random.Random(seed)
    data, records = _container(rng)
    header = read_header(data)
    assert header.data_start == fastavro_header(data)[1]
    ours = [(count, bytes(block)) for count, block in _blocks(data, header)]
    assert ours == fastavro_blocks(data)
    assert sum(count for count, _ in ours) == len(records)
    assert len(_block_ends(data)) == len(ours)
    packets = AlertDecoder().packets(data)
    assert [fastavro_records(p) for p in packets] == [[r] for r in fastavro_records(data)]
    found = AlertDecoder().members_alerts(data)
    assert [r["candid"] for _, _, r in found] == [r["candid"] for r in records]


@pytest.mark.parametrize("seed", range(4))
def test_a_cut_at_a_block_end_is_a_shorter_container_and_elsewhere_an_error(seed):
    rng = random.Random(100 + seed)
    data, _ = _container(rng)
    while len(_block_ends(data)) < 3:
        data, _ = _container(rng)
    header = read_header(data)
    ends = _block_ends(data)
    for end in ends:
        prefix = data[:end]
        assert [(c, bytes(b)) for c, b in _blocks(prefix, header)] == fastavro_blocks(prefix)
    starts = [header.data_start, *ends[:-1]]
    cuts = {e + d for e in starts for d in (1, 2, 5)} | {e - d for e in ends for d in (1, 8, 16, 17)}
    cuts |= {rng.randrange(header.data_start + 1, len(data)) for _ in range(40)}
    for cut in sorted(cuts - set(ends)):
        with pytest.raises(AlertDecodeError):
            _blocks(data[:cut], header)


@pytest.mark.parametrize("seed", range(3))
def test_a_damaged_sync_marker_in_any_block_is_refused(seed):
    rng = random.Random(200 + seed)
    data, _ = _container(rng)
    for end in _block_ends(data):
        damaged = bytearray(data)
        damaged[end - 1 - rng.randrange(16)] ^= 1 << rng.randrange(8)
        with pytest.raises(AlertDecodeError, match="sync marker"):
            AlertDecoder().members_alerts(bytes(damaged))
