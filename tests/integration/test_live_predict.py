"""Live == offline: the Faust topology publishes exactly the events the pure engine computes.

The simulator's telemetry for a fleet sharing tight resources is produced to a fresh
deployment while a worker runs; the same bytes go through `TelemetryIngest` and
`PredictionEngine` in-process. Every event the worker publishes (closed windows, forecasts,
anomalies, conflicts, plans, accuracy reports) must equal the offline one with the same id,
byte for byte, and none may be missing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import yaml

from tests.integration.conftest import (
    PsoEnv,
    assert_same_events,
    fleet_messages,
    offline,
    produce,
    read_outputs,
)

pytestmark = pytest.mark.integration

__all__ = ["fleet_messages", "produce"]  # used by other integration tests


def test_live_topology_equals_offline_engine(pso_env: PsoEnv, tmp_path: Path) -> None:
    sim, messages = fleet_messages()
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(yaml.safe_dump(policy))
    expected = offline(pso_env.config, messages)
    kinds = {orjson.loads(v)["type"] for v in expected.values()}
    assert {"forecast", "conflict_predicted", "rebalance_recommended"} <= kinds, kinds

    pso_env.start_worker()
    asyncio.run(produce(pso_env, messages))
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=120)
    )
    duplicates = assert_same_events(expected, records)
    assert duplicates == 0, "an uninterrupted exactly-once run publishes every event once"
