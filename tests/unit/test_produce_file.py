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
        got = [(n, err) for n, _, err in iter_jsonl_samples(source)]
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
