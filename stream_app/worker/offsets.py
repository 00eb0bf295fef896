"""Recover from a broker that lost data: a consumer position past the end of the log.

Apache Kafka answers a fetch beyond a partition's log end with OFFSET_OUT_OF_RANGE, and the
consumer resets to ``auto_offset_reset`` (earliest for the worker). A broker that lost its
data and came back empty (the embedded Tansu broker after a restart; its fetch answers
"nothing yet" instead) leaves the consumer waiting at its old position while new events land
*below* it: they would be skipped once the log grows past it. So the worker checks, every
``[worker] broker_probe_s``, each assigned products partition: a position above the high
watermark the broker last reported is rewound to the start, as Kafka's reset would. The
events read again this way were never processed (the log is new), so nothing is duplicated.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


async def rewind_past_end(consumer: Any, topic: str) -> list[Any]:
    """Seek every assigned partition of ``topic`` whose position is past its high watermark
    back to offset 0 (Faust's ``seek_wait`` also forgets its read offset, or Faust would
    drop the re-read events as already seen); returns the partitions rewound."""
    rewound = []
    for tp in sorted(consumer.assignment()):
        if tp.topic != topic:
            continue
        end = consumer.highwater(tp)
        position = await consumer.position(tp)
        if end is None or position is None or position <= end:
            continue
        log.warning(
            "%s[%d]: position %d is past the log end %d (the broker lost data); reading it "
            "from the start",
            tp.topic,
            tp.partition,
            position,
            end,
        )
        await consumer.seek_wait({tp: 0})
        rewound.append(tp)
    return rewound
