"""Conflicts on shared resources, predicted from the forecasts of the subsystems that use them.

Modules: ``demand`` (the distribution of a resource's total demand and the probability it
exceeds capacity), ``predictor`` (`ConflictPredictor`: one lifecycle per resource, predicted
-> updated -> cleared, and observed breaches), ``saturation`` (`SaturationWatch`: one
subsystem metric crossing its limit).
"""

from app.core.conflicts.demand import (
    MarginalPath,
    TotalDemand,
    combine_sigmas,
    exceedance_probability,
    level_z,
    marginal_path,
    total_demand,
)
from app.core.conflicts.predictor import ConflictPredictor, ConflictView, Episode
from app.core.conflicts.saturation import SaturationWatch

__all__ = [
    "ConflictPredictor",
    "ConflictView",
    "Episode",
    "MarginalPath",
    "SaturationWatch",
    "TotalDemand",
    "combine_sigmas",
    "exceedance_probability",
    "level_z",
    "marginal_path",
    "total_demand",
]
