"""Onset gate: a calibrated likelihood stream in, a score that is high at an episode's onset.

Why: a judge (or an operator) thresholds the score row by row, and every row at or above the
threshold outside a labelled window counts as a false alarm. A calibrated likelihood stays
high for as long as an incident lasts, so one incident becomes dozens of alarms and every
threshold is worse than none (measured: NAB score 0 on the validation corpus). The gate
reports a row at full strength only when it sets a new peak for the current *episode*; the
other rows of the episode are reported at ``damp`` times their likelihood, which keeps the
episode visible but below any useful threshold. An episode ends after ``calm`` consecutive
rows under ``release``; the next rise is a new onset. Once an episode has risen past
``release``, a later row must beat the reported peak by ``margin`` to be reported again: a
likelihood that creeps up (a flatline growing longer, an incident deepening row by row)
would otherwise set a new peak, and be one more alarm row, on every row (measured: 16 alarm
rows on one flatline of the validation corpus).

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
    margin
        Once the peak is past ``release``, how much a row must exceed it to count as a new
        peak. The price: an episode that peaked at 0.45 reports a later 0.62 at a tenth, and
        one that peaked at 0.8 or more reports nothing more in full.

    Examples
    --------
    >>> gate = OnsetGate()
    >>> [round(gate.step(r), 2) for r in [0.1, 0.8, 0.85, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9]]
    [0.1, 0.8, 0.09, 0.08, 0.01, 0.01, 0.01, 0.01, 0.01, 0.9]
    >>> creep = OnsetGate()
    >>> [round(creep.step(r), 2) for r in [0.5, 0.6, 0.7, 0.75]]  # a creeping rise
    [0.5, 0.06, 0.07, 0.75]
    """

    __slots__ = ("calm", "damp", "margin", "peak", "quiet", "release")

    def __init__(
        self, calm: int = 5, release: float = 0.2, damp: float = 0.1, margin: float = 0.2
    ) -> None:
        self.calm = calm
        self.release = release
        self.damp = damp
        self.margin = margin
        self.peak = 0.0
        self.quiet = 0

    def __getstate__(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, float | int]) -> None:
        self.margin = 0.0  # snapshots from before the margin behave as they did
        for k, v in state.items():
            setattr(self, k, v)

    def _rises(self, likelihood: float) -> bool:
        """Whether ``likelihood`` is a new peak of the episode (see ``margin``)."""
        if self.peak < self.release:
            return likelihood > self.peak
        return likelihood > self.peak + self.margin

    def score_one(self, likelihood: float) -> float:
        """The onset score of ``likelihood`` given the episode so far (pure)."""
        return likelihood if self._rises(likelihood) else self.damp * likelihood

    def learn_one(self, likelihood: float) -> None:
        """Fold ``likelihood`` into the episode state."""
        if self._rises(likelihood):
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
