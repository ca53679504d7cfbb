"""Episode suppression, in one place: one alarm per anomaly episode.

An *episode* starts with the first anomalous value while the gate is armed (that value is the
alarm) and lasts until ``calm_steps`` consecutive calm values have been seen; only then can the
next anomalous value raise an alarm. `EpisodeGate` is that rule, and both callers use it: the
detector's own ``is_anomaly`` (anomalous = likelihood at its threshold, calm = under
``release`` times it, values in between neither) and the engine's `AnomalyEpisodes` (which
also keeps anomalous values out of the forecaster's training, for a bounded run).

Pure, O(1), picklable; imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EpisodeGate:
    """One alarm per episode: armed → alarm → ``calm_steps`` calm values → armed.

    >>> gate = EpisodeGate(calm_steps=2)
    >>> [gate.observe(a) for a in (True, True, False, True, False, False, True)]
    [True, False, False, False, False, False, True]

    A value that is neither anomalous nor calm (``calm=False``) restarts the count:

    >>> gate = EpisodeGate(calm_steps=2)
    >>> [gate.observe(a, c) for a, c in ((True, False), (False, True), (False, False),
    ...                                  (False, True), (False, True), (True, False))]
    [True, False, False, False, False, True]
    """

    calm_steps: int = 30
    armed: bool = True
    calm: int = 0

    def observe(self, anomalous: bool, calm: bool = True) -> bool:
        """Learn one value's verdict; True when it is an alarm (an episode's first value)."""
        if anomalous:
            alarm = self.armed
            self.armed = False
            self.calm = 0
            return alarm
        if not self.armed:
            if calm:
                self.calm += 1
                if self.calm >= self.calm_steps:
                    self.armed = True
            else:
                self.calm = 0
        return False


@dataclass(slots=True)
class AnomalyEpisodes:
    """Turns per-window detector verdicts into the engine's alarms and training decisions.

    A value is *anomalous* when the detector says so and, once the forecaster is calibrated,
    it also falls outside the forecaster's widest interval: the detector knows daily shapes
    only, the forecaster knows weekly ones too, so a quiet Saturday is not an incident.
    Anomalous values are kept out of the forecaster's training — but at most ``max_masked``
    windows in a row: a shift that lasts longer is the new normal and must be learned, or the
    forecaster would stay blind to it forever. One alarm per episode (`EpisodeGate`).

    >>> episodes = AnomalyEpisodes(max_masked=2, gate=EpisodeGate(calm_steps=1))
    >>> [episodes.judge(True, None) for _ in range(3)]  # the third is learned: a new normal
    [(True, False), (False, False), (False, True)]
    >>> episodes.judge(True, False)  # inside the forecaster's interval: not anomalous
    (False, True)
    """

    max_masked: int = 30
    masked_run: int = 0
    gate: EpisodeGate = field(default_factory=EpisodeGate)

    def judge(self, in_anomaly: bool, outside_forecast: bool | None) -> tuple[bool, bool]:
        """Return ``(alarm, trusted)`` for one window."""
        anomalous = in_anomaly and outside_forecast is not False
        trusted = not anomalous or self.masked_run >= self.max_masked
        self.masked_run = self.masked_run + 1 if anomalous else 0
        return self.gate.observe(anomalous), trusted
