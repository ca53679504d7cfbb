"""The ingest worker on the real broker: golden windows live, dead letters, kcat, CLI."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from app.wire.schemas import SCHEMA_DIR
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


async def produce_lines(
    env: PsoEnv, lines: list[bytes], key: bytes | None = None
) -> dict[tuple[int, int], bytes]:
    """Produce ``lines`` (keyed by their first subsystem unless ``key``); return what was
    written where: (partition, offset) -> line."""
    from app.kafka.connection import start_producer

    written: dict[tuple[int, int], bytes] = {}
    producer = await start_producer(env.settings, env.bootstrap)
    try:
        for line in lines:
            k = key
            if k is None:
                try:
                    doc = orjson.loads(line)
                    first = doc[0] if isinstance(doc, list) else doc
                    k = str(first.get("subsystem", "")).encode() or None
                except (orjson.JSONDecodeError, AttributeError, IndexError):
                    k = b"garbage"
            meta = await producer.send_and_wait(env.settings.topics.telemetry, line, key=k)
            written[(meta.partition, meta.offset)] = line
    finally:
        await producer.stop()
    return written


def test_golden_file_through_broker_and_worker(pso_env: PsoEnv) -> None:
    """Live windows equal the pure golden run's (minus the final flush, which live never does)."""
    expected = [orjson.loads(x) for x in (GOLDEN / "expected.jsonl").read_bytes().splitlines()]
    expected_windows = sorted(
        (e["event_id"], {k: v for k, v in e.items() if k != "line"})
        for e in expected
        if e.get("type") == "load_window" and e["line"] != "flush"
    )
    expected_dead = sorted((e["dead"], e["index"], e["reason"]) for e in expected if "dead" in e)
    pso_env.start_worker()
    lines = (GOLDEN / "telemetry.jsonl").read_bytes().splitlines()
    written = asyncio.run(produce_lines(pso_env, lines))
    s = pso_env.settings
    windows = asyncio.run(
        read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: len(r) >= len(expected_windows))
    )

    def rejected(records: list) -> int:
        return sum(orjson.loads(r.value)["rejected"] for r in records)

    dead = asyncio.run(
        read_topic(
            s, pso_env.bootstrap, s.topics.deadletter, lambda r: rejected(r) >= len(expected_dead)
        )
    )
    got_windows = sorted((d["event_id"], d) for d in (orjson.loads(r.value) for r in windows))
    assert got_windows == expected_windows
    for rec in windows:
        assert rec.key == orjson.loads(rec.value)["subsystem"].encode()
        assert rec.timestamp == orjson.loads(rec.value)["window_end_ms"]
    got_dead = sorted(
        (r["reason_code"], r["index"], r["reason"])
        for d in (orjson.loads(rec.value) for rec in dead)
        for r in d["rejects"]
    )
    assert got_dead == expected_dead
    for rec in dead:
        doc = orjson.loads(rec.value)
        assert doc["source_topic"] == s.topics.telemetry
        # the very message at that position, key included
        original = written[(doc["source_partition"], doc["source_offset"])]
        assert base64.b64decode(doc["original_b64"]) == original
        assert rec.key == base64.b64decode(doc["key_b64"])


def test_kcat_reads_load_windows_as_plain_json(pso_env: PsoEnv) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is missing: `make setup` installs the Debian package"
    pso_env.start_worker()
    samples = [
        {"subsystem": "kc", "ts": 1795586400000 + i * 20_000, "metrics": {"cpu": i / 10}}
        for i in range(20)
    ]
    asyncio.run(produce_lines(pso_env, [orjson.dumps(samples)]))
    s = pso_env.settings
    asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: len(r) >= 4))
    out = subprocess.run(
        [kcat, "-C", "-b", pso_env.bootstrap, "-t", s.topics.load, "-e", "-q"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    schema = orjson.loads((SCHEMA_DIR / "load_window.v1.json").read_bytes())
    docs = [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(docs) >= 4
    for doc in docs:
        jsonschema.validate(doc, schema)
        assert "__faust" not in doc


def test_cli_topics_create_is_idempotent_and_produce_tail_work(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    env = pso_env.env
    first = subprocess.run(
        [sys.executable, "-m", "app.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    topics = pso_env.settings.topics.all()
    assert len(topics) >= 10  # telemetry .. capacity, labels
    for topic in topics:  # the fixture created them already
        assert f"exists   {topic}\n" in first.stderr, first.stderr
    data = tmp_path / "t.jsonl"
    data.write_text(
        '{"subsystem": "cli", "ts": "2026-11-25T06:00:00Z", "metrics": {"cpu": 0.5}}\n'
        "not json\n"
        '[{"subsystem": "cli", "ts": "2026-11-25T06:00:10Z", "metrics": {"cpu": 0.7}}]\n'
    )
    prod = subprocess.run(
        [sys.executable, "-m", "app.cli", "produce", str(data), "--batch", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert prod.returncode == 0, prod.stderr
    assert "line 2" in prod.stderr and "sent 2 samples" in prod.stderr
    tail = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "tail",
            f"{pso_env.prefix}.telemetry",
            "--json",
            "--max",
            "2",
            "--idle-timeout",
            "20",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tail.returncode == 0, tail.stderr
    docs = [orjson.loads(x) for x in tail.stdout.splitlines()]
    assert [d["metrics"]["cpu"] for d in docs] == [0.5, 0.7]
