"""What the backtest's modules share: the event files it writes, its limits, block and batch
sizes, the progress callback and its error."""

from __future__ import annotations

from collections.abc import Callable

from app.errors import ExitCode, PsoError

#: event files, in the order they are created
FILES = (
    "windows",
    "forecasts",
    "anomalies",
    "conflicts",
    "rebalance",
    "accuracy",
    "saturation",
)
MAX_ERRORS = 20
MIN_BASELINE_TARGETS = 30
_LINE_ERRORS = frozenset({"invalid_json", "too_large", "empty_batch"})
_FAST_PREFIX = b'{"subsystem":"'
_FAST_LEN = len(_FAST_PREFIX)
_BLOCK_BYTES = 1 << 20
_IO_BUFFER = 1 << 20  # spool and output files: ~8 KB records, one system call per megabyte
# Stage 1 predicts closed windows in batches of this many per subsystem (at most _BATCH_MAX
# windows: memory), grouped by subsystem: see `_stage1`.
_BATCH_PER_SUBSYSTEM = 8
_BATCH_MAX = 20_000
_SLICE_WINDOWS = 4  # windows per subsystem between two streamings to stage 2
_LINE_ERROR = b"\x00err:"  # a line the reader already judged (never valid JSON): see line_error


def line_error(code: str, reason: str) -> bytes:
    """A stand-in line for one the reader already rejected: reported with ``code`` and
    ``reason`` at its line number, like the ingest's own rejects (`stage1`)."""
    return _LINE_ERROR + code.encode() + b":" + reason.encode(errors="replace")


def read_line_error(line: bytes) -> tuple[str, str]:
    """``(code, reason)`` of a `line_error` line."""
    code, _, reason = line[len(_LINE_ERROR) :].partition(b":")
    return code.decode(), reason.decode(errors="replace")


#: progress(stage, done, total): stage is "ingest" (lines) or "conflicts" (windows)
ProgressFn = Callable[[str, int, int], None]


class BacktestError(PsoError, ValueError):
    """Bad backtest input (missing file, unknown format): one readable line."""

    exit_code = ExitCode.USER_ERROR
