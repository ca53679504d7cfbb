"""Scoring predictions against what really happened, online and in event time.

`ForecastAccuracy` scores every forecast of one series when its target window arrives: MAE per
horizon, the same for a seasonal-naive forecast (``ŷ(t) = y(t − 1 day)``, the MASE baseline),
and interval coverage per level. `ConflictScorer` matches predicted conflicts to observed
capacity breaches. The live engine publishes both as `AccuracyReport` events and the backtest
writes them into its report: one definition, used everywhere.

Definitions
-----------
MASE_h
    ``MAE_h(model) / MAE_h(seasonal naive)`` over the same targets (those with a value one
    season earlier). Below 1: better than "same as yesterday at this time".
coverage_h(level)
    Share of targets inside the ``level`` interval forecast ``h`` windows earlier.
conflict episode
    A maximal run of consecutive windows whose actual total demand exceeds capacity.
recall
    Share of episodes for which a conflict was predicted at least one window before the
    episode started, and still open (not cleared) when it started.
precision
    Share of predicted conflicts (distinct ``conflict_id``) during whose lifetime, or within
    the horizon after it was first emitted, a real breach occurred.
lead time
    Episode start − first emission of the conflict that predicted it.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.core.events import ConflictObserved, ConflictPredicted
from app.core.forecasters.kernels import NO_MASK, accuracy_score
from app.core.types import SeriesForecast

DAY_MS = 86_400_000
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class HorizonTotals:
    """Running sums for one horizon (mergeable across series with the same levels)."""

    levels: tuple[float, ...] = ()
    n: int = 0
    abs_err: float = 0.0
    n_naive: int = 0
    abs_err_model_vs_naive: float = 0.0  # model error on the targets that have a baseline
    abs_err_naive: float = 0.0
    hits: list[int] = field(default_factory=list)  # per level: targets inside the interval

    def __post_init__(self) -> None:
        if len(self.hits) != len(self.levels):
            self.hits = [0] * len(self.levels)

    def merge(self, other: HorizonTotals) -> None:
        if other.levels != self.levels:
            raise ValueError("cannot merge accuracy totals of different interval levels")
        self.n += other.n
        self.abs_err += other.abs_err
        self.n_naive += other.n_naive
        self.abs_err_model_vs_naive += other.abs_err_model_vs_naive
        self.abs_err_naive += other.abs_err_naive
        for k, count in enumerate(other.hits):
            self.hits[k] += count

    @property
    def covered(self) -> dict[float, int]:
        """Level -> number of targets inside that level's interval."""
        return dict(zip(self.levels, self.hits, strict=True))

    @property
    def mae(self) -> float:
        return self.abs_err / self.n if self.n else 0.0

    @property
    def mase(self) -> float | None:
        if self.n_naive == 0 or self.abs_err_naive <= 0.0:
            return None
        return self.abs_err_model_vs_naive / self.abs_err_naive

    def coverage(self, level: float) -> float | None:
        if not self.n or level not in self.levels:
            return None
        return self.hits[self.levels.index(level)] / self.n


class ForecastAccuracy:
    """Scores one series' forecasts when their target windows arrive.

    Parameters
    ----------
    step_ms
        Window size.
    horizon
        Forecast horizon H (windows).
    levels
        Interval levels to score.
    season_ms
        Period of the seasonal-naive baseline (default one day). Keeps one value per window
        of the season (11.5 KB for a day of 60 s windows).

    Two ways to feed it. Standalone: `record` every forecast, `observe` every actual value
    (pending forecasts then live in a ring of their own). In the engine, the forecaster already
    holds every issued forecast and computes their errors when a window arrives, so it hands
    them over (``SeriesForecaster.learn_one(..., accuracy=...)`` calls `score` and `remember`):
    same figures, no second store, a handful of vector operations per window.

    Examples
    --------
    >>> acc = ForecastAccuracy(step_ms=60_000, horizon=2, levels=(0.8,), season_ms=120_000)
    >>> for n in range(6):
    ...     acc.observe(n * 60_000, float(n % 2))
    ...     acc.record(SeriesForecast(origin_ms=(n + 1) * 60_000, step_ms=60_000,
    ...         point=(float((n + 1) % 2), float(n % 2)), lower={0.8: (0.0, 0.0)},
    ...         upper={0.8: (1.0, 1.0)}))
    >>> acc.totals[0].mae, acc.totals[0].n
    (0.0, 5)
    """

    def __init__(
        self,
        step_ms: int,
        horizon: int,
        levels: tuple[float, ...],
        season_ms: int = DAY_MS,
    ) -> None:
        self.step_ms = step_ms
        self.horizon = horizon
        self.levels = levels
        self.season_ms = season_ms
        self.season = max(1, season_ms // step_ms)
        # array('d'): fast scalar access from Python, compact pickle.
        self._history = array("d", [math.nan]) * self.season
        self._last_index: int | None = None
        # Standalone mode only (`record`): pending forecasts, slot x [point, lowers, uppers] x h.
        self._ring: FloatArray | None = None
        self._origins: IntArray | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the scores so far (keeps pending forecasts and the baseline history)."""
        horizon, n_levels = self.horizon, len(self.levels)
        # Per horizon: targets scored, those with a baseline, abs error of the baseline, then
        # abs error of the model, the same on targets with a baseline; then targets inside
        # each level's interval. Counts are exact in float64 (up to 2**53).
        self._sums = np.zeros((5 + n_levels, horizon))

    @property
    def sums(self) -> FloatArray:
        """The per-horizon sums as one array, rows as `totals` reads them (a copy; compact to
        ship between processes)."""
        return self._sums.copy()

    @property
    def totals(self) -> list[HorizonTotals]:
        """Per-horizon sums as mergeable `HorizonTotals` (a copy)."""
        n, n_naive, naive_err, abs_err, vs_naive, *by_level = self._sums.tolist()
        return [
            HorizonTotals(
                levels=self.levels,
                n=int(n[h]),
                abs_err=abs_err[h],
                n_naive=int(n_naive[h]),
                abs_err_model_vs_naive=vs_naive[h],
                abs_err_naive=naive_err[h],
                hits=[int(c[h]) for c in by_level],
            )
            for h in range(self.horizon)
        ]

    def _naive(self, index: int) -> float:
        """y one season before window ``index`` (NaN if unknown)."""
        last = self._last_index
        back = index - self.season
        if last is None or back > last or last - back >= self.season:
            return math.nan
        return self._history[back % self.season]

    def score(
        self,
        index: int,
        y: float,
        abs_err: FloatArray,
        inside: FloatArray | BoolArray,
        valid: BoolArray | None = None,
    ) -> None:
        """Add the scores of window ``index`` (actual ``y``), before `remember` learns it.

        ``abs_err[h-1]`` is the absolute error of the forecast made ``h`` windows earlier,
        ``inside[k, h-1]`` (0/1 or bool) whether ``y`` was inside its interval at
        ``levels[k]``; ``valid`` masks horizons with no such forecast (None: all have one).
        """
        naive = self._naive(index)
        known = naive == naive
        has_valid = valid is not None
        accuracy_score(
            self._sums,
            abs_err,
            inside,
            valid if has_valid else NO_MASK,
            has_valid,
            known,
            abs(naive - y) if known else 0.0,
        )

    def baseline(self, index: int, y: float) -> tuple[FloatArray, bool, float]:
        """For a caller adding `score`'s terms itself (the forecaster's fused loop): the sums
        to add into, whether window ``index`` has a seasonal-naive value, and its error."""
        naive = self._naive(index)
        known = naive == naive
        return self._sums, known, abs(naive - y) if known else 0.0

    def remember(self, index: int, y: float) -> None:
        """Keep ``y`` of window ``index`` as a future seasonal-naive forecast."""
        last = self._last_index
        history = self._history
        season = self.season
        if last is not None and index > last + 1:
            for gap in range(max(last + 1, index - season), index):
                history[gap % season] = math.nan
        history[index % season] = y
        if last is None or index > last:
            self._last_index = index

    def observe(self, window_start_ms: int, y: float) -> None:
        """The actual mean of the window starting at ``window_start_ms``: score what targeted it."""
        index = window_start_ms // self.step_ms
        if self._ring is not None and self._origins is not None:
            h = np.arange(self.horizon)
            origins = index - h  # the forecast for this window at horizon h+1 was made then
            slots = origins % self.horizon
            valid = self._origins[slots] == origins
            if valid.any():
                rows = self._ring[slots, :, h]  # (horizon, 1 + 2L)
                n_levels = len(self.levels)
                inside = (rows[:, 1 : 1 + n_levels] <= y) & (y <= rows[:, 1 + n_levels :])
                abs_err = np.abs(rows[:, 0] - y)
                self.score(index, y, abs_err, inside.T, None if valid.all() else valid)
        self.remember(index, y)

    def record(self, forecast: SeriesForecast) -> None:
        """Keep a forecast until its targets arrive. ``origin_ms`` is the first target's start."""
        if self._ring is None or self._origins is None:
            width = 1 + 2 * len(self.levels)
            self._ring = np.zeros((self.horizon, width, self.horizon))
            self._origins = np.full(self.horizon, -(2**62), dtype=np.int64)
        origin_index = forecast.origin_ms // self.step_ms
        slot = origin_index % self.horizon
        row = self._ring[slot]
        row[0] = forecast.point
        n_levels = len(self.levels)
        for k, level in enumerate(self.levels):
            row[1 + k] = forecast.lower[level]
            row[1 + n_levels + k] = forecast.upper[level]
        self._origins[slot] = origin_index


@dataclass(slots=True)
class _Prediction:
    conflict_id: str
    resource: str
    first_emitted_ms: int
    expected_start_ms: int
    expected_end_ms: int
    cleared_ms: int | None = None
    hit: bool = False


@dataclass(slots=True)
class _Episode:
    resource: str
    start_ms: int
    last_ms: int
    predicted_by: str | None = None
    lead_ms: int | None = None


class ConflictScorer:
    """Matches `ConflictPredicted` events to observed breach episodes (see module docstring).

    Feed it every conflict event in event-time order (`observe`); read `precision`,
    `recall`, `lead_times_s` at any time. Predictions still open count as pending in
    precision until they are hit, cleared or ``horizon`` windows past their last window.
    """

    def __init__(self, step_ms: int, horizon: int) -> None:
        self.step_ms = step_ms
        self.horizon = horizon
        self.predictions: dict[str, _Prediction] = {}
        self.episodes: list[_Episode] = []
        self._open_episode: dict[str, _Episode] = {}
        self._now_ms = 0

    def observe(self, event: ConflictPredicted | ConflictObserved) -> None:
        if isinstance(event, ConflictPredicted):
            self._now_ms = max(self._now_ms, event.emitted_at_ms)
            pred = self.predictions.get(event.conflict_id)
            if pred is None:
                pred = self.predictions[event.conflict_id] = _Prediction(
                    event.conflict_id,
                    event.resource,
                    event.emitted_at_ms,
                    event.expected_start_ms,
                    event.expected_end_ms,
                )
            if event.status == "cleared":
                pred.cleared_ms = event.emitted_at_ms
            else:
                pred.expected_start_ms = min(pred.expected_start_ms, event.expected_start_ms)
                pred.expected_end_ms = max(pred.expected_end_ms, event.expected_end_ms)
            return
        self._now_ms = max(self._now_ms, event.window_end_ms)
        start = event.window_start_ms
        episode = self._open_episode.get(event.resource)
        if episode is not None and start == episode.last_ms + self.step_ms:
            episode.last_ms = start
        else:
            episode = _Episode(event.resource, start, start)
            self._open_episode[event.resource] = episode
            self.episodes.append(episode)
            self._credit_episode(episode)
        self._credit_breach(event.resource, start)

    def _credit_episode(self, episode: _Episode) -> None:
        best: _Prediction | None = None
        for pred in self.predictions.values():
            if pred.resource != episode.resource:
                continue
            ahead = pred.first_emitted_ms <= episode.start_ms - self.step_ms
            open_then = pred.cleared_ms is None or pred.cleared_ms > episode.start_ms
            if (
                ahead
                and open_then
                and (best is None or pred.first_emitted_ms < best.first_emitted_ms)
            ):
                best = pred
        if best is not None:
            episode.predicted_by = best.conflict_id
            episode.lead_ms = episode.start_ms - best.first_emitted_ms

    def _credit_breach(self, resource: str, window_start_ms: int) -> None:
        reach = self.horizon * self.step_ms
        for pred in self.predictions.values():
            if pred.resource != resource or pred.hit:
                continue
            alive_until = math.inf if pred.cleared_ms is None else pred.cleared_ms
            upper = max(alive_until, pred.expected_end_ms) + reach
            if pred.first_emitted_ms <= window_start_ms <= upper:
                pred.hit = True

    @property
    def recall(self) -> float | None:
        if not self.episodes:
            return None
        return sum(1 for e in self.episodes if e.predicted_by is not None) / len(self.episodes)

    @property
    def decided(self) -> list[_Prediction]:
        """The predictions judged so far: hit, or expired without a breach."""
        return [p for p in self.predictions.values() if p.hit or self._expired(p)]

    @property
    def precision(self) -> float | None:
        decided = self.decided
        if not decided:
            return None
        return sum(1 for p in decided if p.hit) / len(decided)

    def _expired(self, pred: _Prediction) -> bool:
        end = pred.cleared_ms if pred.cleared_ms is not None else pred.expected_end_ms
        return self._now_ms > max(end, pred.expected_end_ms) + self.horizon * self.step_ms

    @property
    def lead_times_s(self) -> list[float]:
        return [e.lead_ms / 1000 for e in self.episodes if e.lead_ms is not None]
