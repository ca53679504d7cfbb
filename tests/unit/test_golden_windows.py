"""Golden test: a fixed telemetry file (out-of-order, late and invalid samples) gives exactly
the windows and dead letters in expected.jsonl, which was reviewed by eye:

- api 06:00 window: 3 samples (06:00:05, 06:00:30 and the out-of-order 06:00:50), cpu mean 0.7,
  last = 0.9 (latest event time, not latest arrival); closed by the 06:03:30 sample.
- 06:00:59 arrives after that window closed -> dead letter `late`.
- 06:01:59 is out of order but within lateness -> joins the api 06:01 window.
- NaN is not JSON -> `invalid_json`; in the worker batch, a negative resource and an empty
  subsystem are rejected by index while the good sample in the same batch is windowed.
- flush closes the remaining open windows in subsystem order.
"""

from pathlib import Path

import orjson

from app.settings import WindowConfig
from app.wire.codec import SourceRef
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

HERE = Path(__file__).resolve().parents[1] / "data" / "golden"


def run_golden() -> list[bytes]:
    ingest = TelemetryIngest(WindowConfig(size_s=60, allowed_lateness_windows=2))
    out: list[bytes] = []
    lines = (HERE / "telemetry.jsonl").read_bytes().splitlines()
    for i, line in enumerate(lines):
        result = ingest.process(line, SourceRef("golden", 0, i))
        for w in result.windows:
            out.append(orjson.dumps({"line": i + 1, **orjson.loads(encode(w))}))
        for d in result.dead:
            for r in d.rejects:
                out.append(
                    orjson.dumps(
                        {"line": i + 1, "dead": r.reason_code, "index": r.index, "reason": r.reason}
                    )
                )
    for w in ingest.flush():
        out.append(orjson.dumps({"line": "flush", **orjson.loads(encode(w))}))
    return out


def test_golden_windows_match_reviewed_file() -> None:
    expected = (HERE / "expected.jsonl").read_bytes().splitlines()
    assert run_golden() == expected


def test_every_sample_lands_once() -> None:
    expected = [orjson.loads(x) for x in (HERE / "expected.jsonl").read_bytes().splitlines()]
    windowed = sum(e["samples"] for e in expected if e.get("type") == "load_window")
    dead = sum(1 for e in expected if "dead" in e)
    # 15 samples in the file (lines, with batch elements counted one by one).
    assert windowed + dead == 15


# ------------------------------------------------- batched folds == one sample at a time

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from app.core.events import LoadWindow, ms_to_iso  # noqa: E402
from app.core.windows import SeriesAggregate, WindowedLoad, window_start  # noqa: E402


class OneByOne:
    """The reference: every sample folded into `SeriesAggregate.add` as it arrives."""

    def __init__(self, size_ms: int, lateness_ms: int) -> None:
        self.size_ms, self.lateness_ms = size_ms, lateness_ms
        self.max_ts: int | None = None
        self.closed_until: int | None = None
        self.open: dict[int, list] = {}  # start -> [samples, metrics aggs, resources aggs]

    def add(self, ts: int, metrics: dict, resources: dict) -> tuple[bool, list[LoadWindow]]:
        start = window_start(ts, self.size_ms)
        if self.closed_until is not None and start + self.size_ms <= self.closed_until:
            return False, []
        window = self.open.setdefault(start, [0, {}, {}])
        window[0] += 1
        for aggs, values in ((window[1], metrics), (window[2], resources)):
            for name, value in values.items():
                aggs.setdefault(name, SeriesAggregate()).add(value, ts)
        if self.max_ts is not None and ts <= self.max_ts:
            return True, []
        self.max_ts = ts
        watermark = ts - self.lateness_ms
        if self.closed_until is None or watermark > self.closed_until:
            self.closed_until = window_start(watermark, self.size_ms)
        ready = sorted(s for s in self.open if s + self.size_ms <= self.closed_until)
        return True, [self.close(s) for s in ready]

    def close(self, start: int) -> LoadWindow:
        samples, metrics, resources = self.open.pop(start)
        end = start + self.size_ms
        return LoadWindow(
            event_id=f"load:api:{start}",
            subsystem="api",
            window_start_ms=start,
            window_end_ms=end,
            window_start=ms_to_iso(start),
            window_end=ms_to_iso(end),
            samples=samples,
            metrics={k: metrics[k].result() for k in sorted(metrics)},
            resources={k: resources[k].result() for k in sorted(resources)},
        )

    def state(self) -> list:
        return [
            [s, n, {k: a.to_state() for k, a in m.items()}, {k: a.to_state() for k, a in r.items()}]
            for s, (n, m, r) in sorted(self.open.items())
        ]


values = st.sampled_from([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 2.5, 1e300, 1e-300, 0.1, 0.2, 0.3])
samples = st.lists(
    st.tuples(
        st.integers(-150, 400),  # seconds around a moving base: out of order, ties, late
        st.dictionaries(st.sampled_from(["cpu", "rps", "q"]), values, max_size=3),
        st.dictionaries(st.sampled_from(["db", "gpu"]), values.map(abs), max_size=2),
        st.booleans(),  # persist (to_state / from_state) after this sample
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(samples, st.integers(0, 3))
def test_windowing_equals_folding_one_sample_at_a_time(stream: list, lateness_windows: int) -> None:
    size = 60_000
    ref = OneByOne(size, lateness_windows * size)
    got = WindowedLoad("api", size, lateness_windows * size)
    base = 1_795_586_400_000
    for i, (offset, metrics, resources, persist) in enumerate(stream):
        ts = base + i * 1_500 + offset * 1_000
        accepted, closed = ref.add(ts, metrics, resources)
        outcome = got.add(ts, metrics, resources)
        assert outcome.accepted == accepted
        assert [encode(w) for w in outcome.closed] == [encode(w) for w in closed]
        if persist:
            state = got.to_state()
            opened = [[w["start"], w["n"], w["m"], w["r"]] for w in state["open"]]
            assert orjson.dumps(opened) == orjson.dumps(ref.state())
            got = WindowedLoad.from_state("api", orjson.loads(orjson.dumps(state)))
    flushed = got.flush()
    assert [encode(w) for w in flushed] == [encode(ref.close(s)) for s in sorted(ref.open)]
