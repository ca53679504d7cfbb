"""The bench's worker subprocess from the inside: one Faust worker and what it reports.

Owns ``_worker`` mode: `worker_main` runs PSO's worker (`agents.app.build_app`, full or with
the ingest agent only) or the naive peer under `faust.Worker`, with the telemetry topic shared
by every run (`SharedInputTopics`), a sensor that stamps its first and last telemetry message
in (`WorkerStats`, written to the stats file the bench polls), the `SealLog` of its
checkpoints, and an optional CPU-time profile dumped on `PROFILE_SIGNAL`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings, TopicNames, load_settings

from .naive import naive_app
from .seals import SealLog

PROFILE_SIGNAL = signal.SIGRTMIN + 2  # mode's worker owns SIGUSR1/SIGUSR2


class SharedInputTopics(TopicNames):
    """Topic names of one deployment, except the telemetry topic, which all runs share."""

    telemetry_topic: str

    @property
    def telemetry(self) -> str:
        return self.telemetry_topic


@dataclass(slots=True)
class WorkerStats:
    first_in: float | None = None
    last_in: float | None = None
    messages_in: int = 0
    samples: int = 0
    target_reached: float | None = None


def worker_main(argv: list[str]) -> None:
    """Run one Faust worker: ``pso`` (full), ``ingest`` (ingest agent only) or ``naive``."""
    import faust

    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["pso", "ingest", "naive"], required=True)
    parser.add_argument("--telemetry-topic", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--target-samples", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--seals", type=Path, default=None, help="SealLog output (JSON lines)")
    args = parser.parse_args(argv)
    settings = load_settings()
    stats = WorkerStats()
    topic = args.telemetry_topic
    seal_log = SealLog(args.seals) if args.seals is not None and args.mode != "naive" else None
    if seal_log is not None:
        seal_log.install()

    class Probe(faust.Sensor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            if tp.topic == topic:
                now = time.time()
                if stats.first_in is None:
                    stats.first_in = now
                stats.last_in = now
                stats.messages_in += 1

    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    if args.mode == "naive":
        app = naive_app(settings, topic, stats, args.target_samples)
    else:
        topics = SharedInputTopics(prefix=settings.topics.prefix, telemetry_topic=topic)
        settings = settings.model_copy(update={"topics": topics})
        if args.mode == "ingest":
            import agents.predict

            def no_predict(app: Any, settings: Settings) -> None:
                return None

            agents.predict.register_predict = no_predict  # build_app imports it at call time
        from agents.app import build_app

        assert settings.broker is not None
        options = json.loads(os.environ.get("PSO_BENCH_APP_OPTIONS") or "{}")
        app = build_app(settings, settings.broker, **options)
    app.sensors.add(Probe())

    def dump() -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: getattr(stats, k) for k in WorkerStats.__slots__}))
        os.replace(tmp, args.stats)

    def dumper() -> None:
        while True:
            dump()
            if seal_log is not None:
                seal_log.flush()
            time.sleep(0.2)

    if seal_log is not None:
        import atexit

        atexit.register(seal_log.flush)

    threading.Thread(target=dumper, daemon=True).start()
    if args.profile is not None:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU time: preemption is not cost

        def dump_profile(signum: int, frame: Any) -> None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))

        signal.signal(PROFILE_SIGNAL, dump_profile)  # sent by the bench before SIGTERM
        profiler.enable()
    # "info", as `pso worker` defaults to: at "warning" Faust's terminal spinner sets the root
    # logger to DEBUG, and every aiokafka debug() call then builds a LogRecord.
    worker = faust.Worker(app, loglevel="info", redirect_stdouts=False)
    worker.execute_from_commandline()
