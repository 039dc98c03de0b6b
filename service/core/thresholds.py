"""The similarity thresholds the service applies by default: the manifest's calibrated values for the trunk
(`bench.calibrate`, docs/thresholds.md), unless the settings override them."""

from __future__ import annotations

from dataclasses import dataclass

from service.models.manifest import ModelEntry

# Used only when the manifest carries no calibrated thresholds (e.g. a custom embedder).
FALLBACK_THRESHOLD = 0.4
VERIFY_KEY = "best_accuracy"  # best verification accuracy on LFW pairsDevTrain
IDENTIFY_KEY = "far_1e-3"  # false-accept rate <= 1e-3 on LFW pairsDevTrain: a search compares with many subjects


@dataclass(frozen=True)
class Thresholds:
    verify: float
    identify: float

    @classmethod
    def of(cls, trunk: ModelEntry, verify: float | None = None, identify: float | None = None) -> Thresholds:
        calibrated = trunk.thresholds
        return cls(
            verify=calibrated.get(VERIFY_KEY, FALLBACK_THRESHOLD) if verify is None else verify,
            identify=calibrated.get(IDENTIFY_KEY, FALLBACK_THRESHOLD) if identify is None else identify,
        )
