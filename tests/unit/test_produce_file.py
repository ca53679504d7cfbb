"""`pso produce`'s file reader: every line is a sample or one error, and memory stays bounded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from app.kafka.client import iter_jsonl_samples
from app.wire.codec import MAX_MESSAGE_BYTES


def test_an_endless_line_is_one_error_and_never_held_whole(tmp_path: Path) -> None:
    good = b'{"subsystem":"web","ts":1795597200000,"metrics":{"cpu":1}}'
    endless = b"[" + b"1," * (8 << 20) + b"1]"  # 16 MiB, no newline until its end
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([good, endless, good, good]))
    tracemalloc.start()
    try:
        got = [(n, err) for n, _, err in iter_jsonl_samples(source, MAX_MESSAGE_BYTES)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [
        (1, None),
        (2, f"line longer than {MAX_MESSAGE_BYTES} bytes"),
        (3, None),
        (4, None),
    ]
    assert peak < 8 * MAX_MESSAGE_BYTES  # half the line: it was never read whole


def test_a_batch_line_may_be_longer_than_one_message_and_crlf_counts_as_newline(
    tmp_path: Path,
) -> None:
    sample = b'{"subsystem":"web","ts":%d,"metrics":{"cpu":1}}'
    batch = b"[" + b",".join(sample % (1795597200000 + i) for i in range(20_000)) + b"]"
    assert len(batch) > MAX_MESSAGE_BYTES  # `pso produce` sends it again in batches
    exact = b'{"subsystem":"web","ts":1795597200000,"metrics":{"cpu":1}}'
    source = tmp_path / "in.jsonl"
    source.write_bytes(batch + b"\r\n" + exact + b"\r\n")
    got = list(iter_jsonl_samples(source))
    assert len(got) == 20_001 and all(err is None for _, _, err in got)
    assert list(iter_jsonl_samples(source, len(exact)))[-1][2] is None  # CRLF is not content
