"""Event-time skew: one sample far ahead of a subsystem's time cannot make its correct samples
late (the denial of service found from outside: one sample stamped 2099-12-31 moved the
watermark there, and every later sample of that subsystem was dead-lettered as late)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.ingest import IngestResult
from app.core.windows import MAX_HELD, WindowedLoad
from app.settings import WindowConfig
from app.wire.codec import SourceRef
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

BASE = 1_795_586_400_000  # 2026-11-25T06:00:00Z
Y2099 = 4_102_358_400_000  # 2099-12-31T00:00:00Z
CONFIG = WindowConfig(size_s=60, allowed_lateness_windows=1, max_time_jump_s=3600)


def sample(ts: int, x: float = 1.0, name: str = "api") -> bytes:
    return orjson.dumps({"subsystem": name, "ts": ts, "metrics": {"x": x}})


def run(stamps: list[int], config: WindowConfig = CONFIG) -> tuple[IngestResult, TelemetryIngest]:
    ingest = TelemetryIngest(config)
    out = IngestResult()
    for offset, ts in enumerate(stamps):
        ingest.process(sample(ts), SourceRef("t", 0, offset), out)
    return out, ingest


def rejects(result: IngestResult) -> list[tuple[str, int | None, int | None]]:
    """(reason, offset of the message that carried it, event time) of every reject."""
    return [(r.reason_code, d.source_offset, r.ts_ms) for d in result.dead for r in d.rejects]


def test_one_sample_in_2099_is_dead_lettered_and_the_stream_goes_on() -> None:
    normal = [BASE + i * 10_000 for i in range(30)]
    stamps = [*normal[:10], Y2099, *normal[10:]]
    result, ingest = run(stamps)
    assert rejects(result) == [("time_jump", 10, Y2099)]  # refuted by the next 3 samples
    assert "2099-12-31T00:00:00.000Z" in result.dead[0].rejects[0].reason
    # no correct sample is late: all 30 end in windows
    end = IngestResult()
    assert sum(w.samples for w in result.windows + ingest.flush(into=end)) == 30
    assert not end.dead


def test_without_the_rule_the_same_stream_loses_every_later_sample() -> None:
    """The finding itself, reproduced with the rule switched off."""
    normal = [BASE + i * 10_000 for i in range(30)]
    result, _ = run(
        [*normal[:10], Y2099, *normal[10:]], CONFIG.model_copy(update={"max_time_jump_s": 0})
    )
    assert [r[0] for r in rejects(result)] == ["late"] * 20


def test_a_bad_first_sample_does_not_set_a_new_subsystems_clock() -> None:
    stamps = [Y2099, *(BASE + i * 10_000 for i in range(30))]
    result, ingest = run(stamps)
    assert rejects(result) == [("time_jump", 0, Y2099)]
    end = IngestResult()
    assert sum(w.samples for w in result.windows + ingest.flush(into=end)) == 30
    assert not end.dead


def test_a_jump_the_next_samples_follow_is_taken_and_nothing_is_lost() -> None:
    """A subsystem back after two hours, and one that reports every two hours: delayed by
    two samples, never rejected."""
    gap = [BASE + i * 10_000 for i in range(10)] + [
        BASE + 7_200_000 + i * 10_000 for i in range(10)
    ]
    sparse = [BASE + i * 7_200_000 for i in range(12)]
    for stamps in (gap, sparse):
        result, ingest = run(stamps)
        assert not result.dead
        flushed = ingest.flush()
        assert sum(w.samples for w in result.windows + flushed) == len(stamps)


def test_held_samples_are_applied_at_the_end_of_a_finite_input() -> None:
    result, ingest = run([BASE, BASE + 10_000])  # a new subsystem's first two: still held
    assert result.held == 2 and not result.windows and not result.dead
    end = IngestResult()
    flushed = ingest.flush(into=end)
    assert sum(w.samples for w in flushed) == 2 and not end.dead


def test_held_samples_are_bounded_per_subsystem() -> None:
    stamps = [BASE + i * 10_000 for i in range(5)]
    # Far-apart future stamps, each its own unconfirmed jump, never refuted (nothing normal).
    stamps += [Y2099 - i * 40 * 86_400_000 for i in range(MAX_HELD + 5)]
    result, ingest = run(stamps)
    state = ingest.windows["api"]
    assert sum(len(j.samples) for j in state.jumps) <= MAX_HELD
    codes = [r[0] for r in rejects(result)]
    assert codes.count("time_jump") >= 5  # the ones beyond the bound, at once


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([0, 0, 0, 0, 1, 2]).flatmap(
            lambda k: st.integers(0, 50).map(lambda i: BASE + i * 20_000 + k * 40 * 3_600_000)
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 40),
)
def test_every_sample_ends_in_one_place_and_a_restored_state_goes_on_alike(
    stamps: list[int], cut: int
) -> None:
    """Whatever the jumps: windowed + dead-lettered == sent once the input ends, and a state
    persisted mid-stream (`to_state`/`from_state`, as a checkpoint would) decides the same."""
    whole, ingest = run(stamps)
    end = IngestResult()
    flushed = ingest.flush(into=end)
    windowed = sum(w.samples for w in whole.windows + flushed)
    rejected = sum(d.rejected for d in whole.dead + end.dead)
    assert windowed + rejected == len(stamps)

    cut = min(cut, len(stamps))
    first = TelemetryIngest(CONFIG)
    out = IngestResult()
    for offset, ts in enumerate(stamps[:cut]):
        first.process(sample(ts), SourceRef("t", 0, offset), out)
    restored = TelemetryIngest(
        CONFIG,
        {
            name: WindowedLoad.from_state(name, orjson.loads(orjson.dumps(w.to_state())))
            for name, w in first.windows.items()
        },
    )
    for offset, ts in enumerate(stamps[cut:], start=cut):
        restored.process(sample(ts), SourceRef("t", 0, offset), out)
    assert [encode(w) for w in out.windows] == [encode(w) for w in whole.windows]
    assert [encode(d) for d in out.dead] == [encode(d) for d in whole.dead]
