"""A stage that stops, or fails half-way through a record, on the real broker.

PSO has no fault hooks: `tests.integration.fault_worker` patches a stage in the worker
process it starts. A stage that blocks with records waiting is reported by the stall watch
(``PSO_STALL_AFTER_S``); a stage whose send fails half-way through a record stops the worker
without committing the half-done record, so that a restart publishes all of it.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import (
    PsoEnv,
    assert_same_events,
    committed_offsets,
    fleet_messages,
    offline,
    produce,
    read_outputs,
)

pytestmark = pytest.mark.integration

FAULTY = "tests.integration.fault_worker"


def _configure(env: PsoEnv, tmp_path: Path, hours: float) -> tuple[list, dict[str, bytes]]:
    sim, messages = fleet_messages(hours)
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    env.config = tmp_path / "pso.yaml"
    env.config.write_text(yaml.safe_dump(policy))
    env.worker_env["PSO_JOIN_TIMEOUT_S"] = "3600"  # no wall-clock decision in the comparison
    return messages, offline(env.config, messages)


def _wait_for_line(env: PsoEnv, index: int, pattern: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = env.log_path(index).read_text(errors="replace")
        found = re.search(pattern, log)
        if found:
            return log[found.start() : log.find("\n", found.start())]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in: {env.log_path(index).read_text()[-3000:]}")


def test_a_stage_that_stops_with_records_waiting_is_reported(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    messages, _ = _configure(pso_env, tmp_path, hours=1)
    pso_env.worker_env.update({"PSO_STALL_AFTER_S": "3", "PSO_TEST_FAULT": "block"})
    pso_env.start_worker(module=FAULTY)
    asyncio.run(produce(pso_env, messages))
    prefix = pso_env.prefix
    line = _wait_for_line(pso_env, 0, rf"ERROR.*stage {prefix}-predict-resources stalled")
    # It names the partitions and their offsets: records wait (taken, not done), none committed.
    shares = re.escape(f"{prefix}-resource-shares")
    assert re.search(
        rf"{shares}\[\d\] position=\d+ high-water=\d+ committed=None taken=\d+ done=None", line
    ), line
    # Ingest and stage 1 finished everything they were given: not reported.
    time.sleep(2)
    log = pso_env.log_path(0).read_text(errors="replace")
    assert not re.search(rf"stage {prefix}-(ingest|predict-subsystems) stalled", log), log[-3000:]


def test_a_send_failing_mid_record_stops_the_worker_and_a_restart_publishes_it_all(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    messages, expected = _configure(pso_env, tmp_path, hours=1.5)
    pso_env.worker_env["PSO_TEST_FAULT"] = "fail-plan"
    first = pso_env.start_worker(module=FAULTY)
    asyncio.run(produce(pso_env, messages))
    line = _wait_for_line(pso_env, 0, r"CRITICAL.*stage 2 failed on")
    assert "injected: a rebalance plan not sent" in line and "nothing more committed" in line
    first.wait(timeout=60)  # it stops by itself
    where = re.search(r"failed on (\S+)\[(\d+)\]@(\d+)", line)
    assert where is not None and where[1] == f"{pso_env.prefix}-resource-shares", line
    committed = {
        (tp.topic, tp.partition): offset
        for tp, offset in asyncio.run(committed_offsets(pso_env)).items()
    }
    # The half-done record was not committed (its conflict is in an aborted transaction).
    assert committed.get((where[1], int(where[2])), 0) <= int(where[3]), (committed, line)

    del pso_env.worker_env["PSO_TEST_FAULT"]
    pso_env.start_worker()
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=90)
    )
    assert_same_events(expected, records)


def test_ingest_failing_mid_message_stops_the_worker_and_a_restart_windows_it_once(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    """The third load window fails to send: its message is half done (its windows closed in
    memory, maybe some sent). Dead-lettering it as an internal error (what ingest did) would
    commit it with windows missing; the worker stops instead, and a restart publishes every
    window once."""
    messages, expected = _configure(pso_env, tmp_path, hours=1)
    pso_env.worker_env["PSO_TEST_FAULT"] = "fail-window"
    first = pso_env.start_worker(module=FAULTY)
    asyncio.run(produce(pso_env, messages))
    line = _wait_for_line(pso_env, 0, r"CRITICAL.*ingest failed on")
    assert "injected: a load window not sent" in line and "nothing more committed" in line
    first.wait(timeout=60)  # it stops by itself
    del pso_env.worker_env["PSO_TEST_FAULT"]
    pso_env.start_worker()
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=90)
    )
    assert_same_events(expected, records)
    windows = [event_id for event_id, _ in records if event_id.startswith("load:")]
    assert len(windows) == len(set(windows)), "a window published twice"
