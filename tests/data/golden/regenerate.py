"""Rewrite expected.jsonl from the current code. Only after reviewing the diff by eye:
the golden test exists to catch unintended changes (see tests/unit/test_golden_windows.py)."""

from pathlib import Path

from tests.unit.test_golden_windows import run_golden

if __name__ == "__main__":
    target = Path(__file__).with_name("expected.jsonl")
    target.write_bytes(b"\n".join(run_golden()) + b"\n")
    print(f"wrote {target}")
