"""Live topology throughput, latency and memory on a real broker. Prints one JSON object.

All figures come from ONE run on one broker (an embedded Apache Kafka started here via
`app.dev.broker.EmbeddedKafka`, or ``PSO_BROKER``) and one pre-filled telemetry topic. The JSON
names what each figure is (``definitions``); this docstring is the long form.

Scenario: ``--subsystems`` (100) simulated services (`FleetSimulator`, from 10:00 UTC, the busy
part of the day) × exactly 5 series (the simulator's 3-5 are padded with derived metrics,
``in_flight`` = rps × latency and ``mem_mb``), one sample per second of event time for
``--minutes`` (40), 60 s windows, ``--partitions`` (4). Capacities sit at 0.7 × the weekly
expected peak, so conflicts are predicted. The topic is filled, before anything is timed, with
the bytes `app.kafka.client.TelemetryProducer` builds: validated samples, batch envelopes (a JSON
array) of ``--batch`` (60) consecutive samples of one subsystem per message — each subsystem
flushes once a minute — keyed by subsystem, stamped with the newest sample's event time. The
bytes are captured from the client and sent with one aiokafka producer.

Checkpoints are part of every measured worker phase: a worker seals each subsystem's open
windows (ingest), each subsystem's predictor (stage 1) and each resource's (stage 2) every
``PSO_CHECKPOINT_EVERY`` (30) closed windows, so each phase runs more than 30 windows of event
time per key: 40 minutes close 37 windows per subsystem in the catch-up phases, the paced phase
closes another 120, and the memory phase 33. Every worker phase reports the keys it sealed per
table (``checkpoints.keys_sealed``; ``every_key_sealed`` says whether each subsystem and resource
was sealed at least once inside the phase).

Rates, in samples per second while catching up on that topic:

- ``ceiling_eps``: raw aiokafka (no group, partitions assigned) ``getmany`` + ``orjson.loads``
  of every message, in this process, from just after the consumer starts to the last record
  decoded; median of ``--ceiling-runs`` (3). No validation: the least work any consumer of this
  topic must do.
- ``validation_us_per_sample``: what PSO's own ingest parse and validation path costs per sample
  on the same messages, in this process, without windowing: `TelemetryIngest.parse` (size check,
  ``orjson.loads``, the envelope checks of `app.wire.codec.parse_envelope`, and for a batch of one
  subsystem's plainly valid samples — every message here — `app.wire.codec.batch_columns`, which
  type-, range- and name-checks the batch a column at a time), plus, for a message parse leaves
  as elements, `app.wire.codec.fast_fields` (and pydantic where it declines) per element, as
  `TelemetryIngest.apply` runs them. Median of 5 passes over the catch-up messages, wall time
  (``validation`` also gives ``orjson.loads`` alone on the same bytes).
- ``naive_faust_eps``: the peer, a minimal Faust app defined here (memory store, Faust's
  defaults, so at-least-once): one agent decodes each message with the reference codec
  (`app.wire.codec.decode_message`, pydantic per sample), then per sample reads and rewrites its
  subsystem's entry in a tumbling 60 s windowed table (windowed by the sample's event time).
  From its first telemetry message in (a Faust sensor) to its ``--naive-samples``-th (40,000)
  sample: a prefix, because the rate is flat and the whole topic would take minutes.
- ``pso_ingest_eps``: PSO's worker (`agents.app.build_app` under `faust.Worker`, as ``pso
  worker`` runs it) with only the ingest agent registered, from its first telemetry message in
  until the last expected `LoadWindow` is readable on its ``pso.load`` (read_committed).
- ``pso_eps``: the full worker (ingest, stage 1, stage 2), from its first message in until every
  expected window and output event (forecasts, anomalies, conflicts, plans, accuracy reports)
  is readable (read_committed). The expected ids come from the same bytes run through the pure
  core in this process (`TelemetryIngest` + `PredictionEngine`; live == offline is an
  integration test); that run's speed is ``core_inprocess_eps``. The stage-2 join timeout is
  raised so no wall-clock decision adds events while catching up.

Each run has its own app id (group, changelogs) and output topics, and reads the one telemetry
topic (the worker subprocess swaps in `SharedInputTopics`). Every run also reports CPU used by
the worker and by the broker per sample, which stays comparable when other processes share the
2 cores (their 1-minute load average as each phase starts is in ``loadavg_at_phase_start``),
and, on the embedded broker, the MB each run wrote per topic. A worker phase that stops making
progress (nothing new on its outputs for 60 s while it uses under 10 % of a core, expected
output still missing) ends early with ``stalled_at_s``; ``worker_log`` counts agent crashes
and ERROR lines in the worker's log and gives the first crash's reason.

``latency_ms`` ({p50, p99, max}): after catching up, the same full worker gets the simulator's
next ``--paced-minutes`` (120) at ``--paced-rate`` (10,000) samples per wall second: event time
runs at rate / subsystems (100) event seconds per wall second, and a message is sent when the
wall clock reaches its event time (its newest sample's) on that scale. Every subsystem flushes
at the same instant, so 100 messages (6,000 samples) go out at once every 0.6 s and windows close
in bursts of 100 (a worst case); the JSON gives the rate reached, how late the sender was,
and the CPU share the worker and the broker had meanwhile (whether the worker got what it needed).
A message is *produced* when this process hands it to its aiokafka producer (``time.time()``
just before ``send``). An event is *readable* when a read_committed consumer here receives it
(its fetches wait at most 50 ms). The message that *causes* an event is the first message,
in produce order, after which the pure core run on the same bytes in the same order emits that
event (`Offline.run` records it): for a forecast or a saturation warning, the message of its
subsystem whose newest sample moved the watermark (max event time − 2 windows of lateness)
past the end of the window; for a conflict on resource R, of those messages for R's
contributors' windows, the last one produced (R's window is judged when its last contributor
reports it). The worker cannot emit an event before its cause exists, so every latency is
>= 0 (``negative`` counts any that are not: it would mean the definition is wrong). Latency =
readable − produced, over every forecast and conflict-topic event (conflicts and saturation
warnings) of the paced phase. ``latency.stages`` splits it at the window: produce -> its
`LoadWindow` appended to ``pso.load`` (stamped by a read_uncommitted consumer here), and window
appended -> event readable (the figure this bench reported before, which left ingest and its
commit out).

``checkpoint_seal_ms`` ({p50, max}): how long a burst of checkpoint seals takes, in the paced
phase. The worker subprocess wraps `agents.checkpoints.CheckpointedStates._checkpoint` (bench
code only: `SealLog`): each call's table, key, sealed bytes, time in pickle + HMAC, wall time
from entry to return (the seal, and the table write that hands the bytes to the changelog
producer, which can wait for the producer to drain earlier batches), and the error if it
raised. A birth record (a few bytes for a new key) is logged but is not a seal. One agent
writes each table, one key after another; a *burst* is a run of one table's seals each
starting within ``SEAL_BURST_GAP_S`` (0.25 s) of the previous one's end, and its duration is
the time its agent spent inside `_checkpoint` over the run: what the seals hold that agent up
by (``burst_span_ms``, first entry -> last return, also counts the agent's other work between
seals: the ingest agent seals one key per message). ``checkpoints`` per phase lists every
burst and every failed checkpoint; ``latency`` splits the paced latencies by whether an
event's produce -> readable interval overlaps a burst's span, and lists the worst ones with
where they fell relative to the nearest burst. The commit that ships a burst's bytes to the
broker comes after it and shows only in those latencies.

``rss_mb_2000_subsystems``: the full worker's VmRSS (`worker_rss`), settled (read once its
heap-trim timer ran after the last checkpoint burst, `app.ops.heap`; ``rss_mb``: at catch-up),
once it has caught up on a fleet of ``--rss-subsystems`` (2,000) × 5 series, one sample a minute
for ``--rss-minutes`` (36: 33 closed windows each, so every subsystem and resource has sealed
its first checkpoint of state, not only its birth), every expected window and event readable;
reported only if nothing is missing. Beside it, ``rss.same_code_in_process``: a fresh
interpreter runs the same code as the worker's agents (`TelemetryIngest.process` on the client's
bytes, every closed window through `PredictionEngine`) on the same fleet and holds what a
worker's memory-store tables hold (window state, a token per predictor: checkpoints are sealed,
sent to the changelog and dropped, `agents.checkpoints`; their size is reported), so the
difference is Faust's own share.

``--profile DIR`` writes a CPU-time cProfile of each worker (``DIR/<mode>.prof``);
``--app-option KEY=VALUE`` passes a `build_app` override to the PSO workers, to try a fix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The parts, one module per concept, are in bench/live/ (its __init__ lists them).
from live.memory import rss_main
from live.run import bench
from live.worker_side import worker_main

from app.settings import load_settings


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_rss":
        rss_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subsystems", type=int, default=100)
    parser.add_argument(
        "--minutes",
        type=float,
        default=40.0,
        help="event time to catch up on (> 33 for a checkpoint of every key inside)",
    )
    parser.add_argument("--batch", type=int, default=60, help="samples per message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--ceiling-runs", type=int, default=3)
    parser.add_argument("--naive-samples", type=int, default=40_000)
    parser.add_argument(
        "--paced-minutes",
        type=float,
        default=120.0,
        help="event time of the paced phase (checkpoints every 30 windows: 4 bursts)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=10_000.0,
        help="samples per wall second in the paced phase",
    )
    parser.add_argument("--rss-subsystems", type=int, default=2000, help="0 skips it")
    parser.add_argument(
        "--rss-minutes",
        type=int,
        default=36,
        help="one sample a minute per subsystem (36: 33 closed windows, a checkpoint each)",
    )
    parser.add_argument(
        "--guarantee",
        choices=["exactly_once", "at_least_once"],
        default=None,
        help="default: exactly_once when the broker has transactions",
    )
    parser.add_argument(
        "--app-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra build_app option for the PSO workers (to try a fix), e.g. "
        "broker_commit_interval=0.2; reported in the output",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="per phase, seconds")
    parser.add_argument(
        "--profile", type=Path, default=None, help="write cProfile stats of the PSO workers here"
    )
    args = parser.parse_args()

    from app.dev.broker import EmbeddedKafka, ExternalBroker

    started = time.perf_counter()
    external = os.environ.get("PSO_BROKER")
    broker: Any = (
        ExternalBroker(external)
        if external
        else EmbeddedKafka.from_settings(load_settings(), heap_mb=512)
    )
    with tempfile.TemporaryDirectory(prefix="pso-live-bench-") as tmp, broker:
        result = asyncio.run(bench(args, broker, Path(tmp)))
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
