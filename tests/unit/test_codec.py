"""Decoding never raises: every byte string becomes samples or dead letters with a reason."""

import base64
import math

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.wire.codec import SourceRef, decode_message
from app.wire.records import encode

SRC = SourceRef("pso.telemetry", 3, 42, b"api")
GOOD = {"subsystem": "api", "ts": "2026-11-25T06:00:00Z", "metrics": {"cpu": 0.5}}


def test_single_sample_decodes() -> None:
    out = decode_message(orjson.dumps(GOOD), SRC)
    assert out.items == 1 and not out.dead
    ((index, sample),) = out.samples
    assert index is None and sample.subsystem == "api" and sample.ts == 1795586400000


def test_epoch_ms_and_offsets_are_accepted() -> None:
    doc = dict(GOOD, ts="2026-11-25T07:00:00+01:00")
    assert decode_message(orjson.dumps(doc), SRC).samples[0][1].ts == 1795586400000
    doc = dict(GOOD, ts=1795586400000)
    assert decode_message(orjson.dumps(doc), SRC).samples[0][1].ts == 1795586400000


def test_batch_mixing_good_and_bad_keeps_the_good() -> None:
    batch = [GOOD, dict(GOOD, resources={"db": -1}), 7, dict(GOOD, subsystem="")]
    out = decode_message(orjson.dumps(batch), SRC)
    assert out.items == 4
    assert [i for i, _ in out.samples] == [0]
    (dead,) = out.dead  # one record for the message, however many samples it rejects
    reasons = {r.index: r.reason for r in dead.rejects}
    assert reasons[1] == "resources.db: Input should be greater than or equal to 0"
    assert reasons[2] == "sample must be a JSON object, got int"
    assert reasons[3].startswith("subsystem: String should have at least 1 character")
    assert (dead.rejected, dead.rejected_by_reason) == (3, {"invalid_sample": 3})
    assert (dead.reason_code, dead.reason) == ("invalid_sample", reasons[1])
    assert base64.b64decode(dead.original_b64 or "") == orjson.dumps(batch)
    assert dead.original_bytes == len(orjson.dumps(batch))
    assert dead.source_topic == "pso.telemetry" and dead.source_offset == 42
    assert base64.b64decode(dead.key_b64 or "") == b"api"


def test_a_message_of_many_bad_samples_makes_one_bounded_dead_letter() -> None:
    """The amplification found from outside: 10,000 rejects of a 90 KB message were 10,000
    records carrying it each (1.15 GB). Now one record, at most ~2x the message."""
    from app.core.events import MAX_REJECTS_LISTED
    from app.wire.codec import dead_letter_bytes

    raw = orjson.dumps([{"ts": 1}] * 10_000)
    out = decode_message(raw, SRC)
    (dead,) = out.dead
    assert dead.rejected == 10_000 and dead.rejected_by_reason == {"invalid_sample": 10_000}
    assert len(dead.rejects) == MAX_REJECTS_LISTED
    assert [r.index for r in dead.rejects] == list(range(MAX_REJECTS_LISTED))
    assert len(encode(dead)) <= 2 * len(raw) + 64 * 1024
    assert len(encode(dead)) <= dead_letter_bytes(len(raw))


def test_a_dead_letter_too_large_for_its_topic_keeps_the_length_and_hash() -> None:
    import hashlib

    from app.wire.codec import Rejections, fit

    raw = b"[" + b" " * 5000 + b"]"
    rejections = Rejections(SRC, raw)
    rejections.add("empty_batch", "batch envelope is an empty array")
    full = rejections.record()
    assert fit(full, len(encode(full))) is full
    trimmed = fit(full, len(encode(full)) - 1)
    assert full.original_b64 is not None and trimmed.original_b64 is None
    assert trimmed.original_bytes == len(raw)
    assert trimmed.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(encode(trimmed)) < 2000


def test_precise_reasons() -> None:
    cases = {
        b"{": "invalid_json",
        b"": "invalid_json",
        b"[]": "empty_batch",
        b'{"subsystem": "a", "ts": NaN}': "invalid_json",
        b'{"subsystem": "a", "ts": 1700000000}': "invalid_sample",
        b'{"subsystem": "a", "ts": "yesterday"}': "invalid_sample",
        b'{"subsystem": "a", "ts": "2026-11-25T06:00:00"}': "invalid_sample",
        b'{"subsystem": "a", "ts": 1795586400000, "metrics": {"cpu": "high"}}': "invalid_sample",
        b'{"subsystem": "a", "ts": 1795586400000, "extra": 1}': "invalid_sample",
        b'{"subsystem": "a", "ts": 1795586400000, "metrics": {"cpu": 1e999}}': "invalid_json",
    }
    for raw, code in cases.items():
        out = decode_message(raw, SRC)
        assert [d.reason_code for d in out.dead] == [code], raw
        assert out.dead[0].reason
    out = decode_message(b'{"subsystem": "a", "ts": 1700000000}', SRC)
    assert "out of range" in out.dead[0].reason and "milliseconds" in out.dead[0].reason
    out = decode_message(b'{"subsystem": "a", "ts": "2026-11-25T06:00:00"}', SRC)
    assert "no UTC offset" in out.dead[0].reason


def test_values_beyond_the_contracts_magnitude_are_rejected_with_the_range() -> None:
    ok = (
        b'{"subsystem": "a", "ts": 1795586400000, "metrics": {"x": -1e100},'
        b' "resources": {"r": 1e100}}'
    )
    assert decode_message(ok, SRC).samples
    for series, value in (
        (b'"metrics": {"x": 1e308}', "1e+308"),
        (b'"metrics": {"x": -1.5e100}', "-1.5e+100"),
        (b'"resources": {"r": 2e100}', "2e+100"),
    ):
        out = decode_message(b'{"subsystem": "a", "ts": 1795586400000, ' + series + b"}", SRC)
        assert not out.samples
        assert out.dead[0].reason.endswith(
            f"{value} is beyond ±1e100, the largest magnitude PSO takes"
        )


def test_python_floats_nan_inf_rejected_after_parse() -> None:
    from app.wire.codec import Rejections, validate_sample

    rejections = Rejections(SRC, b"")
    element = {"subsystem": "a", "ts": 1795586400000, "metrics": {"x": float("nan")}}
    assert validate_sample(element, None, rejections) is None
    assert rejections.count == 1 and "finite" in rejections.listed[0].reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    out = decode_message(raw, SRC)
    assert len(out.samples) + len(out.dead) >= 1 or raw.strip() == b"[]"
    assert len(out.dead) <= 1
    empty = sum(d.rejected_by_reason.get("empty_batch", 0) for d in out.dead)
    assert len(out.samples) + out.rejected - empty == out.items


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"subsystem": st.text(max_size=5), "ts": json_values},
            optional={"metrics": json_values, "resources": json_values},
        )
        | json_values,
        max_size=5,
    )
)
def test_near_valid_json_is_accounted_for(batch: list) -> None:
    raw = orjson.dumps(batch)
    out = decode_message(raw, SRC)
    if batch:
        assert out.items == len(batch)
        assert len(out.samples) + out.rejected == len(batch)
    assert len(out.dead) <= 1
    for d in out.dead:
        assert d.rejected == out.rejected and sum(d.rejected_by_reason.values()) == d.rejected
        assert d.reason and base64.b64decode(d.original_b64 or "") == raw


# --------------------------------------------------------------------------- fast path


def mostly(plain: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """Plain values nine times in ten: the fast path must be exercised, not just refused."""
    return st.sampled_from(range(10)).flatmap(lambda i: odd if i == 0 else plain)


names = mostly(
    st.sampled_from(["cpu", "db-main", "rps", "a.b/c_d:1", "x" * 200]),
    st.sampled_from(["", "x" * 201, "a b", "a\tb", "é", "a\x7f", 'a"b', "a\\b", "a\nb"])
    | st.text(max_size=4),
)
numbers = mostly(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, -0.0, 1e308, 2**53 + 1, -(2**53) - 1, 10**30, True, "1"]
    )
    | st.none(),
)
series = mostly(
    st.dictionaries(names, numbers, min_size=1, max_size=3),
    st.sampled_from([None, [], 0, "x", {}]),
)
timestamps = mostly(
    st.integers(946_684_800_000, 4_102_444_800_000 - 1)
    | st.sampled_from(["2026-11-25T06:00:00Z", "2026-11-25T07:00:00+01:00"]),
    st.sampled_from(
        [946_684_800_000 - 1, 4_102_444_800_000, 1_700_000_000, 1.7e12, True, None, "2026-11-25"]
    ),
)
elements = mostly(
    st.fixed_dictionaries(
        {"subsystem": names, "ts": timestamps}, optional={"metrics": series, "resources": series}
    ),
    st.fixed_dictionaries(
        {"ts": timestamps},
        optional={"subsystem": names, "metrics": series, "labels": series, "extra": numbers},
    )
    | json_values,
)


@settings(max_examples=1500, deadline=None)
@given(elements)
def test_fast_path_accepts_only_what_the_model_accepts_with_equal_values(element: object) -> None:
    from app.wire.codec import fast_fields
    from app.wire.events import TelemetrySample

    fields = fast_fields(element)
    if fields is None:
        return  # the caller validates with the model: same outcome as before by construction
    sample = TelemetrySample.model_validate(element)  # raises if the fast path was too lax
    subsystem, ts, metrics, resources = fields
    assert (subsystem, ts) == (sample.subsystem, sample.ts)
    for got, want in ((metrics, sample.metrics), (resources, sample.resources)):
        assert list(got) == list(want)
        for name in want:
            # same float, sign of zero included
            assert type(got[name]) is float and repr(got[name]) == repr(want[name])
    assert sample.labels == {}


def test_fast_path_covers_the_usual_shapes() -> None:
    from app.wire.codec import fast_fields

    for doc in (
        {"subsystem": "api", "ts": 1795586400000, "metrics": {"cpu": 0.5, "rps": 12}},
        {"subsystem": "api", "ts": "2026-11-25T06:00:00Z", "resources": {"db": 3.0}},
        {"subsystem": "api", "ts": 1795586400000},
    ):
        assert fast_fields(doc) is not None, doc
    assert fast_fields({**GOOD, "labels": {"anomaly": True}}) is None  # left to the model
    assert fast_fields({"subsystem": "api", "ts": 1795586400000, "metrics": {"x": True}}) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(elements, min_size=1, max_size=4), st.booleans())
def test_ingest_dead_letters_match_the_reference_decoder(batch: list, single: bool) -> None:
    from app.settings import WindowConfig
    from app.wire.telemetry import TelemetryIngest

    try:
        raw = orjson.dumps(batch[0] if single else batch)
    except orjson.JSONEncodeError:
        assume(False)  # e.g. an int beyond 64 bits: no wire bytes carry it
    ref = decode_message(raw, SRC)
    # No time-jump rule here: a fresh subsystem's first samples would be held, not windowed.
    got = TelemetryIngest(WindowConfig(size_s=60, max_time_jump_s=0)).process(raw, SRC)
    assert got.items == ref.items
    # random times: some are late; every other reject is the reference decoder's, in order
    got_rejects = [r for d in got.dead for r in d.rejects]
    late = [r for r in got_rejects if r.reason_code == "late"]
    want_rejects = [r for d in ref.dead for r in d.rejects]
    assert [r for r in got_rejects if r not in late] == want_rejects
    assert got.accepted + len(late) == len(ref.samples)
    assert len(got.dead) <= 1


# --------------------------------------------------------------------------- batch columns


@st.composite
def client_batches(draw: st.DrawFn) -> list[dict[str, object]]:
    """Batches as `app.kafka.client.TelemetryProducer` sends them (one subsystem, the same series
    throughout), in any order across a few windows, with one odd element now and then."""
    n = draw(st.integers(2, 30))
    metric_names = draw(st.lists(st.sampled_from(["cpu", "rps", "lat"]), unique=True))
    resource_names = draw(st.lists(st.sampled_from(["db", "gpu"]), unique=True))
    values = st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, 1e100, -1e100, 5e-324])
    base = 1_795_586_400_000 + draw(st.integers(0, 59)) * 1000
    batch: list[dict[str, object]] = []
    for _ in range(n):
        # now and then a sample far ahead: a time jump the next samples confirm or refute
        ahead = draw(st.sampled_from([0] * 12 + [7_200_000, 400 * 86_400_000]))
        element: dict[str, object] = {
            "subsystem": "api",
            "ts": base + ahead + draw(st.integers(-3, 5)) * 40_000,
        }
        if metric_names or draw(st.booleans()):
            element["metrics"] = {k: draw(values) for k in metric_names}
        if resource_names:
            element["resources"] = {k: abs(draw(values)) for k in resource_names}
        batch.append(element)
    if "metrics" in batch[0]:  # keys must agree throughout, or the batch is not uniform
        for element in batch:
            element.setdefault("metrics", {})
    if draw(st.booleans()):
        i = draw(st.integers(0, n - 1))
        odd = draw(
            st.sampled_from(
                [
                    ("ts", "2026-11-25T06:00:00Z"),
                    ("subsystem", "web"),
                    ("metrics", {"cpu": 1}),
                    ("metrics", {"cpu": math.nan}),
                    ("metrics", {"cpu": 1e308}),
                    ("resources", {"db": -1.0}),
                    ("labels", {}),
                    ("metrics", None),
                    ("ts", True),
                ]
            )
        )
        batch[i] = {**batch[i], odd[0]: odd[1]}
    return batch


@settings(max_examples=600, deadline=None)
@given(client_batches())
def test_batch_columns_hold_what_fast_fields_gives_each_sample(batch: list) -> None:
    from app.wire.codec import batch_columns, fast_fields

    columns = batch_columns(batch)
    if columns is None:
        return  # the per-sample path, tested above
    for i, element in enumerate(batch):
        fields = fast_fields(element)
        assert fields is not None, element
        subsystem, ts, metrics, resources = fields
        assert (subsystem, ts) == (columns.subsystem, columns.ts[i])
        for got, want in ((columns.metrics, metrics), (columns.resources, resources)):
            assert list(got) == list(want)
            assert all(repr(got[name][i]) == repr(want[name]) for name in want)


@settings(max_examples=400, deadline=None)
@given(st.lists(client_batches(), min_size=1, max_size=4))
def test_ingest_in_columns_equals_ingest_sample_by_sample(batches: list) -> None:
    """Same windows (exact floats), dead letters, counts and state as the per-sample loop,
    batch after batch on the same state: late samples, runs out of order, -0.0 included."""
    import dataclasses

    from app.core.ingest import IngestResult
    from app.settings import WindowConfig
    from app.wire.telemetry import TelemetryIngest

    config = WindowConfig(size_s=60, allowed_lateness_windows=1, max_time_jump_s=3600)
    in_columns, by_sample = TelemetryIngest(config), TelemetryIngest(config)
    # The subsystem's time is established first (its first samples are held), so that the
    # batches below can be taken in columns.
    start = [{"subsystem": "api", "ts": 1_795_586_280_000 + i, "metrics": {}} for i in range(3)]
    for ingest in (in_columns, by_sample):
        ingest.process(orjson.dumps(start), SRC)
    for batch in batches:
        raw = orjson.dumps(batch)
        got, want = IngestResult(), IngestResult()
        parsed = in_columns.parse(raw, SRC, got)
        plain = dataclasses.replace(by_sample.parse(raw, SRC, want), columns=None)
        in_columns.apply(parsed, got)  # no finite input raises (values are bounded)
        by_sample.apply(plain, want)
        assert [encode(w) for w in got.windows] == [encode(w) for w in want.windows]
        assert [encode(d) for d in got.dead] == [encode(d) for d in want.dead]
        assert (got.accepted, got.items, got.held, got.touched) == (
            want.accepted,
            want.items,
            want.held,
            want.touched,
        )
    states = {name: w.to_state() for name, w in in_columns.windows.items()}
    assert orjson.dumps(states) == orjson.dumps(
        {name: w.to_state() for name, w in by_sample.windows.items()}
    )


def test_a_client_batch_is_taken_in_columns() -> None:
    """The property above must exercise the columns, not just the per-sample loop."""
    from app.core.ingest import IngestResult
    from app.settings import WindowConfig
    from app.wire.telemetry import TelemetryIngest

    batch = [
        {"subsystem": "api", "ts": 1795586400000 + i * 1000, "metrics": {"cpu": 0.5 + i}}
        for i in range(3)
    ]
    parsed = TelemetryIngest(WindowConfig(size_s=60)).parse(
        orjson.dumps(batch), SRC, IngestResult()
    )
    assert parsed.columns is not None
    assert parsed.columns.ts == [1795586400000, 1795586401000, 1795586402000]
    assert parsed.columns.metrics == {"cpu": [0.5, 1.5, 2.5]}
