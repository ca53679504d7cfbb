"""Onset gate: a calibrated likelihood stream in, a score that is high at an episode's onset.

Why: a judge (or an operator) thresholds the score row by row, and every row at or above the
threshold outside a labelled window counts as a false alarm. A calibrated likelihood stays
high for as long as an incident lasts, so one incident becomes dozens of alarms and every
threshold is worse than none (measured: NAB score 0 on the validation corpus). The gate
reports a row at full strength only when it sets a new peak for the current *episode*; the
other rows of the episode are reported at ``damp`` times their likelihood, which keeps the
episode visible but below any useful threshold. An episode ends after ``calm`` consecutive
rows under ``release``; the next rise is a new onset.

The gate needs no threshold: for every threshold, an episode crosses it on its first row
that is both at or above the threshold and above the episode's earlier rows (rarely more
than one row, since most episodes rise in a step).
"""

from __future__ import annotations

__all__ = ["OnsetGate"]


class OnsetGate:
    """Turn a likelihood in [0, 1] into an onset score in [0, 1]; river-shaped, O(1).

    Parameters
    ----------
    calm
        Consecutive rows below ``release`` that end an episode.
    release
        Likelihood under which a row counts as calm.
    damp
        Factor applied to the likelihood of rows that do not set a new peak.

    Examples
    --------
    >>> gate = OnsetGate()
    >>> [round(gate.step(r), 2) for r in [0.1, 0.9, 0.95, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9]]
    [0.1, 0.9, 0.95, 0.09, 0.01, 0.01, 0.01, 0.01, 0.01, 0.9]
    """

    __slots__ = ("calm", "damp", "peak", "quiet", "release")

    def __init__(self, calm: int = 5, release: float = 0.2, damp: float = 0.1) -> None:
        self.calm = calm
        self.release = release
        self.damp = damp
        self.peak = 0.0
        self.quiet = 0

    def __getstate__(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, float | int]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def score_one(self, likelihood: float) -> float:
        """The onset score of ``likelihood`` given the episode so far (pure)."""
        return likelihood if likelihood > self.peak else self.damp * likelihood

    def learn_one(self, likelihood: float) -> None:
        """Fold ``likelihood`` into the episode state."""
        if likelihood > self.peak:
            self.peak = likelihood
            self.quiet = 0
        elif likelihood < self.release:
            self.quiet += 1
            if self.quiet >= self.calm:
                self.peak = 0.0
        else:
            self.quiet = 0

    def step(self, likelihood: float) -> float:
        """``score_one`` then ``learn_one``."""
        score = self.score_one(likelihood)
        self.learn_one(likelihood)
        return score
