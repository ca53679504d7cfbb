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
    forecaster would stay blind to it forever. Nor is a value masked when values at the same
    time of day (within ``recur_slot_ms``) were masked on one of the previous ``recur_days``
    days: a surprise that comes back at the same hour — the 09:00 log-in surge, a scheduled
    job — is the daily shape, not an incident, and masking it every day would keep the
    forecaster from ever learning it. One alarm per episode (`EpisodeGate`).

    >>> episodes = AnomalyEpisodes(max_masked=2, gate=EpisodeGate(calm_steps=1))
    >>> [episodes.judge(True, None) for _ in range(3)]  # the third is learned: a new normal
    [(True, False), (False, False), (False, True)]
    >>> episodes.judge(True, False)  # inside the forecaster's interval: not anomalous
    (False, True)
    >>> ep, day = AnomalyEpisodes(), 86_400_000
    >>> ep.judge(True, True, ts_ms=9 * 3_600_000)  # day 0, 09:00: alarm, kept out of training
    (True, False)
    >>> ep.judge(True, True, ts_ms=day + 9 * 3_600_000)  # day 1, same hour: learned
    (False, True)
    """

    max_masked: int = 30
    masked_run: int = 0
    gate: EpisodeGate = field(default_factory=EpisodeGate)
    recur_slot_ms: int = 900_000
    recur_days: int = 7
    #: time-of-day slot -> last day a value in it was masked
    masked_slots: dict[int, int] = field(default_factory=dict)

    def judge(
        self, in_anomaly: bool, outside_forecast: bool | None, ts_ms: int | None = None
    ) -> tuple[bool, bool]:
        """Return ``(alarm, trusted)`` for one window (starting at ``ts_ms``, if known)."""
        anomalous = in_anomaly and outside_forecast is not False
        trusted = not anomalous or self.masked_run >= self.max_masked
        if not trusted and ts_ms is not None:
            day, slot = divmod(ts_ms // self.recur_slot_ms, 86_400_000 // self.recur_slot_ms)
            last = max(self.masked_slots.get(s, -(1 << 30)) for s in (slot - 1, slot, slot + 1))
            if 0 < day - last <= self.recur_days:
                trusted = True  # masked at this hour before: the daily shape, learn it
            else:
                self.masked_slots[slot] = day
        self.masked_run = self.masked_run + 1 if anomalous else 0
        return self.gate.observe(anomalous), trusted
