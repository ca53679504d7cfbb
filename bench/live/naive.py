"""The peer PSO is compared with: a minimal Faust app, as one would first write it.

Owns ``naive_faust_eps``'s worker: one agent decodes each message with the reference codec
(pydantic per sample) and, per sample, reads and rewrites its subsystem's entry in a tumbling
60 s windowed table (memory store, Faust's defaults, so at-least-once). It counts samples in
the worker's `WorkerStats` and stamps when the bench's target count is reached.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from .worker_side import WorkerStats


def naive_app(settings: Settings, topic_name: str, stats: WorkerStats, target: int) -> Any:
    """The peer: per-sample read-modify-write of a tumbling windowed Faust table."""
    from datetime import timedelta

    import faust

    from app.wire.codec import SourceRef, decode_message

    partitions = settings.topic_policy.partitions
    assert settings.broker is not None
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.broker}",
        store="memory://",
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.data_dir / settings.app_id),
        key_serializer="raw",
        value_serializer="raw",
    )
    size_s = settings.policy().window.size_s
    sample_ts = [0.0]  # event time of the sample being applied: the table's time reference
    windowed: Any = app.Table("naive-load", default=dict, partitions=partitions).tumbling(
        size_s, expires=timedelta(days=1)
    )
    table = windowed.relative_to(lambda event: sample_ts[0])
    telemetry = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(telemetry)
    async def naive(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            decoded = decode_message(event.value, SourceRef(m.topic, m.partition, m.offset, m.key))
            for _index, sample in decoded.samples:
                sample_ts[0] = sample.ts / 1000
                state = dict(table[sample.subsystem].current())
                for kind, values in (("m", sample.metrics), ("r", sample.resources)):
                    for name, v in values.items():
                        k = f"{kind}:{name}"
                        s = state.get(k)
                        state[k] = (
                            [1, v, v, v, v]
                            if s is None
                            else [s[0] + 1, s[1] + v, min(s[2], v), max(s[3], v), v]
                        )
                table[sample.subsystem] = state
                stats.samples += 1
                if stats.samples == target:
                    stats.target_reached = time.time()

    return app
