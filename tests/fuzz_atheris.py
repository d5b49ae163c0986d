"""Coverage-guided fuzzing of the tar reader or the Avro framing with atheris (optional).

atheris is not in the test extra (it ships libFuzzer builds for some platforms only); the hypothesis
properties in ``tests/test_fuzz.py`` are what CI runs.  Where it is installed (``pip install atheris``)::

    python -m tests.fuzz_atheris tar  -max_total_time=300
    python -m tests.fuzz_atheris avro -runs=100000

Any other argument goes to libFuzzer.  The corpus starts from the seeds of ``tests/fuzzcheck.py`` and
each input is held to the same properties as under hypothesis; a failing input is written by libFuzzer
to ``crash-*`` and belongs in ``tests/test_fuzz.py`` as a regression test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["ztfcat"]):
    import ztfcat.ingest.avro
    import ztfcat.ingest.tarstream  # noqa: F401 - instrumented before fuzzcheck imports it

from tests.fuzzcheck import avro_seeds, check_avro, check_tar, tar_seeds  # noqa: E402


def main(argv: list[str]) -> None:
    """Fuzz ``argv[1]`` (``tar`` or ``avro``), passing the other arguments to libFuzzer."""
    if len(argv) < 2 or argv[1] not in ("tar", "avro"):
        sys.exit("usage: python -m tests.fuzz_atheris tar|avro [libFuzzer options]")
    check, seeds = (check_tar, tar_seeds) if argv[1] == "tar" else (check_avro, avro_seeds)
    corpus = Path(tempfile.mkdtemp(prefix=f"ztfcat-fuzz-{argv[1]}-"))
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([argv[0], *argv[2:], str(corpus)], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
