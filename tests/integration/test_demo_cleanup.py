"""`pso demo` killed by SIGKILL (no cleanup code runs) leaves no process behind.

A real ``pso demo`` starts its embedded Kafka broker (unless ``PSO_BROKER`` names one) and a
worker. Once the worker has joined its consumer group, the demo is SIGKILLed; every process
it had started, found by walking /proc before the kill, must be gone soon after (the broker
and the worker get SIGTERM from the kernel: `app.dev.parent_death`). The temp dirs the demo could
not delete (its own, its broker's) are deleted by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration.conftest import PsoEnv, group_members
from tests.procs import descendants, running, survivors

REPO = Path(__file__).resolve().parents[2]


def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The first match of ``pattern`` in the file ``path`` that ``proc`` writes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert proc.poll() is None, f"demo exited ({proc.returncode}): {path.read_text()}"
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in {timeout_s:.0f} s: {path.read_text()}")


async def wait_worker_joined(group: PsoEnv, timeout_s: float) -> None:
    """Until the demo's consumer group is stable with one member: its worker is up."""
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    seen: object = None
    while time.monotonic() < deadline:
        try:  # a fresh broker has no group coordinator for a moment
            state, members = await group_members(group)
        except KafkaError as exc:
            seen = exc
        else:
            seen = (state, members)
            if state == "Stable" and len(members) == 1:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the demo's worker did not join its group: {seen}")


def test_sigkilled_demo_leaves_no_process(tmp_path: Path) -> None:
    prefix = f"it-demo-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(
        {"PSO_APP_ID": prefix, "PSO_TOPICS__PREFIX": prefix, "PSO_TOPIC_POLICY__PARTITIONS": "2"}
    )
    env["COLUMNS"] = "1000"  # rich wraps at 80 columns off a terminal: keep paths on one line
    out = tmp_path / "demo.out"
    with out.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo", "--duration", "120", "--subsystems", "3"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    spawned = []
    leftovers: list[Path] = []  # temp dirs a killed demo cannot delete
    try:
        bootstrap = wait_for_line(out, r"broker (\S+) \(", demo, timeout_s=180)
        workdir = Path(wait_for_line(out, r"worker pid \d+ \(log (\S+)/worker\.log", demo, 60))
        leftovers.append(workdir)
        asyncio.run(wait_worker_joined(PsoEnv(bootstrap, prefix, tmp_path), timeout_s=120))

        spawned = descendants(demo.pid)
        for proc in spawned:  # the embedded broker's temp dir (its stop() would delete it)
            found = re.search(r"-Dlog4j2\.configurationFile=(\S+)/log4j2\.properties", proc.cmdline)
            if found:
                leftovers.append(Path(found.group(1)))
        commands = " | ".join(p.cmdline for p in spawned)
        assert "app.cli worker" in commands, commands
        if not os.environ.get("PSO_BROKER"):
            assert "kafka.Kafka" in commands or "tansu" in commands, commands

        os.kill(demo.pid, signal.SIGKILL)
        demo.wait(timeout=10)
        left = survivors(spawned, timeout_s=60)
        assert left == [], [f"{p.pid}: {p.cmdline[:120]}" for p in left]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
        for proc in spawned:  # whatever survived a failed run: do not leave it to the next test
            if running(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        survivors(spawned, timeout_s=10)
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
