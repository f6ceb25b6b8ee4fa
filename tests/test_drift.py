"""Drift statistics, the calibration of their thresholds on the real data, the live monitor and the stage.

The two calibration tests run the configured thresholds (params.yaml) on windows cut from the
raw data with the pipeline's own code, so they hold on a fresh clone without `dvc repro`:
the held-out test subjects must come out "none", the Garmin accelerometer fed without its
milli-g conversion "critical".
"""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, WISDM_DIR, params_preprocessing, pipeline_windows
from tiny_onnx import tiny_onnx_model

from har import drift
from har.config import load_params
from har.fusion import CHANNELS
from har.labelled import find_wisdm_pairs, read_wisdm_pair
from har.recording import G
from har.windows import split_subjects

PARAMS = load_params(ROOT / "params.yaml")
MONITOR = PARAMS["monitor"]
# The calibration holds for the configured pipeline, so these windows follow the working tree's params.
PREPROCESSING = params_preprocessing(PARAMS)
MILLI_G_AS_SI = 1000 / G  # what the numbers become when milli-g values are taken for m/s^2
ACC = ["ax", "ay", "az", "acc_norm"]
GYR = ["gx", "gy", "gz", "gyr_norm"]


def reference_for(train_windows: np.ndarray) -> dict:
    return drift.build_reference(train_windows, bins=MONITOR["bins"], max_samples=MONITOR["max_samples"],
                                 seed=MONITOR["seed"], thresholds=MONITOR["thresholds"], votes=MONITOR["votes"],
                                 min_windows=MONITOR["min_windows"])


@pytest.fixture(scope="module")
def wisdm_windows():
    """Train and test windows of the configured class set and subject split, from the raw WISDM files."""
    pairs, _ = find_wisdm_pairs(WISDM_DIR, activities=PARAMS["data"]["labels"])
    splits = split_subjects([p["subject"] for p in pairs], PARAMS["split"])
    by_split = {split: np.concatenate([pipeline_windows(read_wisdm_pair(p), PREPROCESSING)[0] for p in pairs if p["subject"] in subjects])
                for split, subjects in splits.items() if split != "val"}
    return by_split["train"], by_split["test"], reference_for(by_split["train"])


@pytest.fixture(scope="module")
def garmin_windows(request, garmin_recording):
    """The real Garmin hour cut with the working tree's params (the session's cut when they agree)."""
    from serve_helpers import PREPROCESSING as TINY_MODEL

    if PREPROCESSING == TINY_MODEL:
        return request.getfixturevalue("garmin_pipeline_windows")[0]
    return pipeline_windows(garmin_recording, PREPROCESSING)[0]


# ---------------------------------------------------------------- calibration on the real data

def test_held_out_test_subjects_are_not_flagged(wisdm_windows):
    train, test, reference = wisdm_windows
    report = drift.drift_report(reference, train, test, MONITOR)
    assert report["severity"] == "none", report["drifted"]
    assert report["drifted"] == []


def test_garmin_accelerometer_without_milli_g_conversion_is_critical(wisdm_windows, garmin_windows):
    train, _, reference = wisdm_windows
    unconverted = garmin_windows.copy()
    unconverted[:, :, :3] *= MILLI_G_AS_SI
    report = drift.drift_report(reference, train, unconverted, MONITOR)
    assert report["severity"] == "critical"
    assert all(report["channels"][name]["severity"] == "critical" for name in ACC)
    assert "milli-g fed as m/s^2" in report["units_hint"]
    assert any("milli-g" in line for line in report["drifted"])


def test_units_mistake_flags_the_accelerometer_and_nothing_else(wisdm_windows):
    """On data that is otherwise in distribution, only the wrongly converted sensor is flagged."""
    train, test, reference = wisdm_windows
    unconverted = test.copy()
    unconverted[:, :, :3] *= MILLI_G_AS_SI
    report = drift.drift_report(reference, train, unconverted, MONITOR)
    assert report["severity"] == "critical"
    assert {name: report["channels"][name]["severity"] for name in ACC} == dict.fromkeys(ACC, "critical")
    assert {name: report["channels"][name]["severity"] for name in GYR} == dict.fromkeys(GYR, "none")


def test_correctly_converted_garmin_recording_has_no_units_hint(wisdm_windows, garmin_windows):
    """|a| of the real recording is about g, as in training: whatever drifted, it is not the units."""
    train, _, reference = wisdm_windows
    report = drift.drift_report(reference, train, garmin_windows, MONITOR)
    assert report["units_hint"] is None
    assert "units are right" in report["drifted"][0]
    assert report["channels"]["acc_norm"]["production_median"] == pytest.approx(G, rel=0.05)


# ---------------------------------------------------------------- the statistics

def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    shares = np.full(10, 0.1)
    assert drift.psi(shares, shares) == 0.0
    shifted = np.array([0.2, 0.0, *np.full(8, 0.1)])
    more = np.array([0.5, 0.0, 0.0, 0.0, 0.0, *np.full(5, 0.1)])
    assert 0 < drift.psi(shares, shifted) < drift.psi(shares, more)
    # An empty bin is floored, not infinite.
    assert np.isfinite(drift.psi(shares, np.array([1.0, *np.zeros(9)])))


def test_bins_are_reference_deciles_with_open_ends():
    values = np.arange(1000, dtype=float)
    edges = drift.fit_bin_edges(values, 10)
    assert len(edges) == 9
    assert np.allclose(drift.bin_counts(values, edges) / 1000, 0.1, atol=0.002)
    assert drift.bin_counts(np.array([-1e9, 1e9]), edges).tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]


def test_ks_p_value_counts_windows_not_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20000), rng.normal(0.05, 1, size=20000)
    statistic, p_many = drift.ks_test(a, b, 20000, 20000)
    same_statistic, p_few = drift.ks_test(a, b, 100, 100)
    assert statistic == same_statistic
    assert p_many < 0.01 < p_few


def test_wasserstein_is_in_reference_standard_deviations():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 5, size=50000)
    assert drift.wasserstein_normalised(reference, reference + 5) == pytest.approx(1.0, rel=0.02)


def test_agreement_of_measures_sets_the_channel_level():
    assert drift.agreed(["critical", "warning", "none"], 2) == "warning"
    assert drift.agreed(["critical", "critical", "none"], 2) == "critical"
    assert drift.agreed(["warning", "none", "none"], 2) == "none"
    assert drift.agreed(["warning", "none", "none"], 1) == "warning"
    assert drift.level(0.3, [0.25, None]) == "warning"
    assert drift.level(5.0, [None, 1.0]) == "critical"


def test_mmd_permutation_test_separates_shift_from_noise():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(200, 5))
    same = drift.mmd_test(reference, rng.normal(size=(200, 5)), 100, rng)
    shifted = drift.mmd_test(reference, rng.normal(0.7, 1, size=(200, 5)), 100, rng)
    assert same["pvalue"] > 0.05
    assert shifted["pvalue"] < 0.02
    assert shifted["mmd2"] > 10 * abs(same["mmd2"])


def test_entropy_is_zero_when_certain_and_one_when_uniform():
    probabilities = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert drift.normalised_entropy(probabilities) == pytest.approx([0.0, 1.0], abs=1e-6)
    summary = drift.output_summary(probabilities, ["a", "b", "c"])
    assert summary["label_proportions"] == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert summary["mean_confidence"] == pytest.approx((1 + 1 / 3) / 2)


# ---------------------------------------------------------------- live monitoring

def synthetic_windows(n, seed, acc_scale=1.0):
    """Windows with gravity on y and some motion: a stand-in for fused SI-unit data."""
    rng = np.random.default_rng(seed)
    windows = rng.normal(0, 1, size=(n, 200, 6)).astype(np.float32)
    windows[:, :, 1] -= G
    windows[:, :, :3] *= acc_scale
    return windows


def live_reference():
    thresholds = MONITOR["thresholds"]
    outputs = drift.output_summary(np.tile([[0.8, 0.1, 0.1]], (100, 1)), ["a", "b", "c"])
    return drift.build_reference(synthetic_windows(300, 0), bins=10, max_samples=100_000, seed=0,
                                 thresholds=thresholds, votes=2, outputs=outputs, min_windows=50)


def test_running_monitor_counts_add_up_across_requests():
    reference = live_reference()
    windows = synthetic_windows(120, 1)
    probabilities = np.tile([[0.8, 0.1, 0.1]], (120, 1))
    one, many = drift.RunningDriftMonitor(reference), drift.RunningDriftMonitor(reference)
    one.observe(windows, probabilities)
    for start in range(0, 120, 7):
        many.observe(windows[start:start + 7], probabilities[start:start + 7])
    summary, summed = one.summary(), many.summary()
    assert summary["channels"] == summed["channels"]  # integer bin counts: exactly equal
    assert summary["outputs"]["production"]["mean_entropy"] == pytest.approx(summed["outputs"]["production"]["mean_entropy"])
    assert summary["windows"] == 120 and summary["enough_data"]
    assert summary["severity"] == "none"
    assert summary["outputs"]["production"]["label_proportions"] == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_running_monitor_flags_a_units_mistake_but_only_with_enough_windows():
    monitor = drift.RunningDriftMonitor(live_reference())
    bad = synthetic_windows(60, 2, acc_scale=MILLI_G_AS_SI)
    monitor.observe(bad[:10])
    early = monitor.summary()
    assert not early["enough_data"] and early["severity"] == "none"
    monitor.observe(bad[10:])
    summary = monitor.summary()
    assert summary["severity"] == "critical"
    # Gravity makes |a| (and the axis carrying it) jump by the unit factor; the gyroscope is untouched.
    assert summary["channels"]["acc_norm"]["severity"] == summary["channels"]["ay"]["severity"] == "critical"
    assert {summary["channels"][name]["severity"] for name in GYR} == {"none"}
    samples = drift.prometheus_samples(summary)
    assert ("har_drift_severity", {}, 2.0) in samples
    assert {labels["channel"] for name, labels, _ in samples if name == "har_drift_psi"} == set(drift.MONITORED)
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(drift.DriftCollector(monitor))
    exposition = generate_latest(registry).decode()
    assert "har_drift_severity 2.0" in exposition and 'har_drift_psi{channel="acc_norm"}' in exposition
    monitor.reset()
    assert monitor.summary()["windows"] == 0
    with pytest.raises(ValueError, match="labels"):
        drift.RunningDriftMonitor(live_reference(), labels=["x", "y", "z"])


def test_reference_file_round_trips_and_is_found_beside_the_model(tmp_path):
    reference = live_reference()
    path = drift.reference_path_for(tmp_path / "model.onnx")
    path.write_text(json.dumps(reference))
    assert path.name == "drift_reference.json"
    assert drift.load_reference(path) == reference
    broken = {**reference, "channels": {k: v for k, v in reference["channels"].items() if k != "gz"}}
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="gz"):
        drift.load_reference(path)


# ---------------------------------------------------------------- the stage, end to end on small files

def test_drift_stage_writes_metrics_and_an_html_report(tmp_path, monkeypatch, garmin_windows):
    monkeypatch.delenv("HAR_DRIFT_WEBHOOK_URL", raising=False)  # never post a real alert from a test
    from stages import drift as stage

    rng = np.random.default_rng(0)
    labels = ["sitting", "standing", "typing"]
    (tmp_path / "windows").mkdir()
    for split, n in [("train", 300), ("val", 100), ("test", 100)]:
        np.savez(tmp_path / "windows" / f"{split}.npz", X=synthetic_windows(n, rng.integers(1e6)))
    production = tmp_path / "fused"
    production.mkdir()
    values = garmin_windows[:60:2].reshape(-1, 6)  # 30 back-to-back windows: two minutes of the real recording
    t = np.arange(len(values)) / PARAMS["data"]["target_hz"]
    pd.DataFrame({"t": t, **{c: values[:, i] for i, c in enumerate(CHANNELS)}}).to_parquet(production / "rec.parquet")
    pd.DataFrame({"recording": ["rec"], "file": ["rec.parquet"]}).to_csv(production / "index.csv", index=False)
    (tmp_path / "models").mkdir()
    tiny_onnx_model(tmp_path / "models" / "model.onnx", labels)
    params = {**PARAMS, "monitor": {**MONITOR, "reference": "windows/train.npz", "outputs_reference": "windows/val.npz",
                                    "control": "windows/test.npz", "production": "fused", "model": "models/model.onnx",
                                    "report": "reports/drift.html", "mmd": {**MONITOR["mmd"], "permutations": 100}}}
    monkeypatch.chdir(tmp_path)

    reference = stage.make_reference(params)
    assert reference["outputs"]["label_proportions"].keys() == set(labels)
    assert (tmp_path / "models" / "drift_reference.json").exists()
    result = stage.make_report(params)

    metrics = json.loads((tmp_path / "metrics" / "drift.json").read_text())
    assert metrics["severity"] == result["severity"] == "critical"  # a real watch against synthetic noise
    assert metrics["control"]["severity"] == "none"  # the synthetic held-out split is the same distribution
    assert set(metrics["channels"]) == set(drift.MONITORED)
    assert metrics["outputs"]["production"]["windows"] == metrics["production_windows"] == 59
    page = (tmp_path / "reports" / "drift.html").read_text()
    assert page.count("data:image/png;base64,") == len(drift.MONITORED) + 1  # channels + predicted labels
    assert "What drifted" in page and "CRITICAL" in page


def test_one_recordings_drift_is_the_live_summary_of_its_windows_alone_with_the_worst_channels_first():
    """What the page shows beside an answer: the same severity words, and the channels of highest PSI."""
    reference = live_reference()
    probabilities = np.tile([[0.8, 0.1, 0.1]], (120, 1))
    same = drift.recording_drift(reference, synthetic_windows(120, 1), probabilities, ["a", "b", "c"])
    assert same["severity"] == "none" and same["windows"] == 120
    milli_g = synthetic_windows(120, 1, acc_scale=MILLI_G_AS_SI)
    shifted = drift.recording_drift(reference, milli_g, probabilities, ["a", "b", "c"], top=3)
    assert shifted["severity"] == "critical"
    top = [c["channel"] for c in shifted["most_drifted"]]
    assert len(top) == 3 and set(top) <= set(ACC)  # only the accelerometer was scaled
    psis = [c["psi"] for c in shifted["most_drifted"]]
    assert psis == sorted(psis, reverse=True) and psis[-1] >= max(shifted["channels"][g]["psi"] for g in GYR)
    # A fresh monitor per recording: the earlier call left nothing behind.
    assert drift.recording_drift(reference, synthetic_windows(120, 1), probabilities, ["a", "b", "c"]) == same


# ---------------------------------------------------------------- the report's model-output and MMD rules

def smooth_windows(n: int, seed: int) -> np.ndarray:
    """[n, 200, 6] slow sines with random phase plus a little noise: a distribution with dynamics."""
    rng = np.random.default_rng(seed)
    t = np.arange(200) / 50.0
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 6))
    return (np.sin(2 * np.pi * 0.5 * t[None, :, None] + phase) + rng.normal(0, 0.05, (n, 200, 6))).astype(np.float32)


SMALL_MMD = {**MONITOR, "mmd": {**MONITOR["mmd"], "windows": 150, "permutations": 199}}


def test_outputs_alone_can_drift_label_shares_warn_and_rising_entropy_is_critical():
    reference_windows, production_windows = smooth_windows(300, seed=0), smooth_windows(200, seed=1)
    reference_outputs = {"windows": 300, "label_proportions": {"a": 0.34, "b": 0.33, "c": 0.33},
                         "mean_confidence": 0.8, "mean_entropy": 0.30}
    reference = drift.build_reference(reference_windows, bins=10, max_samples=50_000, seed=0,
                                      thresholds=MONITOR["thresholds"], votes=2, outputs=reference_outputs)
    # The same sensor distribution; the model now says "a" for 80 % of the windows.
    shifted = {"windows": 200, "label_proportions": {"a": 0.8, "b": 0.1, "c": 0.1}, "mean_confidence": 0.8,
               "mean_entropy": 0.30}
    report = drift.drift_report(reference, reference_windows, production_windows, SMALL_MMD, production_outputs=shifted)
    assert {ch["severity"] for ch in report["channels"].values()} == {"none"}
    assert report["multivariate"]["severity"] == "none"
    expected_psi = sum((p - r) * np.log(p / r) for p, r in zip([0.8, 0.1, 0.1], [0.34, 0.33, 0.33]))  # 0.94
    assert report["outputs"]["label_psi"] == pytest.approx(expected_psi, rel=1e-6)
    assert report["outputs"]["levels"] == {"label_psi": "warning", "entropy_increase": "none"}
    assert report["severity"] == "warning"
    assert report["drifted"] == ["model outputs [warning]: label PSI 0.94 (80% predicted a), entropy 0.30 vs 0.30"]

    # Same label shares, but the model is much less sure: entropy up 0.3 (critical from 0.25).
    unsure = {**reference_outputs, "mean_entropy": 0.60}
    report = drift.drift_report(reference, reference_windows, production_windows, SMALL_MMD, production_outputs=unsure)
    assert report["outputs"]["entropy_increase"] == pytest.approx(0.30)
    assert report["outputs"]["levels"] == {"label_psi": "none", "entropy_increase": "critical"}
    assert report["severity"] == "critical"
    # Without production outputs (or a reference without outputs) the outputs are not judged.
    assert drift.drift_report(reference, reference_windows, production_windows, SMALL_MMD)["outputs"] is None


def test_a_large_mmd_counts_only_when_its_p_value_is_below_alpha():
    """Shuffling each window in time keeps every per-sample distribution and destroys the dynamics:
    only the multivariate test sees it."""
    reference_windows = smooth_windows(300, seed=0)
    rng = np.random.default_rng(2)
    production_windows = np.stack([w[rng.permutation(200)] for w in smooth_windows(150, seed=1)])
    reference = drift.build_reference(reference_windows, bins=10, max_samples=50_000, seed=0,
                                      thresholds=MONITOR["thresholds"], votes=2)
    strict = drift.drift_report(reference, reference_windows, production_windows, SMALL_MMD)
    mmd = strict["multivariate"]
    assert {ch["severity"] for ch in strict["channels"].values()} == {"none"}
    assert mmd["mmd2"] > MONITOR["thresholds"]["mmd"][1]  # far past "critical"
    assert mmd["pvalue"] == 1 / 200  # no permutation comes close: the smallest p 199 permutations can give
    assert mmd["severity"] == strict["severity"] == "critical"
    assert strict["drifted"][0].startswith("window features [critical]: MMD^2")

    # The same effect with alpha at that smallest p: p < alpha fails, so the MMD does not count.
    lenient = {**SMALL_MMD, "mmd": {**SMALL_MMD["mmd"], "alpha": 1 / 200}}
    report = drift.drift_report(reference, reference_windows, production_windows, lenient)
    assert report["multivariate"]["mmd2"] == mmd["mmd2"] and report["multivariate"]["pvalue"] == 1 / 200
    assert report["multivariate"]["severity"] == report["severity"] == "none" and report["drifted"] == []


# ---------------------------------------------------------------- the live monitor, figure by figure

def two_bin_reference(min_windows: int) -> dict:
    """Every channel split at 0 into two equally likely bins; the model said "a" or "b" equally often."""
    channel = {"unit": "x", "edges": [0.0], "proportions": [0.5, 0.5]}
    return {"format": 1, "windows": 10, "window_length": 2, "channels": dict.fromkeys(drift.MONITORED, channel),
            "outputs": {"windows": 10, "label_proportions": {"a": 0.5, "b": 0.5}, "mean_confidence": 0.7,
                        "mean_entropy": 0.5},
            "thresholds": MONITOR["thresholds"], "votes": 2, "min_windows": min_windows}


def entropy_bits(p) -> float:
    return -sum(x * np.log2(x) for x in p)


def test_live_summary_bins_outputs_and_gauges_worked_out_by_hand():
    from prometheus_client import CollectorRegistry, generate_latest

    monitor = drift.RunningDriftMonitor(two_bin_reference(min_windows=2))
    # Each axis: one sample above 0, one below (the reference's shares); the magnitudes are all above 0.
    window = np.array([[1.0] * 6, [-1.0] * 6], np.float32)
    monitor.observe(window[None], np.array([[0.9, 0.1]]))
    monitor.observe(window[None])  # no probabilities: counts the window, not an answer
    monitor.observe(window[None], np.array([[0.6, 0.4]]))
    summary = monitor.summary()
    assert (summary["windows"], summary["enough_data"], summary["min_windows"]) == (3, True, 2)
    for axis in CHANNELS:
        assert summary["channels"][axis] == {"psi": 0.0, "ks_binned": 0.0, "severity": "none"}
    norm_psi = drift.psi([0.5, 0.5], [0.0, 1.0])
    for norm in ("acc_norm", "gyr_norm"):  # all in the upper bin: PSI far past 1, binned KS 0.5: critical
        assert summary["channels"][norm] == {"psi": norm_psi, "ks_binned": 0.5, "severity": "critical"}
    production = summary["outputs"]["production"]
    assert production["windows"] == 2 and production["label_proportions"] == {"a": 1.0, "b": 0.0}
    assert production["mean_confidence"] == pytest.approx(0.75)
    assert production["mean_entropy"] == pytest.approx((entropy_bits([0.9, 0.1]) + entropy_bits([0.6, 0.4])) / 2)
    assert summary["severity"] == "critical"
    assert summary["drifted"] == [f"{norm} [critical]: PSI {norm_psi:.2f}, binned KS 0.50" for norm in ("acc_norm", "gyr_norm")]

    samples = drift.prometheus_samples(summary)
    assert samples[:3] == [("har_drift_windows_observed", {}, 3.0), ("har_drift_not_worn_windows", {}, 0.0),
                           ("har_drift_severity", {}, 2.0)]
    assert samples[3:5] == [("har_drift_psi", {"channel": "ax"}, 0.0), ("har_drift_ks_binned", {"channel": "ax"}, 0.0)]
    assert samples[-3:] == [("har_drift_mean_entropy", {}, production["mean_entropy"]),
                            ("har_drift_mean_confidence", {}, production["mean_confidence"]),
                            ("har_drift_label_psi", {}, summary["outputs"]["label_psi"])]
    assert len(samples) == 3 + 2 * len(drift.MONITORED) + 3
    registry = CollectorRegistry()
    registry.register(drift.DriftCollector(monitor))
    exposition = generate_latest(registry).decode()
    for name, help_text in drift.HELP.items():
        assert f"# HELP {name} {help_text}\n# TYPE {name} gauge\n" in exposition
    assert "har_drift_windows_observed 3.0" in exposition and 'har_drift_ks_binned{channel="gyr_norm"} 0.5' in exposition
    assert "har_drift_mean_confidence 0.75" in exposition

    # Below min_windows nothing is judged, outputs included; after reset nothing is counted.
    early = drift.RunningDriftMonitor(two_bin_reference(min_windows=4))
    early.observe(np.stack([window] * 3), np.array([[0.9, 0.1]] * 3))
    summary = early.summary()
    assert not summary["enough_data"] and summary["severity"] == "none" and summary["drifted"] == []
    assert summary["outputs"]["severity"] == "none" and summary["channels"]["acc_norm"]["psi"] == norm_psi
    early.reset()
    summary = early.summary()
    assert summary["windows"] == 0 and summary["outputs"] is None
    assert [s for s in drift.prometheus_samples(summary) if s[0].startswith("har_drift_mean")] == []
    assert all(c["psi"] == drift.psi([0.5, 0.5], [0.0, 0.0]) for c in summary["channels"].values())
    # Labels default to the reference's; other labels than the reference's are refused.
    assert drift.RunningDriftMonitor(two_bin_reference(2)).labels == ["a", "b"]
    with pytest.raises(ValueError, match=r"built for labels \['a', 'b'\], the model has \['x', 'y'\]"):
        drift.RunningDriftMonitor(two_bin_reference(2), labels=["x", "y"])


@pytest.mark.parametrize("production, hint", [
    (9.80665 * 1000 / 9.80665, "median |a| is 102 x the reference's: looks like milli-g fed as m/s^2 (x 1000/9.80665)"),
    (1.0, "median |a| is 0.102 x the reference's: looks like g fed as m/s^2 (x 1/9.80665)"),
    (9.80665 * 9.80665 / 1000, "median |a| is 0.00981 x the reference's: looks like m/s^2 fed as milli-g (x 9.80665/1000)"),
    (1.2 * 1000, "median |a| is 122 x the reference's: looks like milli-g fed as m/s^2 (x 1000/9.80665)"),  # within 25 %
    (1.3 * 1000, None),  # 33 % off the factor: not a unit mistake
    (9.80665, None),
    (0.0, None),
])
def test_units_hint_names_a_known_unit_factor_within_25_percent(production, hint):
    assert drift.units_hint(9.80665, production) == hint


def test_units_hint_needs_a_reference_magnitude():
    assert drift.units_hint(0.0, 1000.0) is None
