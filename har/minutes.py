"""Minutes per activity as an estimate of its own, with a 90 % interval: not a count of confident labels.

A researcher reads minutes per activity per person and day. Counting the timeline's confident labels
(`counted_minutes_per_activity`, the reference) drops the `uncertain` time and keeps every systematic
confusion, so the minutes are estimated the way quantification methods estimate class shares, over
every worn window of a recording or a local day:

- **The estimate** (`minutes_per_activity`): probability sums (PCC). Each worn window owns the seconds
  until the next window starts (har.windows.window_spans) and gives each activity its *share*: the
  window's posterior under an HMM over consecutive worn windows (har/smoothing.py) with the estimator's
  own switch probability (0: the calibrated probabilities themselves). An activity's minutes are the
  sum of share x seconds. The sum is additive: a day, an hour or a span of overlapping recordings adds
  up the pieces each window owns, exactly (the study store keeps each scoring's shares for that,
  store/summaries.py).
- **The interval** (`minutes_interval_90`): [estimate - h, estimate + h], cut at 0 and at the worn
  minutes, with h = q x the *spread*, the sum over windows of seconds x share x (1 - share): how much of
  an activity's time the model was unsure about. q is a split-conformal quantile fitted on validation
  people: the smallest scale at which 90 % of their activity-sequences' true minutes fall inside. The
  spread is additive too, and so are the half-widths of several recordings (which treats their errors
  as fully dependent: a person's confusions repeat from one recording to the next).

The switch probability and q are chosen on the validation people (`choose`, called by stages/evaluate.py)
and travel in the model card's calibration (`minutes`). Other estimators are measured beside it by
stages/sessions.py (`candidate_estimates`: the count, argmax counts, PACC adjusted by the validation
confusion matrix with `adjusted`, EMQ's prior re-estimation per person-day with `emq`); docs/sessions.md
says why PCC was kept. Functions over arrays; har/answer.py puts them together for a recording.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from har.smoothing import day_like_order, hmm_posteriors, smooth

SHARE_DECIMALS = 4  # shares as the answer and the store keep them: each window's sum stays within 0.0006 of 1
COVERAGE = 0.9
METHOD = "pcc"
DESCRIPTION = ("probability sums (PCC) over every worn window, uncertain ones included: each window's HMM posterior "
               "x the seconds it owns; 90 % interval from a conformal scale fitted on validation people (har/minutes.py)")


@dataclass(frozen=True)
class MinutesEstimator:
    """How a model's minutes are estimated: the switch probability of the posteriors summed, and the interval's
    scale q (None for a model exported without one: its intervals are null)."""

    switch_probability: float
    interval_scale: float | None
    coverage: float = COVERAGE
    method: str = METHOD

    @classmethod
    def from_card(cls, card) -> "MinutesEstimator":
        """The card's `calibration.minutes` (stages/export.py stamps what stages/evaluate.py chose); a model
        without it sums its timeline's own posteriors and gives no interval."""
        settings = card.calibration.get("minutes") or {}
        if not settings:
            return cls(switch_probability=card.switch_probability, interval_scale=None)
        if settings.get("method", METHOD) != METHOD:
            raise ValueError(f"model {card.name} {card.version}: minutes method {settings['method']!r} is not one "
                             f"this service computes (expected {METHOD!r})")
        scale = settings.get("interval_scale")
        return cls(switch_probability=float(settings["switch_probability"]),
                   interval_scale=None if scale is None else float(scale),
                   coverage=float(settings.get("coverage", COVERAGE)))

    def describe(self) -> dict:
        return {"method": self.method, "switch_probability": self.switch_probability,
                "interval_scale": self.interval_scale, "coverage": self.coverage, "text": DESCRIPTION}


# ---------------------------------------------------------------- per window

def rounded_shares(posteriors: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(posteriors, dtype=np.float64), SHARE_DECIMALS)


def window_shares(probabilities: np.ndarray, start_s: np.ndarray, step_s: float, switch_probability: float,
                  smoothed: np.ndarray | None = None) -> np.ndarray:
    """Each worn window's share of each activity [n, K]: its posterior over consecutive worn windows (each run
    smoothed on its own, har.smoothing.smooth) or, at switch probability 0, its calibrated probabilities.
    `smoothed`: the posteriors at this switch probability where the caller has them already (the timeline's)."""
    if smoothed is None:
        smoothed = (smooth(probabilities, start_s, step_s, switch_probability) if switch_probability
                    else probabilities)
    return rounded_shares(smoothed)


def sequence_shares(probabilities: np.ndarray, switch_probability: float) -> np.ndarray:
    """Shares of one run of consecutive windows (a validation day-like sequence)."""
    return rounded_shares(hmm_posteriors(probabilities, switch_probability) if switch_probability
                          else probabilities)


def spread(shares: np.ndarray) -> np.ndarray:
    """Each window's uncertainty about each activity, share x (1 - share): 0 where it is sure either way."""
    shares = np.asarray(shares, dtype=np.float64)
    return shares * (1.0 - shares)


def sums(shares: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, spread) in seconds per activity over windows owning `seconds` each (or any pieces of them,
    with the share of the window each piece belongs to)."""
    shares = np.asarray(shares, dtype=np.float64)  # [n, K]
    seconds = np.asarray(seconds, dtype=np.float64)
    return seconds @ shares, seconds @ spread(shares)


def clipped_sums(start_s: np.ndarray, end_s: np.ndarray, shares: np.ndarray, low: float,
                 high: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(estimate, spread, worn) seconds over the part [low, high) of windows owning [start_s, end_s) each."""
    seconds = np.clip(np.minimum(end_s, high) - np.maximum(start_s, low), 0.0, None)
    estimate, spread_s = sums(shares, seconds)
    return estimate, spread_s, float(seconds.sum())


# ---------------------------------------------------------------- the figures a reader gets

def interval_seconds(estimate_s: np.ndarray, half_s: np.ndarray | None, worn_s: float) -> np.ndarray | None:
    """[low, high] seconds per activity [K, 2]: estimate -/+ half-width, cut at 0 and at the worn time
    (None without a half-width)."""
    if half_s is None:
        return None
    estimate_s, half_s = np.asarray(estimate_s, float), np.asarray(half_s, float)
    return np.column_stack([np.maximum(estimate_s - half_s, 0.0), np.minimum(estimate_s + half_s, max(worn_s, 0.0))])


def as_minutes(seconds) -> float:
    return round(float(seconds) / 60.0, 3)


def figures_of(activities: list[str], estimate_s, bounds: np.ndarray | None) -> tuple[dict, dict]:
    """(minutes_per_activity, minutes_interval_90) as a reader gets them from seconds: minutes to 3 decimals,
    each interval [low, high] or None (no bounds)."""
    estimate = {a: as_minutes(s) for a, s in zip(activities, estimate_s)}
    interval = {a: None if bounds is None else [as_minutes(bounds[k, 0]), as_minutes(bounds[k, 1])]
                for k, a in enumerate(activities)}
    return estimate, interval


def minutes_figures(activities: list[str], estimate_s: np.ndarray, half_s: np.ndarray | None,
                    worn_s: float) -> tuple[dict, dict]:
    """`figures_of` an estimate and its half-widths (None where the model carries no interval scale)."""
    return figures_of(activities, estimate_s, interval_seconds(estimate_s, half_s, worn_s))


def half_widths(spread_s: np.ndarray, estimator: MinutesEstimator) -> np.ndarray | None:
    return None if estimator.interval_scale is None else estimator.interval_scale * np.asarray(spread_s, float)


# ---------------------------------------------------------------- choosing on validation people

def minutes_error(estimates, truths) -> float:
    """Σ |estimate - true| over sequences and activities / Σ true minutes (errors of two sequences never cancel)."""
    estimates, truths = np.asarray(estimates, float), np.asarray(truths, float)
    return float(np.abs(estimates - truths).sum() / max(truths.sum(), 1e-9))


def conformal_scale(estimates, truths, spreads, coverage: float = COVERAGE) -> float:
    """The split-conformal quantile of |estimate - true| / spread: the ceil((n + 1) coverage)-th smallest of the
    n scores, so that a new exchangeable activity-sequence falls inside with probability >= coverage."""
    scores = (np.abs(np.asarray(estimates, float) - np.asarray(truths, float))
              / np.maximum(np.asarray(spreads, float), 1e-9)).ravel()
    rank = int(np.ceil((len(scores) + 1) * coverage))
    if rank > len(scores):
        raise ValueError(f"{len(scores)} activity-sequences cannot give a {coverage:.0%} conformal interval "
                         f"(at least {int(np.ceil(coverage / (1 - coverage)))} are needed)")
    return float(np.sort(scores)[rank - 1])


def sequence_figures(sequences: list[dict], switch_probability: float, n_classes: int) -> dict:
    """Estimate, spread and truth (seconds per activity) of each validation sequence, under one switch probability.
    A sequence: `probabilities` [n, K] of consecutive windows, `seconds` each owns, `y` their true class."""
    estimates, spreads, truths = [], [], []
    for sequence in sequences:
        estimate, spread_s = sums(sequence_shares(sequence["probabilities"], switch_probability), sequence["seconds"])
        estimates.append(estimate)
        spreads.append(spread_s)
        truths.append(np.bincount(sequence["y"], weights=sequence["seconds"], minlength=n_classes))
    return {"estimates": np.array(estimates), "spreads": np.array(spreads), "truths": np.array(truths)}


def choose(designs: dict[str, list[dict]], switch_probabilities: list[float], n_classes: int,
           coverage: float = COVERAGE) -> dict:
    """The switch probability whose probability sums have the lowest mean minutes error over the validation designs
    (the smallest on a tie), and the conformal interval scale for it over every activity-sequence of them.

    `designs`: name -> sequences (each person's recordings in a seeded order, and again with a seeded part of
    them cut to seeded lengths: a balanced design alone rewards any estimator that spreads time evenly).
    """
    table = []
    figures = {}
    for s in sorted(set(float(s) for s in switch_probabilities)):
        figures[s] = {name: sequence_figures(sequences, s, n_classes) for name, sequences in designs.items()}
        errors = {name: round(minutes_error(f["estimates"], f["truths"]), 4) for name, f in figures[s].items()}
        table.append({"switch_probability": s, "minutes_error": errors,
                      "mean_minutes_error": round(float(np.mean(list(errors.values()))), 4)})
    chosen = min(table, key=lambda row: (row["mean_minutes_error"], row["switch_probability"]))
    pooled = figures[chosen["switch_probability"]].values()
    scale = conformal_scale(np.concatenate([f["estimates"] for f in pooled]),
                            np.concatenate([f["truths"] for f in pooled]),
                            np.concatenate([f["spreads"] for f in pooled]), coverage)
    return {"method": METHOD, "switch_probability": chosen["switch_probability"], "interval_scale": scale,
            "coverage": coverage, "candidates": table,
            "activity_sequences": int(sum(f["truths"].size for f in pooled))}


def varied_order(subject: np.ndarray, recording: np.ndarray, start_t: np.ndarray, seed: int, *,
                 keep: int, seconds: tuple[float, float], window_s: float) -> list[np.ndarray]:
    """Per subject, `keep` of their recordings in a seeded order, each cut to a seeded length in `seconds`
    (whole windows from its start): sequences whose activities change in composition and length, the way
    har.study's `piece_seconds` sessions do with raw samples."""
    rng = np.random.default_rng(seed)
    sequences = []
    for person in np.unique(subject):
        mine = rng.permutation(np.unique(recording[subject == person]))[:keep]
        parts = []
        for r in mine:
            index = np.flatnonzero(recording == r)
            index = index[np.argsort(start_t[index], kind="stable")]
            length = rng.uniform(*seconds)
            parts.append(index[start_t[index] - start_t[index[0]] + window_s <= length] if len(index) else index)
        sequences.append(np.concatenate(parts))
    return sequences


def day_like_designs(probabilities: np.ndarray, split: dict, settings: dict, seed: int, *, window_s: float,
                     step_s: float) -> dict[str, list[dict]]:
    """A split's windows as validation sequences (each window owning one step): `balanced`, each subject's
    recordings whole in a seeded order (har.smoothing.day_like_order), and `varied`, `settings["varied"]["seeds"]`
    seeded orders of a part of them cut to seeded lengths (`varied_order`). `split`: y, subject, recording, start_t."""
    varied = settings["varied"]

    def sequences(orders: list[np.ndarray]) -> list[dict]:
        return [{"probabilities": probabilities[i], "seconds": np.full(len(i), step_s), "y": split["y"][i]}
                for i in orders if len(i)]

    arrays = (split["subject"], split["recording"], split["start_t"])
    return {"balanced": sequences(day_like_order(*arrays, seed)),
            "varied": sequences([i for k in range(int(varied["seeds"]))
                                 for i in varied_order(*arrays, seed + 1 + k, keep=int(varied["recordings"]),
                                                       seconds=tuple(varied["seconds"]), window_s=window_s)])}


def judge(designs: dict[str, list[dict]], switch_probability: float, scale: float | None, n_classes: int,
          coverage: float = COVERAGE) -> dict:
    """Minutes error and the interval's coverage of the true minutes (share of activity-sequences) per design."""
    result = {}
    for name, sequences in designs.items():
        f = sequence_figures(sequences, switch_probability, n_classes)
        row = {"sequences": len(sequences), "minutes_error": round(minutes_error(f["estimates"], f["truths"]), 4)}
        if scale is not None:
            bounds = np.array([interval_seconds(e, scale * sp, float(s["seconds"].sum()))
                               for e, sp, s in zip(f["estimates"], f["spreads"], sequences)])
            inside = (f["truths"] >= bounds[..., 0]) & (f["truths"] <= bounds[..., 1])
            row["interval_coverage"] = round(float(np.mean(inside)), 4)
        result[name] = row
    return result


# ---------------------------------------------------------------- other estimators, measured beside it

def counts(labels: np.ndarray, seconds: np.ndarray, n_classes: int) -> np.ndarray:
    """Seconds per class of windows labelled with a class index (-1: no class, e.g. uncertain)."""
    labels, seconds = np.asarray(labels), np.asarray(seconds, float)
    given = labels >= 0
    return np.bincount(labels[given], weights=seconds[given], minlength=n_classes)


def confusion_shares(y: np.ndarray, probabilities: np.ndarray, seconds: np.ndarray, n_classes: int) -> np.ndarray:
    """Row k: where the probability mass of true-class-k time goes (rows sum to 1; an absent class: identity)."""
    matrix = np.zeros((n_classes, n_classes))
    np.add.at(matrix, np.asarray(y), np.asarray(probabilities, float) * np.asarray(seconds, float)[:, None])
    totals = matrix.sum(axis=1, keepdims=True)
    return np.where(totals > 0, matrix / np.maximum(totals, 1e-12), np.eye(n_classes))


def adjusted(estimate_s: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """PACC: the non-negative true seconds t, summing to the estimate's total, whose expected probability sums
    confusion^T t come closest to the observed ones (least squares)."""
    from scipy.optimize import nnls

    k = len(estimate_s)
    weight = 10.0  # the total is a hard constraint in all but name
    t, _ = nnls(np.vstack([confusion.T, weight * np.ones(k)]), np.r_[estimate_s, weight * estimate_s.sum()])
    return t


def emq(probabilities: np.ndarray, seconds: np.ndarray, train_prior: np.ndarray | None = None,
        iterations: int = 1000, tolerance: float = 1e-9) -> np.ndarray:
    """EMQ (Saerens, Latinne & Decaestecker 2002): the class priors of these windows re-estimated by EM, each
    window's posterior reweighted by new prior / training prior (uniform: the model was trained class-balanced);
    returns the seconds per class under the final posteriors."""
    p = np.asarray(probabilities, float)
    seconds = np.asarray(seconds, float)
    train = np.full(p.shape[1], 1.0 / p.shape[1]) if train_prior is None else np.asarray(train_prior, float)
    prior = train.copy()
    posterior = p
    for _ in range(iterations):
        posterior = p * (prior / train)
        posterior /= np.maximum(posterior.sum(axis=1, keepdims=True), 1e-300)
        new = seconds @ posterior / max(seconds.sum(), 1e-12)
        if np.abs(new - prior).max() < tolerance:
            break
        prior = new
    return seconds @ posterior
