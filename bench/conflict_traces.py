"""Build real-trace conflict cases for ``bench/conflict_quality.py --traces DIR``.

Nothing here downloads anything, and nothing it writes belongs in the repository: it reads a
public repository from a local bare git copy (``git --git-dir=... show COMMIT:path``) and
writes, per case, a telemetry file and a ``pso.yaml`` to a cache directory (e.g.
``/work/cache/conflict-traces``). None of it is NAB data.

Source
------
The Bitbrains "Rnd" trace of the Grid Workloads Archive (GWA-T-12, TU Delft and Bitbrains, a
provider of managed hosting for business-critical applications: banks, insurers, credit-card
operators), as stored in github.com/JessieRayeBauer/Time-Series-Forecasting-, commit
0901a0da3024507c7732c782621e590077abca64, ``rnd/<month>/<vm>.csv`` for months 2013-7,
2013-8 and 2013-9: 500 VMs, one ``;``-separated row per VM about every 300 s (Unix seconds,
whatever the header says), with the VM's ``CPU usage [MHZ]`` among other columns.

From a trace to a case (the exact rules)
----------------------------------------
* **Time**: the 14 days (4,032 five-minute slots) from the first UTC midnight after the
  month's first sample. A VM's value in a slot is the mean of its CPU usage samples in it
  (MHz / 1000, so GHz); an empty slot takes the previous slot's value (the first slots: the
  first value seen).
* **Eligible VMs**: a sample in at least 95 % of the slots, a mean of at least 0.2 GHz, and
  a coefficient of variation of at least 0.1 (not a flat line: a pool of constants has no
  conflict to predict).
* **Groups**: per month, the eligible VMs in a seeded random order (``numpy`` PCG64, seed =
  the month's number), cut into consecutive groups of ``--group`` VMs (10); the first
  ``--per-month`` groups (6) are that month's cases, ``bitbrains-<month>-<k>``.
* **The pool**: every VM of a group is a subsystem (``vm-<id>``) drawing on one shared
  resource ``cpu`` (GHz); its capacity is the ``--percentile`` (99th) percentile of the
  group's summed demand over the 14 days, rounded to 3 decimals. A breach is a slot whose
  summed demand exceeds it; an episode is a run of consecutive breach slots.
* **Telemetry**: one sample per VM per slot, at the slot's middle, ``{"subsystem": "vm-41",
  "ts": <ms>, "resources": {"cpu": <GHz>}}``, lines in (time, subsystem) order; ``pso.yaml``
  sets 300-s windows and the resource's capacity, every other setting at its default.

Cases of 2013-7 are for development; those of 2013-8 and 2013-9 are held out (the bench
reports both groups separately).

A second source, never used to develop the conflict predictor (``--cloud-monitoring``; its
series are in the anomaly validation corpus of ``bench/anomaly_corpus.py``): the
Microsoft cloud-monitoring dataset (github.com/microsoft/cloud-monitoring-dataset, commit
``6a07a53c``), whose aligned 1-minute series of one service make a pool each: the 4
``mongodb-application-rps`` instances on one resource ``mongodb`` (requests/s) and the 5
``data-ingress-rate`` series on one resource ``ingress``, 11 days from 2018-04-25 00:00 UTC.
Same rules as above otherwise: 300-s slots (the mean of the minutes in a slot, an empty slot
carries the previous value), capacity at the ``--percentile`` of the summed demand, role
``holdout_msft``.

``manifest.json`` records, per case, its members (the VMs' source path and blob, or the
Microsoft series), the capacity, breach windows and episodes.

Rebuild::

    git clone --bare https://github.com/JessieRayeBauer/Time-Series-Forecasting- /tmp/bb.git
    .venv/bin/python bench/conflict_traces.py --out /work/cache/conflict-traces \\
        --bitbrains /tmp/bb.git [--cloud-monitoring /tmp/msft.git]

(~3 minutes; 18 cases of ~2.7 MB each; the same bytes on every run: the blobs are read at the
pinned commit, the groups come from a fixed seed.) Then score them with
``bench/conflict_quality.py --traces /work/cache/conflict-traces``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

BITBRAINS_REPO = "JessieRayeBauer/Time-Series-Forecasting-"
BITBRAINS_COMMIT = "0901a0da3024507c7732c782621e590077abca64"
MONTHS = ("2013-7", "2013-8", "2013-9")
DEV_MONTHS = ("2013-7",)
SLOT_S = 300
DAYS = 14
SLOTS = DAYS * 86_400 // SLOT_S
MIN_COVERAGE = 0.95
MIN_MEAN_GHZ = 0.2
MIN_CV = 0.1
FloatArray = npt.NDArray[np.float64]
MSFT_REPO = "microsoft/cloud-monitoring-dataset"
MSFT_COMMIT = "6a07a53c2fac495fb6831811df4c980d6c04bd10"
MSFT_POOLS = {  # case -> (resource, unit, directory of the dataset, series)
    "msft-mongodb-application-rps": (
        "mongodb",
        "rps",
        "data/mongodb-application-rps",
        ("mongo-01", "mongo-02", "mongo-03", "mongo-04"),
    ),
    "msft-data-ingress-rate": (
        "ingress",
        "rate",
        "data/data-ingress-rate",
        ("ingress-01", "ingress-02", "ingress-03", "ingress-04", "ingress-05"),
    ),
}
MSFT_FROM = dt.datetime(2018, 4, 25, tzinfo=dt.UTC)
MSFT_SLOTS = 11 * 86_400 // SLOT_S


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True
    ).stdout


def _vm_rows(text: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """(Unix seconds, CPU usage in GHz) of one VM file; rows that do not parse are skipped."""
    secs: list[int] = []
    ghz: list[float] = []
    for line in text.splitlines()[1:]:
        parts = line.split(";")
        try:
            secs.append(int(parts[0].strip()))
            ghz.append(float(parts[3].strip()) / 1000.0)
        except (IndexError, ValueError):
            continue
    return np.asarray(secs, dtype=np.int64), np.asarray(ghz, dtype=np.float64)


def _slots(
    secs: npt.NDArray[np.int64], ghz: FloatArray, t0: int, n_slots: int = SLOTS
) -> tuple[FloatArray, float]:
    """The series' mean per slot from ``t0`` (gaps carried forward) and the share of slots seen."""
    idx = (secs - t0) // SLOT_S
    keep = (idx >= 0) & (idx < n_slots) & np.isfinite(ghz)
    sums = np.bincount(idx[keep], weights=ghz[keep], minlength=n_slots)
    counts = np.bincount(idx[keep], minlength=n_slots)
    seen = counts > 0
    values = np.full(n_slots, np.nan)
    values[seen] = sums[seen] / counts[seen]
    if not seen.any():
        return values, 0.0
    last = values[np.argmax(seen)]
    for i in range(n_slots):  # carry forward
        if seen[i]:
            last = values[i]
        else:
            values[i] = last
    return values, float(seen.mean())


def _episodes(breach: npt.NDArray[np.bool_]) -> int:
    starts = breach & ~np.concatenate(([False], breach[:-1]))
    return int(starts.sum())


def _write_case(
    case_dir: Path,
    series: dict[str, FloatArray],
    t0: int,
    resource: str,
    unit: str,
    capacity: float,
) -> None:
    """One case: a sample per subsystem per slot at the slot's middle, and its ``pso.yaml``."""
    case_dir.mkdir(exist_ok=True)
    slots = len(next(iter(series.values())))
    with (case_dir / "telemetry.jsonl").open("w") as fh:
        for i in range(slots):
            ts_ms = (t0 + i * SLOT_S + SLOT_S // 2) * 1000
            for name, values in series.items():
                sample = {
                    "subsystem": name,
                    "ts": ts_ms,
                    "resources": {resource: round(float(values[i]), 6)},
                }
                fh.write(json.dumps(sample, separators=(",", ":")) + "\n")
    (case_dir / "pso.yaml").write_text(
        f"window:\n  size_s: {SLOT_S}\nresources:\n  {resource}:\n    capacity: {capacity}\n"
        f"    unit: {unit}\n"
    )


def _msft_slots(text: str, t0: int) -> FloatArray:
    """One Microsoft series (``"TimeStamp","Value","Label"`` rows) as slot means from ``t0``."""
    secs: list[int] = []
    values: list[float] = []
    for row in csv.reader(io.StringIO(text)):
        try:
            stamp = dt.datetime.fromisoformat(row[0].replace("Z", "+00:00"))
            secs.append(int(stamp.timestamp()))
            values.append(float(row[1]))
        except (IndexError, ValueError):
            continue  # the header, an empty value
    slots, _ = _slots(np.asarray(secs, dtype=np.int64), np.asarray(values), t0, MSFT_SLOTS)
    return slots


def build_msft(git_dir: Path, out: Path, percentile: float) -> dict[str, object]:
    """The Microsoft pools (see the module docstring); returns their manifest entries."""
    t0 = int(MSFT_FROM.timestamp())
    cases: dict[str, object] = {}
    for name, (resource, unit, folder, members) in MSFT_POOLS.items():
        series = {
            member: _msft_slots(
                _git(git_dir, "show", f"{MSFT_COMMIT}:{folder}/{member}.csv").decode(), t0
            )
            for member in members
        }
        total = np.sum(list(series.values()), axis=0)
        capacity = round(float(np.percentile(total, percentile)), 3)
        breach = total > capacity
        _write_case(out / name, series, t0, resource, unit, capacity)
        cases[name] = {
            "role": "holdout_msft",
            "source": {"repo": MSFT_REPO, "commit": MSFT_COMMIT, "folder": folder},
            "from": MSFT_FROM.isoformat(),
            "slots": MSFT_SLOTS,
            "members": list(members),
            "capacity": capacity,
            "mean_total": round(float(total.mean()), 3),
            "breach_windows": int(breach.sum()),
            "episodes": _episodes(breach),
        }
    return cases


def build(
    out: Path,
    git_dir: Path,
    group: int,
    per_month: int,
    percentile: float,
    msft_git_dir: Path | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {
        "source": {"repo": BITBRAINS_REPO, "commit": BITBRAINS_COMMIT, "trace": "GWA-T-12 Rnd"},
        "rules": {
            "slot_s": SLOT_S,
            "days": DAYS,
            "group": group,
            "per_month": per_month,
            "percentile": percentile,
            "min_coverage": MIN_COVERAGE,
            "min_mean_ghz": MIN_MEAN_GHZ,
            "min_cv": MIN_CV,
        },
        "cases": {},
    }
    cases: dict[str, object] = {}
    for month in MONTHS:
        listing = _git(git_dir, "ls-tree", BITBRAINS_COMMIT, f"rnd/{month}/").decode()
        files = []
        for row in listing.splitlines():
            meta, path = row.split("\t")
            if path.endswith(".csv"):
                files.append((int(Path(path).stem), path, meta.split()[2]))
        files.sort()
        rows = {
            vm: _vm_rows(_git(git_dir, "cat-file", "blob", blob).decode()) for vm, _, blob in files
        }
        first = min(int(secs.min()) for secs, _ in rows.values() if len(secs))
        t0 = (first // 86_400 + 1) * 86_400
        eligible: dict[int, FloatArray] = {}
        for vm, _, _ in files:
            values, coverage = _slots(*rows[vm], t0)
            mean = float(np.mean(values)) if coverage else 0.0
            cv = float(np.std(values) / mean) if mean > 0 else 0.0
            if coverage >= MIN_COVERAGE and mean >= MIN_MEAN_GHZ and cv >= MIN_CV:
                eligible[vm] = values
        order = sorted(eligible)
        rng = np.random.default_rng(int(month.split("-")[1]))
        shuffled = [order[i] for i in rng.permutation(len(order))]
        paths = {vm: (path, blob) for vm, path, blob in files}
        for k in range(per_month):
            vms = sorted(shuffled[k * group : (k + 1) * group])
            if len(vms) < group:
                break
            name = f"bitbrains-{month}-{k + 1}"
            total = np.sum([eligible[vm] for vm in vms], axis=0)
            capacity = round(float(np.percentile(total, percentile)), 3)
            breach = total > capacity
            series = {f"vm-{vm}": eligible[vm] for vm in vms}
            _write_case(out / name, series, t0, "cpu", "GHz", capacity)
            cases[name] = {
                "role": "dev" if month in DEV_MONTHS else "holdout",
                "from": dt.datetime.fromtimestamp(t0, dt.UTC).isoformat(),
                "slots": SLOTS,
                "vms": [{"vm": vm, "path": paths[vm][0], "blob": paths[vm][1]} for vm in vms],
                "eligible_in_month": len(order),
                "capacity_ghz": capacity,
                "mean_total_ghz": round(float(total.mean()), 3),
                "breach_windows": int(breach.sum()),
                "episodes": _episodes(breach),
            }
    if msft_git_dir is not None:
        cases.update(build_msft(msft_git_dir, out, percentile))
    manifest["cases"] = cases
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cache directory to write")
    parser.add_argument(
        "--bitbrains", type=Path, required=True, help=f"git dir of {BITBRAINS_REPO}"
    )
    parser.add_argument("--group", type=int, default=10, help="VMs per pool")
    parser.add_argument("--per-month", type=int, default=6, help="cases per month")
    parser.add_argument("--percentile", type=float, default=99.0, help="capacity percentile")
    parser.add_argument(
        "--cloud-monitoring", type=Path, default=None, help=f"git dir of {MSFT_REPO} (optional)"
    )
    args = parser.parse_args()
    build(
        args.out, args.bitbrains, args.group, args.per_month, args.percentile, args.cloud_monitoring
    )


if __name__ == "__main__":
    main()
