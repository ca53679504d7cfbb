"""Build the real-telemetry validation corpus for ``bench/anomaly_quality.py --corpus DIR``.

Nothing here downloads anything, and nothing it writes belongs in the repository: it reads
two public repositories from local bare git copies (``git --git-dir=... show COMMIT:path``)
and writes ``timestamp,value`` CSV files plus NAB-format labels to a cache directory.

Sources (both MIT-licensed; none of it is NAB data):

``msft`` — github.com/microsoft/cloud-monitoring-dataset, commit
  6a07a53c2fac495fb6831811df4c980d6c04bd10, every ``data/<domain>/<name>.csv`` (67 series,
  8 domains: application crash rates, store purchase counts, data ingress rate, e-commerce API
  requests/s, middle-tier dependency latency, MongoDB requests/s per application and per
  machine, service-unavailable rate; hourly or per-minute; labelled by Microsoft's domain
  experts, a 0/1 label per timestamp). Rows with an empty value are dropped (missing samples).

``smd`` — the Server Machine Dataset (OmniAnomaly, KDD 2019), as stored by
  github.com/zhhlee/InterFusion, commit 8c85d511c1f070669ba8c5cf097b8fa4a202d15b,
  ``data/processed/machine-X-Y_{train,test,test_label}.pkl`` and
  ``data/interpretation_label/machine-X-Y.txt``: the 8 machines whose files are in that
  snapshot (1-6, 1-7, 2-1, 2-2, 2-7, 2-8, 3-3, 3-4). 38 min-max-scaled metrics per machine,
  one sample per minute. (The same data at NetManAIOps/OmniAnomaly,
  ``ServerMachineDataset/``, is not in the stored snapshot: its files exceed 4 MiB.)

``asd`` — the Application Server Dataset (InterFusion, KDD 2021), same repository and commit,
  ``data/processed/omi-N_{train,test,test_label}.pkl`` and
  ``data/interpretation_label/omi-N.txt``, N = 1..12: 19 min-max-scaled metrics per
  server, one sample every 5 minutes.

The ``.pkl`` files are numpy arrays pickled by numpy; they are NOT unpickled: ``_ndarray``
walks the pickle's opcodes (``pickletools.genops``, which executes nothing), accepts only
numpy's array-reconstruction globals and reads the shape, dtype and raw buffer.

From a multivariate server to one univariate series (smd, asd), the rule is:

* the metric is the one named in the most labelled segments of the interpretation file
  (metric numbers there are 1-based; ties go to the lower number), among metrics that are
  not constant over the test part;
* the series is the last two days of the training part followed by the whole test part (so
  NAB's probationary period — the first 15 %, at most 750 rows — is learning time); event
  times are synthetic, from 2019-01-07 00:00 UTC at the dataset's spacing (1 or 5 minutes);
* the labelled anomalies are the runs of ``test_label == 1`` whose interpretation line names
  that metric (runs whose interpretation does not name it are not anomalies of this series).

From labelled runs to NAB windows (all sources): each run of consecutive labelled rows is
one anomaly starting at its first row. As in NAB, each window is centred on the anomaly's
start and is ``floor(0.1 * rows / anomalies)`` rows wide; where the labelled run lasts
longer than the window's right half, the window is extended to the run's last row (those
rows are labelled anomalous, so a detection there is not a false positive). Overlapping
windows are merged. ``labels.json`` maps ``<source>/<file>.csv`` to a list of
``["YYYY-MM-DD HH:MM:SS", "YYYY-MM-DD HH:MM:SS"]`` windows (NAB's combined_windows format),
and ``manifest.json`` records, per file, its source path, commit, metric and row count.

Run::

    .venv/bin/python bench/anomaly_corpus.py --out /work/cache/anomaly-corpus \\
        --cloud-monitoring /path/to/microsoft+cloud-monitoring-dataset/repo \\
        --interfusion /path/to/zhhlee+InterFusion/repo
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import pickletools
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MSFT_COMMIT = "6a07a53c2fac495fb6831811df4c980d6c04bd10"
INTERFUSION_COMMIT = "8c85d511c1f070669ba8c5cf097b8fa4a202d15b"
SMD_MACHINES = ("1-6", "1-7", "2-1", "2-2", "2-7", "2-8", "3-3", "3-4")
ASD_SERVERS = tuple(range(1, 13))
SYNTHETIC_T0 = dt.datetime(2019, 1, 7, tzinfo=dt.UTC)
_ARRAY_GLOBALS = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
_DTYPES = {"f4", "f8", "i4", "i8", "u1", "b1"}


def _git_show(git_dir: Path, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
    ).stdout


def _git_ls(git_dir: Path, commit: str, under: str) -> list[str]:
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", commit, under],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split("\n")[:-1]


def _ndarray(blob: bytes) -> np.ndarray:
    """A numpy array from its pickle, read opcode by opcode (nothing is executed)."""
    ops = list(pickletools.genops(blob))
    raw: bytes | None = None
    dtype: str | None = None
    for op, arg, _ in ops:
        if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"):
            if op.name != "GLOBAL" or arg not in _ARRAY_GLOBALS:
                raise ValueError(f"not a plain numpy array pickle ({op.name} {arg})")
        elif op.name in ("BINBYTES", "BINBYTES8", "SHORT_BINBYTES"):
            if raw is None or len(arg) > len(raw):
                raw = bytes(arg)
        elif op.name == "BINUNICODE" and arg in _DTYPES:
            dtype = str(arg)
    first_reduce = next(i for i, (op, _, _) in enumerate(ops) if op.name == "REDUCE")
    mark = next(i for i in range(first_reduce, len(ops)) if ops[i][0].name == "MARK")
    shape = []
    k = mark + 2  # MARK, pickle-format version, then the shape's integers
    while ops[k][0].name.startswith("BININT"):
        shape.append(int(ops[k][1]))
        k += 1
    if raw is None or dtype is None or not shape:
        raise ValueError("no array buffer, dtype or shape in the pickle")
    arr = np.frombuffer(raw, dtype="<" + dtype)
    if arr.size != math.prod(shape):
        raise ValueError(f"buffer of {arr.size} values for shape {shape}")
    return arr.reshape(shape).astype(float)


def runs(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive non-zero labels as inclusive ``(first, last)`` row indices."""
    lab = np.asarray(labels, dtype=int) != 0
    edges = np.flatnonzero(np.diff(np.r_[0, lab.astype(int), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def nab_windows(n: int, anomalies: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """NAB windows (row indices, inclusive) for labelled runs: see the module docstring."""
    if not anomalies:
        return []
    width = int(0.1 * n / len(anomalies))
    wins = sorted(
        (max(0, s - width // 2), min(n - 1, max(s + width // 2, e))) for s, e in anomalies
    )
    merged = [wins[0]]
    for s, e in wins[1:]:
        ps, pe = merged[-1]
        if s <= pe:
            merged[-1] = (ps, max(pe, e))
        else:
            merged.append((s, e))
    return merged


def _fmt(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


class Corpus:
    """Collects series, then writes CSVs, ``labels.json`` and ``manifest.json``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.labels: dict[str, list[list[str]]] = {}
        self.manifest: dict[str, dict[str, object]] = {}

    def add(
        self,
        key: str,
        stamps: list[dt.datetime],
        values: Sequence[float],
        anomalies: list[tuple[int, int]],
        meta: dict[str, object],
    ) -> None:
        path = self.out / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["timestamp", "value"])
            for t, v in zip(stamps, values, strict=True):
                w.writerow([_fmt(t), repr(float(v))])
        wins = nab_windows(len(values), anomalies)
        self.labels[key] = [[_fmt(stamps[s]), _fmt(stamps[e])] for s, e in wins]
        self.manifest[key] = {
            **meta,
            "rows": len(values),
            "anomalies": len(anomalies),
            "windows": len(wins),
        }

    def write(self) -> None:
        (self.out / "labels.json").write_text(json.dumps(self.labels, indent=1, sort_keys=True))
        (self.out / "manifest.json").write_text(json.dumps(self.manifest, indent=1, sort_keys=True))


def _parse_msft_time(text: str) -> dt.datetime:
    d = dt.datetime.fromisoformat(text.strip().strip('"').replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def add_msft(corpus: Corpus, git_dir: Path) -> None:
    for path in _git_ls(git_dir, MSFT_COMMIT, "data"):
        if not path.endswith(".csv"):
            continue
        text = _git_show(git_dir, MSFT_COMMIT, path).decode()
        rows = list(csv.reader(io.StringIO(text)))[1:]
        rows = [r for r in rows if len(r) >= 3 and r[1].strip() != ""]
        stamps = [_parse_msft_time(r[0]) for r in rows]
        values = [float(r[1]) for r in rows]
        labels = [int(r[2] or 0) for r in rows]
        domain, name = path.split("/")[1], path.split("/")[2]
        corpus.add(
            f"msft/{domain}__{name}",
            stamps,
            values,
            runs(labels),
            {"repo": "microsoft/cloud-monitoring-dataset", "commit": MSFT_COMMIT, "path": path},
        )


def _interpretation(text: str) -> list[tuple[int, list[int]]]:
    out = []
    for line in text.splitlines():
        if ":" not in line:
            continue
        span, dims = line.strip().split(":")
        out.append((int(span.split("-")[0]), [int(d) for d in dims.split(",")]))
    return out


def _server(
    corpus: Corpus, git_dir: Path, source: str, entity: str, step: dt.timedelta, history: int
) -> None:
    base = "data/processed/" + entity
    train = _ndarray(_git_show(git_dir, INTERFUSION_COMMIT, base + "_train.pkl"))
    test = _ndarray(_git_show(git_dir, INTERFUSION_COMMIT, base + "_test.pkl"))
    label = _ndarray(_git_show(git_dir, INTERFUSION_COMMIT, base + "_test_label.pkl"))
    interp_path = f"data/interpretation_label/{entity}.txt"
    segments = _interpretation(_git_show(git_dir, INTERFUSION_COMMIT, interp_path).decode())
    moving = {j + 1 for j in range(test.shape[1]) if np.ptp(test[:, j]) > 0.0}
    counts: dict[int, int] = {}
    for _, dims in segments:
        for d in dims:
            if d in moving:
                counts[d] = counts.get(d, 0) + 1
    metric = min(counts, key=lambda d: (-counts[d], d))
    starts = {s for s, dims in segments if metric in dims}
    labelled = [(s, e) for s, e in runs(label) if s in starts]
    head = train[-history:, metric - 1]
    values = np.concatenate([head, test[:, metric - 1]])
    stamps = [SYNTHETIC_T0 + i * step for i in range(len(values))]
    corpus.add(
        f"{source}/{entity}__m{metric}.csv",
        stamps,
        values.tolist(),
        [(s + len(head), e + len(head)) for s, e in labelled],
        {
            "repo": "zhhlee/InterFusion",
            "commit": INTERFUSION_COMMIT,
            "path": [
                base + "_train.pkl",
                base + "_test.pkl",
                base + "_test_label.pkl",
                interp_path,
            ],
            "metric_1_based": metric,
            "history_rows": len(head),
            "unmatched_runs": len(runs(label)) - len(labelled),
        },
    )


def add_servers(corpus: Corpus, git_dir: Path) -> None:
    for m in SMD_MACHINES:
        _server(corpus, git_dir, "smd", f"machine-{m}", dt.timedelta(minutes=1), 2 * 1440)
    for n in ASD_SERVERS:
        _server(corpus, git_dir, "asd", f"omi-{n}", dt.timedelta(minutes=5), 2 * 288)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--cloud-monitoring",
        type=Path,
        required=True,
        help="git dir of microsoft/cloud-monitoring-dataset",
    )
    parser.add_argument(
        "--interfusion", type=Path, required=True, help="git dir of zhhlee/InterFusion"
    )
    args = parser.parse_args()
    corpus = Corpus(args.out)
    add_msft(corpus, args.cloud_monitoring)
    add_servers(corpus, args.interfusion)
    corpus.write()
    rows = sum(int(str(m["rows"])) for m in corpus.manifest.values())
    wins = sum(len(w) for w in corpus.labels.values())
    print(json.dumps({"files": len(corpus.labels), "rows": rows, "windows": wins}))


if __name__ == "__main__":
    main()
