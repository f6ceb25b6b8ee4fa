"""Drift statistics: production windows against the training reference, as functions over arrays.

Severity comes from effect sizes (PSI, normalised Wasserstein distance, KS statistic, MMD),
never from p-values alone. With 10^5 samples every p-value is ~0 for differences that do not
matter (held-out people wear the same watch a little differently), so p-values are reported
beside the effect sizes, not judged. The thresholds live in conf/monitor/ and are pinned by two
tests: the held-out training subjects must come out "none", the Garmin accelerometer fed
without its milli-g conversion must come out "critical".

The same bins and the same PSI serve the drift stage and the service's live monitor
(`RunningDriftMonitor`), through the reference file shipped beside the model.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from scipy import stats

from har.fusion import CHANNELS
from har.recording import G
from har.windows import with_magnitudes

# Vector norms are added to the six axes: |a| is dominated by gravity whatever the watch's
# orientation, so it separates a units or scale problem from a change of placement or axes.
DERIVED = ["acc_norm", "gyr_norm"]
MONITORED = CHANNELS + DERIVED
UNITS = {"ax": "m/s^2", "ay": "m/s^2", "az": "m/s^2", "gx": "rad/s", "gy": "rad/s", "gz": "rad/s",
         "acc_norm": "m/s^2", "gyr_norm": "rad/s"}
SEVERITIES = ("none", "warning", "critical")
REFERENCE_FILE = "drift_reference.json"  # lives beside the model file it describes
PSI_FLOOR = 1e-4  # an empty bin would make PSI infinite; this caps one bin's contribution


# ---------------------------------------------------------------- severity

def level(value: float | None, thresholds) -> str:
    """"none", "warning" or "critical" for a value against [warning, critical] (either may be null)."""
    warning, critical = thresholds
    if value is None or not np.isfinite(value):
        return "none"
    if critical is not None and value >= critical:
        return "critical"
    if warning is not None and value >= warning:
        return "warning"
    return "none"


def worst(levels) -> str:
    return max(levels, key=SEVERITIES.index, default="none")


def agreed(levels, votes: int) -> str:
    """The highest severity that at least `votes` of the measures reach.

    Each effect size has its own blind spot (PSI on quantile bins over-reacts where the
    reference is concentrated, e.g. |a| near g under a 1% calibration offset between watches;
    Wasserstein over-reacts to heavy tails), so a channel drifts when they agree.
    """
    levels = list(levels)
    votes = min(votes, len(levels))
    for severity in reversed(SEVERITIES):
        if sum(SEVERITIES.index(lvl) >= SEVERITIES.index(severity) for lvl in levels) >= votes:
            return severity
    return "none"


# ---------------------------------------------------------------- per-channel statistics

def sample_values(windows: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Up to max_samples random time points of [n, L, 6] windows, as [m, 8] monitored values.

    Sampling time points (not whole windows) keeps the memory small for 30k training windows.
    """
    n, length, _ = windows.shape
    if n * length <= max_samples:
        return with_magnitudes(windows.reshape(-1, windows.shape[-1]))
    flat = rng.choice(n * length, size=max_samples, replace=False)
    return with_magnitudes(windows[flat // length, flat % length])


def subsample(windows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to n windows drawn without replacement."""
    return windows[rng.choice(len(windows), min(n, len(windows)), replace=False)]


def fit_bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles; the outer bins are open to +-infinity."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)  # a channel with repeated values would give empty zero-width bins


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def psi(reference_proportions, production_proportions) -> float:
    """Population stability index: sum (p - r) ln(p / r) over the reference's bins."""
    r = np.clip(np.asarray(reference_proportions, float), PSI_FLOOR, None)
    p = np.clip(np.asarray(production_proportions, float), PSI_FLOOR, None)
    r, p = r / r.sum(), p / p.sum()
    return float(np.sum((p - r) * np.log(p / r)))


def ks_test(reference: np.ndarray, production: np.ndarray, reference_units: int, production_units: int):
    """KS statistic on the samples, p-value with the window counts as the sample sizes.

    Samples inside a 4 s window are strongly autocorrelated; counting every sample as
    independent would make the p-value smaller still, for no reason.
    """
    statistic = float(stats.ks_2samp(reference, production).statistic)
    effective = reference_units * production_units / (reference_units + production_units)
    return statistic, float(stats.kstwo.sf(statistic, max(1, round(effective))))


def wasserstein_normalised(reference: np.ndarray, production: np.ndarray) -> float:
    """Earth mover's distance in units of the reference's standard deviation."""
    scale = float(np.std(reference)) or 1.0
    return float(stats.wasserstein_distance(reference, production) / scale)


def compare_channel(reference: np.ndarray, production: np.ndarray, edges: np.ndarray,
                    reference_proportions: np.ndarray, reference_windows: int, production_windows: int,
                    thresholds: dict, votes: int) -> dict:
    """Every statistic for one channel, and its severity from the effect sizes."""
    ks, ks_p = ks_test(reference, production, reference_windows, production_windows)
    production_proportions = bin_counts(production, edges) / len(production)
    effects = {"psi": psi(reference_proportions, production_proportions), "ks_statistic": ks,
               "wasserstein_norm": wasserstein_normalised(reference, production)}
    levels = {name: level(value, thresholds[name]) for name, value in effects.items()}
    return {**effects, "ks_pvalue": ks_p,
            "reference_median": float(np.median(reference)), "production_median": float(np.median(production)),
            "reference_std": float(np.std(reference)), "production_std": float(np.std(production)),
            "severity": agreed(levels.values(), votes), "levels": levels}


# ---------------------------------------------------------------- multivariate test

def mmd_features(windows: np.ndarray) -> np.ndarray:
    """[n, L, 6] -> [n, 40]: per monitored channel mean, std, 10th and 90th percentile, mean |step|.

    The |step| feature carries the signal's dynamics (how fast it moves), which the
    per-sample distributions above cannot see.
    """
    values = with_magnitudes(windows)
    low, high = np.percentile(values, [10, 90], axis=1)
    steps = np.abs(np.diff(values, axis=1)).mean(axis=1)
    return np.concatenate([values.mean(axis=1), values.std(axis=1), low, high, steps], axis=1)


def mmd_test(reference: np.ndarray, production: np.ndarray, permutations: int, rng: np.random.Generator) -> dict:
    """Unbiased MMD^2 with a Gaussian kernel and its permutation p-value.

    Features are standardised by the reference and the kernel width is the reference's
    median pairwise distance, so the statistic is on the same scale whatever production does.
    """
    centre, scale = reference.mean(axis=0), reference.std(axis=0) + 1e-9
    pooled = (np.vstack([reference, production]) - centre) / scale
    squared = np.sum((pooled[:, None, :] - pooled[None, :, :]) ** 2, axis=-1)
    m, n = len(reference), len(production)
    width = float(np.median(squared[:m, :m][np.triu_indices(m, 1)])) or 1.0
    kernel = np.exp(-squared / width)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out each point's match with itself

    # Column j of `is_reference` marks which points play the reference in assignment j
    # (column 0 the true one), so all permutations cost one matrix product.
    assignments = [np.arange(m + n)] + [rng.permutation(m + n) for _ in range(permutations)]
    is_reference = np.zeros((m + n, len(assignments)))
    for j, order in enumerate(assignments):
        is_reference[order[:m], j] = 1.0
    is_production = 1.0 - is_reference
    k_ref = kernel @ is_reference
    within_ref = np.sum(is_reference * k_ref, axis=0) / (m * (m - 1))
    between = np.sum(is_production * k_ref, axis=0) / (m * n)
    within_prod = np.sum(is_production * (kernel @ is_production), axis=0) / (n * (n - 1))
    mmd2 = within_ref + within_prod - 2 * between
    pvalue = (1 + np.sum(mmd2[1:] >= mmd2[0])) / (1 + permutations)
    return {"mmd2": float(mmd2[0]), "pvalue": float(pvalue), "permutations": permutations,
            "reference_windows": m, "production_windows": n, "kernel_width": width}


# ---------------------------------------------------------------- model outputs

def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row divided by log(k): 0 = certain, 1 = uniform."""
    p = np.clip(probabilities, 1e-12, 1.0)
    return -np.sum(p * np.log(p), axis=1) / np.log(probabilities.shape[1])


def output_summary(probabilities: np.ndarray, labels: list[str]) -> dict:
    """Predicted-label proportions, mean top-1 probability and mean normalised entropy."""
    counts = np.bincount(np.argmax(probabilities, axis=1), minlength=len(labels))
    return {"windows": int(len(probabilities)),
            "label_proportions": dict(zip(labels, (counts / max(1, len(probabilities))).tolist())),
            "mean_confidence": float(np.mean(np.max(probabilities, axis=1))),
            "mean_entropy": float(np.mean(normalised_entropy(probabilities)))}


def compare_outputs(reference: dict, production: dict, thresholds: dict) -> dict:
    """Production's output summary against the reference's: label PSI and the rise in entropy."""
    labels = list(reference["label_proportions"])
    label_psi = psi([reference["label_proportions"][k] for k in labels],
                    [production["label_proportions"].get(k, 0.0) for k in labels])
    entropy_increase = production["mean_entropy"] - reference["mean_entropy"]
    levels = {"label_psi": level(label_psi, thresholds["label_psi"]),
              "entropy_increase": level(entropy_increase, thresholds["entropy_increase"])}
    return {"reference": reference, "production": production, "label_psi": label_psi,
            "entropy_increase": entropy_increase, "severity": worst(levels.values()), "levels": levels}


# ---------------------------------------------------------------- the reference and the report

def build_reference(train_windows: np.ndarray, *, bins: int, max_samples: int, seed: int, thresholds: dict,
                    votes: int, outputs: dict | None = None, min_windows: int = 50) -> dict:
    """What production is compared with, small enough to ship beside the model (JSON-able).

    `outputs` is `output_summary` of the model on held-out windows, or None without a model.
    """
    values = sample_values(train_windows, max_samples, np.random.default_rng(seed))
    channels = {}
    for c, name in enumerate(MONITORED):
        edges = fit_bin_edges(values[:, c], bins)
        channels[name] = {"unit": UNITS[name], "edges": edges.tolist(),
                          "proportions": (bin_counts(values[:, c], edges) / len(values)).tolist()}
    return {"format": 1, "windows": int(len(train_windows)), "window_length": int(train_windows.shape[1]),
            "channels": channels, "outputs": outputs, "thresholds": thresholds, "votes": votes,
            "min_windows": min_windows}


def units_hint(reference_acc_median: float, production_acc_median: float) -> str | None:
    """A named cause when |a| is off by a known unit factor (|a| ~ g at rest, whatever the orientation)."""
    ratio = production_acc_median / reference_acc_median if reference_acc_median else np.nan
    factors = {"milli-g fed as m/s^2 (x 1000/9.80665)": 1000 / G, "g fed as m/s^2 (x 1/9.80665)": 1 / G,
               "m/s^2 fed as milli-g (x 9.80665/1000)": G / 1000}
    for cause, factor in factors.items():
        if np.isfinite(ratio) and ratio > 0 and abs(np.log(ratio / factor)) < np.log(1.25):
            return f"median |a| is {ratio:.3g} x the reference's: looks like {cause}"
    return None


def drift_report(reference: dict, reference_windows: np.ndarray, production_windows: np.ndarray, monitor: dict,
                 production_outputs: dict | None = None) -> dict:
    """Production windows [n, L, 6] against the training windows, under the reference's bins.

    `monitor` is the monitor config (thresholds, max_samples, seed, mmd); `production_outputs`
    the model's `output_summary` on the production windows, compared with `reference["outputs"]`.
    """
    if len(production_windows) == 0:
        raise ValueError("no production windows to compare (is every recording shorter than one window?)")
    rng = np.random.default_rng(monitor["seed"])
    thresholds = monitor["thresholds"]
    ref_values = sample_values(reference_windows, monitor["max_samples"], rng)
    prod_values = sample_values(production_windows, monitor["max_samples"], rng)
    channels = {}
    for c, name in enumerate(MONITORED):
        bins = reference["channels"][name]
        channels[name] = compare_channel(ref_values[:, c], prod_values[:, c], np.asarray(bins["edges"]),
                                         np.asarray(bins["proportions"]), len(reference_windows),
                                         len(production_windows), thresholds, monitor["votes"])

    n = monitor["mmd"]["windows"]
    mmd = mmd_test(mmd_features(subsample(reference_windows, n, rng)),
                   mmd_features(subsample(production_windows, n, rng)), monitor["mmd"]["permutations"], rng)
    # The p-value guards against calling noise drift on a small sample; the size of the effect decides.
    mmd["severity"] = level(mmd["mmd2"], thresholds["mmd"]) if mmd["pvalue"] < monitor["mmd"]["alpha"] else "none"

    outputs = None
    if production_outputs is not None and reference.get("outputs"):
        outputs = compare_outputs(reference["outputs"], production_outputs, thresholds)

    parts = [c["severity"] for c in channels.values()] + [mmd["severity"]] + ([outputs["severity"]] if outputs else [])
    norm = channels["acc_norm"]
    hint = units_hint(norm["reference_median"], norm["production_median"])
    lines = explain(channels, mmd, outputs)
    if hint:
        lines.insert(0, hint)
    elif any(channels[axis]["severity"] != "none" for axis in ("ax", "ay", "az")):
        lines.insert(0, f"median |a| {norm['production_median']:.3g} vs {norm['reference_median']:.3g} m/s^2: the "
                        f"accelerometer's units are right; the axes differ in orientation or movement, not in scale")
    return {"severity": worst(parts), "judged": True, "production_windows": int(len(production_windows)),
            "reference_windows": int(len(reference_windows)), "channels": channels, "multivariate": mmd,
            "outputs": outputs, "units_hint": hint, "drifted": lines}


def wear_finding(worn_windows: int, not_worn_windows: int, min_windows: int) -> str | None:
    """Non-wear in plain words: a watch left on a desk is not drift, and its windows are in no statistic."""
    total = worn_windows + not_worn_windows
    if not_worn_windows == 0:
        return None
    text = (f"not worn: {not_worn_windows} of {total} windows ({not_worn_windows / total:.0%}) lay in non-wear "
            f"episodes (a still watch at the sensor's noise floor, har/wear.py) and are left out of every statistic")
    if worn_windows < min_windows:
        text += f"; the {worn_windows} worn windows are fewer than the {min_windows} needed to judge drift"
    return text


def unjudged_report(worn_windows: int, reference_windows: int, finding: str) -> dict:
    """The drift report when too few worn windows remain to compare anything: no statistic, no story, no severity."""
    return {"severity": "none", "judged": False, "production_windows": int(worn_windows),
            "reference_windows": int(reference_windows), "channels": {}, "multivariate": None, "outputs": None,
            "units_hint": None, "drifted": [finding]}


def explain(channels: dict, mmd: dict, outputs: dict | None) -> list[str]:
    """One sentence per flagged statistic, worst first: what the report's reader needs to act on."""
    lines = []
    for name, ch in sorted(channels.items(), key=lambda kv: -SEVERITIES.index(kv[1]["severity"])):
        if ch["severity"] != "none":
            lines.append(f"{name} [{ch['severity']}]: PSI {ch['psi']:.2f}, KS {ch['ks_statistic']:.2f}, "
                         f"W/sd {ch['wasserstein_norm']:.2f}; median {ch['production_median']:.3g} vs "
                         f"{ch['reference_median']:.3g} {UNITS[name]}, sd {ch['production_std']:.3g} vs "
                         f"{ch['reference_std']:.3g}")
    if mmd["severity"] != "none":
        lines.append(f"window features [{mmd['severity']}]: MMD^2 {mmd['mmd2']:.3f} (permutation p {mmd['pvalue']:.3g})")
    if outputs and outputs["severity"] != "none":
        shares = outputs["production"]["label_proportions"]
        top = max(shares, key=shares.get)
        lines.append(f"model outputs [{outputs['severity']}]: label PSI {outputs['label_psi']:.2f} ({shares[top]:.0%} "
                     f"predicted {top}), entropy {outputs['production']['mean_entropy']:.2f} vs "
                     f"{outputs['reference']['mean_entropy']:.2f}")
    return lines


# ---------------------------------------------------------------- live monitoring (the service)

def reference_path_for(model_path) -> Path:
    """The drift reference shipped with a model: drift_reference.json beside the ONNX file."""
    return Path(model_path).with_name(REFERENCE_FILE)


def load_reference(path) -> dict:
    reference = json.loads(Path(path).read_text())
    missing = [name for name in MONITORED if name not in reference.get("channels", {})]
    if missing:
        raise ValueError(f"{path}: drift reference lacks channel(s) {missing} (expected one entry per {MONITORED})")
    return reference


class RunningDriftMonitor:
    """What a service has received since it started, against the reference shipped with its model.

    `observe` adds the windows a request carried (on the reference's bins) and the model's
    probabilities for them; `summary` gives the same PSI and severities as the drift stage.
    Counts only, so memory stays constant; a lock because requests may be answered from threads.
    """

    def __init__(self, reference: dict, labels: list[str] | None = None):
        self.reference = reference
        self.edges = [np.asarray(reference["channels"][name]["edges"]) for name in MONITORED]
        reference_labels = list((reference.get("outputs") or {}).get("label_proportions", {}))
        if labels and reference_labels and list(labels) != reference_labels:
            raise ValueError(f"the drift reference was built for labels {reference_labels}, the model has {list(labels)}")
        self.labels = list(labels or reference_labels)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.windows = 0
            self.not_worn_windows = 0  # counted on their own: never in a statistic
            self.counts = [np.zeros(len(e) + 1, np.int64) for e in self.edges]
            self.label_counts = np.zeros(len(self.labels), np.int64)
            self.confidence_sum = 0.0
            self.entropy_sum = 0.0
            self.predictions = 0

    def observe(self, windows: np.ndarray, probabilities: np.ndarray | None = None) -> None:
        """windows [n, L, 6] in SI units as the model received them; probabilities [n, k] or None."""
        values = with_magnitudes(np.asarray(windows, np.float32)).reshape(-1, len(MONITORED))
        counts = [bin_counts(values[:, c], edges) for c, edges in enumerate(self.edges)]
        with self.lock:
            self.windows += len(windows)
            for total, new in zip(self.counts, counts):
                total += new
            if probabilities is not None and len(probabilities):
                probabilities = np.asarray(probabilities, np.float64)
                self.label_counts += np.bincount(np.argmax(probabilities, axis=1), minlength=len(self.labels))
                self.confidence_sum += float(np.sum(np.max(probabilities, axis=1)))
                self.entropy_sum += float(np.sum(normalised_entropy(probabilities)))
                self.predictions += len(probabilities)

    def observe_not_worn(self, windows: int) -> None:
        """Windows of uploaded recordings that lay in non-wear episodes (har/wear.py): counted, never compared."""
        with self.lock:
            self.not_worn_windows += int(windows)

    def summary(self) -> dict:
        """The current drift dict: per-channel PSI (and the KS statistic on the bins), outputs, severity."""
        thresholds = self.reference["thresholds"]
        with self.lock:
            counts = [c.copy() for c in self.counts]
            windows, predictions, not_worn = self.windows, self.predictions, self.not_worn_windows
            label_counts = self.label_counts.copy()
            confidence_sum, entropy_sum = self.confidence_sum, self.entropy_sum
        enough = windows >= self.reference.get("min_windows", 50)
        channels = {}
        for name, count in zip(MONITORED, counts):
            reference_proportions = np.asarray(self.reference["channels"][name]["proportions"])
            proportions = count / max(1, count.sum())
            value = psi(reference_proportions, proportions)
            # The largest gap between the two CDFs at the bin edges: a lower bound of the KS statistic.
            ks_binned = float(np.max(np.abs(np.cumsum(proportions) - np.cumsum(reference_proportions))))
            levels = [level(value, thresholds["psi"]), level(ks_binned, thresholds["ks_statistic"])]
            channels[name] = {"psi": value, "ks_binned": ks_binned,
                              "severity": agreed(levels, self.reference["votes"]) if enough else "none"}
        outputs = None
        if predictions and self.reference.get("outputs"):
            production = {"windows": predictions,
                          "label_proportions": dict(zip(self.labels, (label_counts / predictions).tolist())),
                          "mean_confidence": confidence_sum / predictions, "mean_entropy": entropy_sum / predictions}
            outputs = compare_outputs(self.reference["outputs"], production, thresholds)
            if not enough:
                outputs["severity"] = "none"
        parts = [c["severity"] for c in channels.values()] + ([outputs["severity"]] if outputs else [])
        drifted = [f"{name} [{c['severity']}]: PSI {c['psi']:.2f}, binned KS {c['ks_binned']:.2f}"
                   for name, c in channels.items() if c["severity"] != "none"]
        finding = wear_finding(windows, not_worn, self.reference.get("min_windows", 50))
        return {"windows": windows, "not_worn_windows": not_worn, "enough_data": enough,
                "min_windows": self.reference.get("min_windows", 50), "severity": worst(parts), "channels": channels,
                "outputs": outputs, "drifted": [finding, *drifted] if finding else drifted}


def recording_drift(reference: dict, windows: np.ndarray, probabilities: np.ndarray | None = None,
                    labels: list[str] | None = None, top: int = 3, not_worn: int = 0) -> dict:
    """One recording's worn windows against the reference: the live monitor's summary for these windows
    alone (same bins, PSI and severity words), with the `top` channels of highest PSI first; the
    recording's `not_worn` windows are counted and said, never compared."""
    monitor = RunningDriftMonitor(reference, labels=labels)
    monitor.observe(windows, probabilities)
    monitor.observe_not_worn(not_worn)
    summary = monitor.summary()
    ranked = sorted(summary["channels"].items(), key=lambda item: -item[1]["psi"])
    summary["most_drifted"] = [{"channel": name, "unit": UNITS[name], **channel} for name, channel in ranked[:top]]
    return summary


def prometheus_samples(summary: dict) -> list[tuple[str, dict, float]]:
    """The summary as (metric name, labels, value) gauge samples for /metrics."""
    samples = [("har_drift_windows_observed", {}, float(summary["windows"])),
               ("har_drift_not_worn_windows", {}, float(summary.get("not_worn_windows", 0))),
               ("har_drift_severity", {}, float(SEVERITIES.index(summary["severity"])))]
    for name, channel in summary["channels"].items():
        samples.append(("har_drift_psi", {"channel": name}, channel["psi"]))
        samples.append(("har_drift_ks_binned", {"channel": name}, channel["ks_binned"]))
    if summary["outputs"]:
        samples.append(("har_drift_mean_entropy", {}, summary["outputs"]["production"]["mean_entropy"]))
        samples.append(("har_drift_mean_confidence", {}, summary["outputs"]["production"]["mean_confidence"]))
        samples.append(("har_drift_label_psi", {}, summary["outputs"]["label_psi"]))
    return samples


HELP = {"har_drift_windows_observed": "Windows the drift monitor has seen since start or reset",
        "har_drift_not_worn_windows": "Windows of uploaded recordings in non-wear episodes: counted, never compared",
        "har_drift_severity": "Live drift severity: 0 none, 1 warning, 2 critical",
        "har_drift_psi": "PSI of received values against the training reference, by channel",
        "har_drift_ks_binned": "KS statistic on the reference bins (a lower bound), by channel",
        "har_drift_mean_entropy": "Mean normalised entropy of the answers (0 certain, 1 uniform)",
        "har_drift_mean_confidence": "Mean top-1 probability of the answers",
        "har_drift_label_psi": "PSI of the predicted-label shares against the held-out reference"}


class DriftCollector:
    """A prometheus_client collector: the monitor's summary as gauges, computed at scrape time.

    `registry.register(DriftCollector(monitor))` and /metrics carries them.
    """

    def __init__(self, monitor: RunningDriftMonitor):
        self.monitor = monitor

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        families = {}
        for name, labels, value in prometheus_samples(self.monitor.summary()):
            if name not in families:
                families[name] = GaugeMetricFamily(name, HELP[name], labels=list(labels))
            families[name].add_metric(list(labels.values()), value)
        return list(families.values())
