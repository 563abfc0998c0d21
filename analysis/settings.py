"""Settings of the analysis: every measure's knobs, with defaults, validated, recorded in fits.json.

`AnalysisSettings()` gives the defaults of DESIGN.md "Measures"; `AnalysisSettings.from_dict(d)`
builds one from a plain mapping (e.g. parsed YAML), refusing unknown names with the accepted ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AnalysisSettings:
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "resamples of replicates per bootstrap (>= 1; 1000+ for papers)"}
    )
    confidence: float = field(default=0.95, metadata={"help": "coverage of every interval, in (0, 1)"})
    resampling: str = field(
        default="bootknife",
        metadata={"help": "bootknife (leave one replicate out, draw R from R - 1: unbiased variance) or bootstrap"},
    )
    expand_intervals: bool = field(
        default=True,
        metadata={"help": "expanded percentile intervals: widen by Student-t quantiles for the replicates' df"},
    )
    icl_k_min: int = field(default=1, metadata={"help": "smallest k in the ICL strength fit (>= 1: log2 k)"})
    icl_k_max: int | None = field(default=None, metadata={"help": "largest k in the fit; None = all"})
    icl_description: str = field(
        default="auto",
        metadata={"help": "description variant of the rows used for acc(k): none, model, human, or auto "
                          "(the few-shot rows' own variant; none where several)"},
    )
    target_normalised_accuracy: float = field(
        default=0.5,
        metadata={"help": "sample need target: (acc - chance) / (1 - chance), same for every instance; on the "
                          "label's log-likelihood the same fraction of the way from log(chance) to 0"},
    )
    extrapolation_factor: float = field(
        default=1.0,
        metadata={"help": "the saturating check's N* is reported only within [n_min / f, n_max * f] (the "
                          "estimate itself, by monotone interpolation, is censored at n_min and n_max)"},
    )
    robust_loss: str = field(default="soft_l1", metadata={"help": "least_squares loss: soft_l1 or huber"})
    loss_scale: float = field(
        default=0.05, metadata={"help": "residual (accuracy units) beyond which the loss turns robust"}
    )
    slope_bounds: tuple[float, float] = field(
        default=(0.05, 8.0), metadata={"help": "logistic slope per doubling of n (logit units)"}
    )
    midpoint_margin_doublings: float = field(
        default=6.0, metadata={"help": "the midpoint may lie this many doublings outside the n range"}
    )
    fit_starts: int = field(
        default=6, metadata={"help": "least_squares runs per acc(n) fit, from the best points of a start grid"}
    )
    min_models_for_law: int = field(
        default=3, metadata={"help": "fewer instances with an S interval above 0 and an N* (reached or censored) "
                                     "make the verdict inconclusive"}
    )
    min_valid_resample_fraction: float = field(
        default=0.9,
        metadata={"help": "below this fraction of resamples with a comparable pair the verdict is inconclusive"},
    )
    fit_share: float = field(
        default=0.5, metadata={"help": "a training regime fits its objective on an instance when the lowest "
                                       "training loss its search reached is at most this share of chance (ln C; "
                                       "ln 2 for DPO), in (0, 1]"}
    )
    include_unlisted_records: bool = field(
        default=False, metadata={"help": "analyse records whose cell_id is not in cells.json"}
    )
    figures: bool = field(default=True, metadata={"help": "draw the figures (off: fits, tables, report only)"})
    dpi: int = field(default=200, metadata={"help": "resolution of the PNG figures"})

    def __post_init__(self) -> None:
        _require(self.bootstrap_resamples >= 1, "bootstrap_resamples", self.bootstrap_resamples, "an int >= 1")
        _require(0 < self.confidence < 1, "confidence", self.confidence, "a number in (0, 1)")
        _require(0 < self.fit_share <= 1, "fit_share", self.fit_share, "a number in (0, 1]")
        _require(self.resampling in ("bootknife", "bootstrap"), "resampling", self.resampling,
                 "bootknife, bootstrap")
        _require(self.icl_description in ("auto", "none", "model", "human"), "icl_description",
                 self.icl_description, "auto, none, model, human")
        _require(self.icl_k_min >= 1, "icl_k_min", self.icl_k_min, "an int >= 1 (log2 k needs k >= 1)")
        _require(
            self.icl_k_max is None or self.icl_k_max > self.icl_k_min,
            "icl_k_max", self.icl_k_max, f"None or an int > icl_k_min ({self.icl_k_min})",
        )
        _require(
            0 < self.target_normalised_accuracy < 1,
            "target_normalised_accuracy", self.target_normalised_accuracy, "a number in (0, 1)",
        )
        _require(self.extrapolation_factor >= 1, "extrapolation_factor", self.extrapolation_factor, ">= 1")
        _require(self.robust_loss in ("soft_l1", "huber"), "robust_loss", self.robust_loss, "soft_l1, huber")
        _require(self.loss_scale > 0, "loss_scale", self.loss_scale, "a number > 0")
        low, high = self.slope_bounds
        _require(0 < low < high, "slope_bounds", self.slope_bounds, "(low, high) with 0 < low < high")
        _require(self.midpoint_margin_doublings >= 0, "midpoint_margin_doublings",
                 self.midpoint_margin_doublings, ">= 0")
        _require(1 <= self.fit_starts <= 72, "fit_starts", self.fit_starts, "an int in [1, 72]")
        _require(self.min_models_for_law >= 2, "min_models_for_law", self.min_models_for_law, "an int >= 2")
        _require(0 <= self.min_valid_resample_fraction <= 1, "min_valid_resample_fraction",
                 self.min_valid_resample_fraction, "a number in [0, 1]")
        _require(self.dpi >= 50, "dpi", self.dpi, "an int >= 50")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "AnalysisSettings":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown analysis setting(s) {unknown}; accepted: {sorted(known)}")
        if "slope_bounds" in values:
            values["slope_bounds"] = tuple(values["slope_bounds"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slope_bounds"] = list(self.slope_bounds)
        return out


def coerce_settings(settings: "AnalysisSettings | dict[str, Any] | None") -> AnalysisSettings:
    if isinstance(settings, AnalysisSettings):
        return settings
    return AnalysisSettings.from_dict(settings)


def _require(ok: bool, name: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ValueError(f"analysis setting {name}={value!r} is invalid; accepted: {accepted}")
