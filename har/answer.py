"""The answer for one scored recording: a typed structure, the same for every way in.

`answer_for` is the one place that turns a prepared recording and its model's probabilities into an
`Answer` (what it was, which model, the timeline, its episodes, the estimated minutes per activity with
their interval and per-window basis, the counted minutes, wear,
smoothing, the findings in words, and the recording's drift where a reference was given). Adapters
read it by name and write it out as they must: `Answer.to_builtins()` is the JSON form that
`POST /recordings` answers, `serve.batch` writes as recording.json and the study store keeps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import numpy as np

from har.minutes import MinutesEstimator, half_widths, minutes_figures, sums, window_shares
from har.modelfile import ModelCard
from har.smoothing import smooth
from har.timeline import summarize, wall_clock
from har.wear import WearRule, wear_report
from har.windows import window_spans

if TYPE_CHECKING:
    from har.scoring import PreparedRecording


class RecordingSummary(msgspec.Struct):
    """What was scored: the recording's id, its wall-clock start, and what fusion made of it."""

    id: str | None
    start_time: str | None  # ISO wall-clock time of t == 0, where the source says
    fused_samples: int | None
    fused_seconds: float | None
    segments: int | None
    quality: dict  # quality_summary: samples read, duplicates, order, gaps, per sensor


class AnsweredBy(msgspec.Struct):
    """Which model answered (the sha256 tells two builds of one version apart), and for whom."""

    name: str
    version: str
    sha256: str
    subject: str | None
    personal: bool


class Wear(msgspec.Struct):
    """har.wear.wear_report: worn and not-worn minutes, the non-wear episodes, the rule that marked them."""

    worn_minutes: float
    not_worn_minutes: float
    episodes: list[dict]
    rule: dict


class Smoothing(msgspec.Struct):
    switch_probability: float
    text: str


class MinutesEstimate(msgspec.Struct):
    """How `minutes_per_activity` and `minutes_interval_90` were estimated (har/minutes.py)."""

    method: str
    switch_probability: float  # of the HMM posteriors summed (0: the calibrated probabilities)
    interval_scale: float | None  # q: half-width = q x spread (None: the model carries no interval)
    coverage: float
    text: str


class MinutesBasis(msgspec.Struct):
    """What the estimate is made of, per worn window in time order: the span it owns ([start_s, end_s), seconds
    after the recording's start) and its share of each activity (`labels.activities` order, 4 decimals). Days,
    hours and overlapping recordings add these up (the study store keeps them: store/summaries.py)."""

    start_s: list[float]
    end_s: list[float]
    shares: list[list[float]]
    interval_scale: float | None


class Answer(msgspec.Struct, omit_defaults=True):
    """One recording, scored. The timeline and episodes are tables: one dict per window and per run of
    equal labels (har/timeline.py says what their columns are). `minutes_per_activity` is the estimate
    (har/minutes.py), with its 90 % interval beside it; `counted_minutes_per_activity` counts the timeline's
    confident labels (for reference: it leaves out the uncertain time)."""

    recording: RecordingSummary
    model: AnsweredBy
    windows: int
    window_s: float
    covered_minutes: float
    labels: dict  # the model's activities and what the two states (not_worn, uncertain) mean
    abstain_threshold: float
    timeline: list[dict]
    episodes: list[dict]
    minutes_per_activity: dict[str, float]
    minutes_interval_90: dict[str, list[float] | None]
    counted_minutes_per_activity: dict[str, float]
    uncertain_minutes: float
    not_worn_minutes: float
    wear: Wear
    smoothing: Smoothing
    findings: list[str]
    minutes_estimate: MinutesEstimate
    minutes_basis: MinutesBasis
    drift: dict | None = None  # this recording alone against the model's training reference, where one was given

    def to_builtins(self) -> dict:
        """The JSON form (dicts, lists, numbers, strings), fields in declaration order: what the adapters write."""
        return msgspec.to_builtins(self, enc_hook=plain_number)


def plain_number(value):
    """numpy scalars and arrays (drift statistics, fusion counts) as the Python values they hold."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise NotImplementedError(f"cannot put a {type(value).__name__} into an answer")


QUALITY_KEYS = ("samples_read", "duplicates", "out_of_order", "gaps", "gap_seconds", "native_hz")


def quality_summary(quality: dict) -> dict:
    """What a reader of the answer needs from fusion's report: samples read, duplicates, order, gaps, per sensor."""
    return {"fused_samples": quality.get("samples_written"), "fused_seconds": quality.get("fused_seconds"),
            "segments": quality.get("segments"),
            **{sensor: {k: quality[sensor][k] for k in QUALITY_KEYS if k in quality[sensor]}
               for sensor in ("acc", "gyr") if isinstance(quality.get(sensor), dict)}}


def fusion_report(recording: dict) -> dict:
    """The fusion report a prepared recording carries, rebuilt from an answer's `recording` entry (the JSON form
    of RecordingSummary, as the study store keeps it): what re-scoring a stored fused table starts from."""
    summary = recording.get("quality") or {}
    return {"samples_written": recording["fused_samples"], "fused_seconds": recording["fused_seconds"],
            "segments": recording["segments"],
            **{sensor: summary[sensor] for sensor in ("acc", "gyr") if isinstance(summary.get(sensor), dict)}}


def findings(answer: Answer) -> list[str]:
    """The answer in plain words, for what a reader would otherwise misread (a watch on a desk, say)."""
    total = answer.covered_minutes
    lines = []
    if answer.not_worn_minutes > 0:
        lines.append(f"not worn for {answer.not_worn_minutes:.1f} of {total:.1f} min "
                     f"({len(answer.wear.episodes)} non-wear episode(s)); no activity is given for that time")
    if answer.uncertain_minutes > 0:
        lines.append(f"uncertain for {answer.uncertain_minutes:.1f} min: the model's calibrated confidence was "
                     f"below {answer.abstain_threshold:.2f}")
    if total > 0 and sum(answer.minutes_per_activity.values()) == 0:
        lines.append("no activity could be reported for this recording")
    return lines


def estimated_minutes(prepared: PreparedRecording, probabilities: np.ndarray, card: ModelCard,
                      smoothed: np.ndarray) -> dict:
    """The answer's minutes fields (har/minutes.py): the estimate over every worn window, its interval, the
    estimator and its per-window basis. `smoothed`: the timeline's posteriors (reused when the estimator sums
    posteriors at the same switch probability)."""
    estimator = MinutesEstimator.from_card(card)
    worn_start = prepared.start_s[prepared.worn]
    spans = window_spans(prepared.start_s, prepared.preprocessing.window_s)[prepared.worn]
    same = card.switch_probability == estimator.switch_probability
    shares = window_shares(probabilities, worn_start, prepared.preprocessing.step_s, estimator.switch_probability,
                           smoothed if same else None).reshape(len(spans), len(card.labels))
    seconds = spans[:, 1] - spans[:, 0]
    estimate_s, spread_s = sums(shares, seconds)
    estimate, interval = minutes_figures(card.labels, estimate_s, half_widths(spread_s, estimator),
                                         float(seconds.sum()))
    return {"minutes_per_activity": estimate, "minutes_interval_90": interval,
            "minutes_estimate": MinutesEstimate(**estimator.describe()),
            "minutes_basis": MinutesBasis(start_s=spans[:, 0].tolist(), end_s=spans[:, 1].tolist(),
                                          shares=shares.tolist(), interval_scale=estimator.interval_scale)}


def answer_for(prepared: PreparedRecording, probabilities: np.ndarray, card: ModelCard, wear_rule: WearRule, *,
               subject: str | None = None, personal: bool = False, drift: dict | None = None) -> Answer:
    """The whole answer for a prepared recording and its model's probabilities for the worn windows
    (`prepared.worn_windows`).

    When the model carries a timeline smoother, the labels and confidences are its posteriors. Counted minutes
    per activity, uncertain and not-worn minutes are counted here and nowhere else (har.timeline.summarize); the
    estimated minutes and their interval are made here and nowhere else (har.minutes, `estimated_minutes`).
    `subject` and `personal` say whose model `card` is.
    """
    window_s = prepared.preprocessing.window_s  # as the windows were cut (the card's own preprocessing)
    posteriors = probabilities
    if card.switch_probability:  # activities last minutes: each run of consecutive worn windows is smoothed
        posteriors = smooth(probabilities, prepared.start_s[prepared.worn], prepared.preprocessing.step_s,
                            card.switch_probability)
    quality = prepared.quality
    summary = summarize(prepared.start_s, prepared.worn, posteriors, card.labels, window_s=window_s,
                        threshold=card.abstain_threshold, start_time=prepared.start_time)
    summary.update(estimated_minutes(prepared, probabilities, card, posteriors))
    answer = Answer(
        recording=RecordingSummary(id=prepared.recording_id, start_time=prepared.start_time,
                                   fused_samples=quality["samples_written"], fused_seconds=quality["fused_seconds"],
                                   segments=quality["segments"], quality=quality_summary(quality)),
        model=AnsweredBy(**card.identity(), subject=subject, personal=personal),
        **summary,
        wear=Wear(**wear_report(prepared.nonwear, float(quality["fused_seconds"]), wear_rule,
                                clock=wall_clock(prepared.start_time))),
        smoothing=Smoothing(switch_probability=card.switch_probability,
                            text="HMM posteriors over consecutive worn windows (har/smoothing.py)"
                            if card.switch_probability else "off: each window on its own"),
        findings=[], drift=drift)
    answer.findings = findings(answer)
    return answer
