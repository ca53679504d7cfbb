"""A worker subprocess seen from the bench: start it, watch its progress, stop it.

Owns `Worker` (``bench/live_throughput.py`` in its ``_worker`` mode, with the environment that
makes it a deployment of its own, its stats file, log and seal log) and `measure`, the loop
every worker phase runs: poll until the phase's ``done()``, keep CPU shares of the worker and
the broker from its first message in, an optional progress timeline, and the stall watch that
gives up on a worker whose outputs stopped growing while it sat idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from app.dev.demo import stop_process
from app.settings import Settings

from .procstat import cpu_seconds, proc_memory
from .worker_side import PROFILE_SIGNAL

#: the script the worker and memory subprocesses run (its ``_worker`` and ``_rss`` modes)
ENTRY = Path(__file__).resolve().parents[1] / "live_throughput.py"


class Worker:
    """A worker subprocess (``bench/live_throughput.py`` in ``_worker`` mode) with its stats
    file and log."""

    def __init__(
        self,
        mode: str,
        settings: Settings,
        telemetry: str,
        tmp: Path,
        guarantee: str,
        profile: Path | None,
        target_samples: int = 0,
        app_options: dict[str, Any] | None = None,
    ) -> None:
        self.mode = mode
        self.stats_path = tmp / f"{settings.app_id}.stats.json"
        self.log_path = tmp / f"{settings.app_id}.log"
        self.seals_path = tmp / f"{settings.app_id}.seals.jsonl"
        env = dict(os.environ)
        env.update(
            {
                "PSO_BROKER": settings.broker or "",
                "PSO_APP_ID": settings.app_id,
                "PSO_TOPICS__PREFIX": settings.topics.prefix,
                "PSO_TOPIC_POLICY__PARTITIONS": str(settings.topic_policy.partitions),
                "PSO_DATA_DIR": str(tmp / "data"),
                "PSO_CONFIG": str(settings.config),
                "PSO_PROCESSING_GUARANTEE": guarantee,
                # No wall-clock liveness decision while catching up (it would add events).
                "PSO_JOIN_TIMEOUT_S": "86400",
                "PSO_BENCH_APP_OPTIONS": json.dumps(app_options or {}),
            }
        )
        cmd = [
            sys.executable,
            str(ENTRY),
            "_worker",
            "--mode",
            mode,
            "--telemetry-topic",
            telemetry,
            "--stats",
            str(self.stats_path),
            "--target-samples",
            str(target_samples),
            "--seals",
            str(self.seals_path),
        ]
        self.profile = None if profile is None else profile / f"{mode}.prof"
        if self.profile is not None:
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            self.profile.unlink(missing_ok=True)
            cmd += ["--profile", str(self.profile)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.mode} worker exited with {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )

    def stats(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def rss(self) -> dict[str, float]:
        return proc_memory(self.proc.pid)

    def problems(self) -> dict[str, Any]:
        """Agent crashes (Faust restarts the agent) and ERROR/CRITICAL lines in its log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        crashes = [line for line in lines if "Crashed reason=" in line]
        errors = [line for line in lines if "] [ERROR] " in line or "] [CRITICAL] " in line]
        return {
            "agent_crashes": len(crashes),
            "first_crash": crashes[0].split("]: ", 1)[-1][:300] if crashes else None,
            "error_lines": len(errors),
            "first_error": errors[0][:300] if errors else None,
        }

    def seals(self) -> list[dict[str, Any]]:
        """The checkpoints it wrote so far (`SealLog`; up to 0.2 s behind while it runs)."""
        try:
            lines = self.seals_path.read_bytes().splitlines()
        except OSError:
            return []
        return [orjson.loads(line) for line in lines if line]

    async def wait_idle(
        self, quiet: float = 0.05, span_s: float = 1.0, timeout_s: float = 60.0
    ) -> None:
        """Until the worker uses under ``quiet`` of a core over ``span_s``."""
        deadline = time.monotonic() + timeout_s
        before = cpu_seconds(self.proc.pid) or 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(span_s)
            self.check()
            now = cpu_seconds(self.proc.pid) or 0.0
            if now - before < quiet * span_s:
                return
            before = now

    def stop(self) -> None:
        if self.profile is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, PROFILE_SIGNAL)
            deadline = time.monotonic() + 10
            while not self.profile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        stop_process(self.proc)


async def measure(
    worker: Worker,
    done: Any,
    timeout_s: float,
    broker_pid: int | None,
    progress: Any = None,
    every_s: float = 10.0,
    output: Any = None,
    stall_s: float = 60.0,
) -> dict[str, Any]:
    """Poll until ``done()``; CPU used by the worker and the broker from its first message in.

    CPU shares tell a reader whether a rate was bound by the worker's own core (share near 1)
    or by waiting (commits, the broker, other processes on the 2 cores). With ``progress``,
    every ``every_s``: [seconds since the first message in, worker and broker CPU share over
    the interval, progress()]. A worker that is not done yet, whose ``output()`` (a count of
    records read from its outputs) has not grown for ``stall_s`` while it used under 10 % of a
    core (an idle worker's timers take ~4 %), is given up on (``stalled_at_s``) instead of
    waited for until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    start: tuple[float | None, float | None, float] | None = None
    mark: tuple[float | None, float | None, float] | None = None
    idle_mark: tuple[float | None, float | None, float] | None = None
    idle_output = -1
    timeline: list[Any] = []
    ok = stalled = False

    def shares(a: tuple[Any, Any, float], b: tuple[Any, Any, float]) -> list[float | None]:
        wall = max(1e-9, b[2] - a[2])
        return [
            round((b[i] - a[i]) / wall, 2) if a[i] is not None and b[i] is not None else None
            for i in (0, 1)
        ]

    def now() -> tuple[float | None, float | None, float]:
        return (cpu_seconds(worker.proc.pid), cpu_seconds(broker_pid), time.time())

    while time.monotonic() < deadline:
        worker.check()
        if start is None and worker.stats().get("first_in"):
            start = mark = now()
        if done():
            ok = True
            break
        if start is not None:
            current = now()
            if idle_mark is None or current[2] - idle_mark[2] >= stall_s:
                count = output() if output is not None else -1
                if idle_mark is not None and current[0] is not None and idle_mark[0] is not None:
                    idle = current[0] - idle_mark[0] < 0.1 * (current[2] - idle_mark[2])
                    stalled = idle and count == idle_output
                    if stalled:
                        break
                idle_mark, idle_output = current, count
        if progress is not None and start is not None and mark is not None:
            current = now()
            if current[2] - mark[2] >= every_s:
                timeline.append(
                    [round(current[2] - start[2], 1), *shares(mark, current), progress()]
                )
                mark = current
        await asyncio.sleep(0.05)
    end = now()
    out: dict[str, Any] = {"ok": ok, "stats": worker.stats()}
    if stalled:
        out["stalled_at_s"] = round(end[2] - start[2], 1) if start is not None else None
    if start is not None:
        out["worker_cpu_share"], out["broker_cpu_share"] = shares(start, end)
        for i, name in ((0, "worker_cpu_s"), (1, "broker_cpu_s")):
            a, b = start[i], end[i]
            out[name] = (b - a) if a is not None and b is not None else None
    if progress is not None:
        out["timeline"] = timeline
    return out
