"""Schema-faithful synthetic ZTF alerts and nightly tarballs.

The project's tests and benchmarks must run on a machine that has never seen the real archive, so this
module writes alert packets that a reader cannot tell from ZTF's own: the same Avro writer schemas (ZTF's own,
kept in ``ztfcat/schemas/<version>/alert.avsc``, version by version), one record per object
container file with the schema embedded, 63×63 gzip'd FITS cutouts of float32 noise (so packets have real
size and real compressibility), ``prv_candidates`` that mix detections and upper limits and that repeat,
with last-digit differences, from one alert of an object to the next, and ``.tar.gz`` nights streamed to
disk in bounded memory.

Avro encoding is done here rather than with ``fastavro.writer``: the packets are written by the ten
thousand and fastavro's union resolution dominated the cost.  ``fastavro.reader`` is the judge in the tests.

The package's modules: :mod:`.schema` (writer schemas), :mod:`.encode` (Avro encoding),
:mod:`.cutouts` (image stamps), :mod:`.alerts` (field values of one alert) and :mod:`.night`
(tarballs and archives).
"""

from __future__ import annotations

from .alerts import make_alert
from .cutouts import cutout_pool
from .encode import alert_bytes
from .night import NightSpec, make_archive, make_night
from .schema import writer_schema

__all__ = [
    "NightSpec",
    "alert_bytes",
    "cutout_pool",
    "make_alert",
    "make_archive",
    "make_night",
    "writer_schema",
]
