"""drift stages: the reference shipped with the model, and production recordings judged against it.

    python -m stages.drift reference   # training windows (+ the model on held-out windows)
                                       #   -> models/drift_reference.json (beside models/model.onnx)
    python -m stages.drift report      # fused production recordings, windowed as in training
                                       #   -> metrics/drift.json + reports/drift.html

Production recordings are prepared as every way in prepares them (har/scoring.py `prepare`, with
the model card's own preprocessing: a table fused otherwise is refused). Windows in non-wear
episodes (har/wear.py) are counted and left out of every statistic: a watch on a desk is not drift. When fewer than `monitor.min_windows`
worn windows remain, nothing is judged and the report says why in plain words.

The report also runs the held-out test subjects through the same checks (`control`): they
must come out "none", which shows on every run that the thresholds do not cry wolf.
"""
from __future__ import annotations

import base64
import html
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, write_json
from har.drift import (MONITORED, UNITS, bin_counts, build_reference, drift_report, load_reference,
                       output_summary, reference_path_for, sample_values, unjudged_report, wear_finding)
from har.modelfile import read_card
from har.notify import notify_drift
from har.preprocessing import Preprocessing
from har.scoring import FusedTable, fused_index, prepare
from har.wear import WearRule

METRICS = Path("metrics/drift.json")
COLOURS = {"none": "#2e7d32", "warning": "#ef6c00", "critical": "#c62828"}


def predict_onnx(model_path, windows: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, list[str]]:
    """The model's probabilities for windows [n, L, 6] and its labels, through the service's own runtime."""
    from har.runtime import ModelRuntime  # checks the model's checksum and contract, as the service does

    runtime = ModelRuntime(model_path)
    parts = [runtime.predict(windows[i:i + batch].astype(np.float32)) for i in range(0, len(windows), batch)]
    probabilities = np.concatenate(parts) if parts else np.empty((0, len(runtime.card.labels)), np.float32)
    return probabilities, runtime.card.labels


def production_windows(folder, preprocessing: Preprocessing, wear_rule: WearRule) -> tuple[np.ndarray, int, list[dict]]:
    """The worn windows of every fused production recording under `folder` (one index.csv + parquet per session),
    prepared as the service prepares an upload; the not-worn windows are counted, per recording too."""
    folder = Path(folder)
    parts, recordings, not_worn = [], [], 0
    for index_path in sorted(folder.glob("**/index.csv")):
        _, fusion = fused_index(index_path.parent)
        for row in pd.read_csv(index_path).itertuples():
            prepared = prepare(FusedTable.read(index_path.parent / row.file, fusion=fusion.get(row.recording)),
                               preprocessing, wear_rule)
            parts.append(prepared.worn_windows)
            not_worn += prepared.not_worn_windows
            recordings.append({"recording": row.recording, "file": row.file, "windows": int(len(prepared.windows)),
                               "not_worn_windows": prepared.not_worn_windows,
                               "not_worn_minutes": round(sum(e - s for s, e in prepared.nonwear) / 60.0, 3)})
    if not recordings:
        raise ValueError(f"{folder}: holds no fused recordings (expected <session>/index.csv from stages.fuse)")
    return np.concatenate(parts), not_worn, recordings


def model_outputs(model_path, windows: np.ndarray) -> dict | None:
    if not Path(model_path).exists():
        return None
    probabilities, labels = predict_onnx(model_path, windows)
    return output_summary(probabilities, labels)


# ---------------------------------------------------------------- the stages

def make_reference(params: dict) -> dict:
    monitor = params["monitor"]
    train = np.load(monitor["reference"])["X"]
    outputs = model_outputs(monitor["model"], np.load(monitor["outputs_reference"])["X"])
    if outputs is None:
        print(f"no model at {monitor['model']}: the reference has no model outputs", file=sys.stderr)
    else:
        outputs["source"] = monitor["outputs_reference"]
    reference = build_reference(train, bins=monitor["bins"], max_samples=monitor["max_samples"], seed=monitor["seed"],
                                thresholds=monitor["thresholds"], votes=monitor["votes"], outputs=outputs,
                                min_windows=monitor["min_windows"])
    path = reference_path_for(monitor["model"])
    write_json(path, reference)
    print(f"{path}: {reference['windows']} training windows, {len(MONITORED)} channels x {monitor['bins']} bins, "
          f"model outputs {'included' if outputs else 'absent'}")
    return reference


def make_report(params: dict) -> dict:
    monitor = params["monitor"]
    reference = load_reference(reference_path_for(monitor["model"]))
    train = np.load(monitor["reference"])["X"]
    # The model decides how its input is made: its card's preprocessing, never params.
    preprocessing = Preprocessing.from_card(read_card(Path(monitor["model"]).read_bytes(), str(monitor["model"])))
    wear_rule = WearRule.from_params(params.get("wear"))
    production, not_worn, recordings = production_windows(monitor["production"], preprocessing, wear_rule)
    # Drift is judged on worn windows only; a recording that is mostly not worn says so, not a story about drift.
    finding = wear_finding(len(production), not_worn, monitor["min_windows"])
    if len(production) < monitor["min_windows"]:
        result = unjudged_report(len(production), len(train), finding)
    else:
        result = drift_report(reference, train, production, monitor, model_outputs(monitor["model"], production))
        if finding:
            result["drifted"].insert(0, finding)
    result["wear"] = {"worn_windows": int(len(production)), "not_worn_windows": not_worn, "rule": wear_rule.describe()}
    result["production_source"] = {"folder": monitor["production"], "recordings": recordings}

    if monitor.get("control") and Path(monitor["control"]).exists():
        control_windows = np.load(monitor["control"])["X"]
        control = drift_report(reference, train, control_windows, monitor, model_outputs(monitor["model"], control_windows))
        result["control"] = {"source": monitor["control"], **summary_of(control)}

    write_json(METRICS, metrics_of(result))
    Path(monitor["report"]).parent.mkdir(parents=True, exist_ok=True)
    Path(monitor["report"]).write_text(render_html(result, reference, train, production, monitor))
    print(f"drift severity {result['severity'].upper()} on {len(production)} worn production windows "
          f"({not_worn} not worn)"
          + (f"; held-out test subjects: {result['control']['severity']}" if "control" in result else ""))
    for line in result["drifted"]:
        print("  " + line)
    print(notify_drift(result, monitor.get("webhook") or {}, report=monitor["report"]))
    return result


def summary_of(result: dict) -> dict:
    """The headline numbers of one comparison (for the control beside production)."""
    return {"severity": result["severity"], "windows": result["production_windows"],
            "channels": {name: {k: c[k] for k in ("psi", "ks_statistic", "wasserstein_norm", "severity")}
                         for name, c in result["channels"].items()},
            "mmd2": result["multivariate"]["mmd2"],
            "outputs_severity": result["outputs"]["severity"] if result["outputs"] else None}


def metrics_of(result: dict) -> dict:
    """metrics/drift.json: everything numeric and the verdict, nothing bulky."""
    outputs = result["outputs"]
    if outputs:
        outputs = {k: outputs[k] for k in ("label_psi", "entropy_increase", "severity", "levels")} | {
            "production": outputs["production"], "reference": outputs["reference"]}
    return {"severity": result["severity"], "judged": result["judged"], "wear": result["wear"],
            "drifted": result["drifted"], "units_hint": result["units_hint"],
            "production_windows": result["production_windows"], "reference_windows": result["reference_windows"],
            "channels": result["channels"], "multivariate": result["multivariate"], "outputs": outputs,
            "control": result.get("control"), "production_source": result["production_source"]}


# ---------------------------------------------------------------- the HTML report

def png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def channel_figure(name: str, reference: np.ndarray, production: np.ndarray, edges: list, ref_props: list) -> str:
    """Left: densities on a shared range. Right: shares of the reference's decile bins (what PSI compares)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 2.8))
    figure.subplots_adjust(bottom=0.2, wspace=0.25)  # fixed margins: a layout engine doubles the drawing time
    low, high = np.percentile(np.concatenate([reference, production]), [0.5, 99.5])
    bins = np.linspace(low, high if high > low else low + 1, 80)
    # Pre-binned steps: one artist per curve draws much faster than hist()'s one rectangle per bin.
    for values, label, colour in [(reference, "training reference", "#1565c0"), (production, "production", "#c62828")]:
        density, _ = np.histogram(values, bins=bins, density=True)
        left.stairs(density, bins, fill=True, alpha=0.5, label=label, color=colour)
    left.set_xlabel(f"{name} ({UNITS[name]})")
    left.legend(fontsize=8)
    prod_props = bin_counts(production, np.asarray(edges)) / len(production)
    x = np.arange(len(ref_props))
    right.bar(x - 0.2, ref_props, width=0.4, color="#1565c0", label="reference")
    right.bar(x + 0.2, prod_props, width=0.4, color="#c62828", label="production")
    right.set_xlabel("reference decile bin")
    right.set_ylabel("share")
    right.legend(fontsize=8)
    return png(figure)


def outputs_figure(outputs: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(outputs["reference"]["label_proportions"])
    x = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(10, 3))
    figure.subplots_adjust(bottom=0.35)
    axis.bar(x - 0.2, [outputs["reference"]["label_proportions"][k] for k in labels], width=0.4, color="#1565c0",
             label="held-out reference")
    axis.bar(x + 0.2, [outputs["production"]["label_proportions"].get(k, 0) for k in labels], width=0.4,
             color="#c62828", label="production")
    axis.set_xticks(x, labels, rotation=30, ha="right")
    axis.set_ylabel("share of predicted windows")
    axis.legend(fontsize=8)
    return png(figure)


def badge(severity: str) -> str:
    return f'<span class="badge" style="background:{COLOURS[severity]}">{severity.upper()}</span>'


def render_html(result: dict, reference: dict, train: np.ndarray, production: np.ndarray, monitor: dict) -> str:
    if not result["judged"]:
        return unjudged_html(result)
    rng = np.random.default_rng(monitor["seed"])  # a plotting sample: densities need far fewer points than the tests
    ref_values = sample_values(train, 50_000, rng)
    prod_values = sample_values(production, 50_000, rng)
    control = result.get("control")
    esc = html.escape

    rows = []
    for name, c in result["channels"].items():
        ctrl = control["channels"][name] if control else None
        rows.append(
            f"<tr><td>{name}</td><td>{c['psi']:.3f}</td><td>{c['ks_statistic']:.3f}</td><td>{c['ks_pvalue']:.2g}</td>"
            f"<td>{c['wasserstein_norm']:.3f}</td><td>{c['production_median']:.3g} / {c['reference_median']:.3g}</td>"
            f"<td>{c['production_std']:.3g} / {c['reference_std']:.3g}</td><td>{badge(c['severity'])}</td>"
            + (f"<td>{ctrl['psi']:.3f} / {ctrl['ks_statistic']:.3f} / {ctrl['wasserstein_norm']:.3f} {badge(ctrl['severity'])}</td>"
               if ctrl else "") + "</tr>")
    figures = []
    for c, name in enumerate(MONITORED):
        bins = reference["channels"][name]
        image = channel_figure(name, ref_values[:, c], prod_values[:, c], bins["edges"], bins["proportions"])
        figures.append(f"<h3>{name} {badge(result['channels'][name]['severity'])}</h3>"
                       f'<img alt="{name}: reference vs production" src="data:image/png;base64,{image}">')

    outputs = result["outputs"]
    outputs_html = "<p>No model outputs (no model, or a reference built without one).</p>"
    if outputs:
        outputs_html = (
            f"<p>{badge(outputs['severity'])} label PSI {outputs['label_psi']:.3f}; mean normalised entropy "
            f"{outputs['production']['mean_entropy']:.3f} vs {outputs['reference']['mean_entropy']:.3f} on held-out "
            f"subjects (rise {outputs['entropy_increase']:+.3f}); mean top-1 probability "
            f"{outputs['production']['mean_confidence']:.3f} vs {outputs['reference']['mean_confidence']:.3f}.</p>"
            f'<img alt="predicted labels" src="data:image/png;base64,{outputs_figure(outputs)}">')
    mmd = result["multivariate"]
    drifted = "".join(f"<li>{esc(line)}</li>" for line in result["drifted"]) or "<li>nothing</li>"
    control_html = ""
    if control:
        control_html = (f"<p>Control: the held-out test subjects ({control['windows']} windows of "
                        f"<code>{esc(control['source'])}</code>) through the same checks: {badge(control['severity'])} "
                        f"(MMD&sup2; {control['mmd2']:.3f}). They are the same population as training, so anything "
                        f"but NONE there means the thresholds are too tight.</p>")
    sources = ", ".join(f"{esc(r['recording'])} ({r['windows']} windows)" for r in result["production_source"]["recordings"])
    thresholds = ", ".join(f"{k} {v}" for k, v in monitor["thresholds"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
.badge {{ color: white; padding: 2px 8px; border-radius: 4px; font-weight: bold; font-size: 0.9em; }}
</style></head><body>
<h1>Drift report {badge(result['severity'])}</h1>
<p>Production: <code>{esc(result['production_source']['folder'])}</code>: {sources}.
Reference: {result['reference_windows']} training windows (<code>{esc(monitor['reference'])}</code>).</p>
<h2>What drifted</h2><ul>{drifted}</ul>
{control_html}
<h2>Per channel</h2>
<p>Severity comes from effect sizes: a channel reaches a level when {monitor['votes']} of PSI, KS statistic and
W/sd (Wasserstein distance over the reference's standard deviation) reach it. Thresholds [warning, critical]:
{esc(thresholds)}. KS p-values count windows, not samples, and are near 0 for any real difference at these sizes:
read them, do not judge by them.</p>
<table><tr><th>channel</th><th>PSI</th><th>KS</th><th>KS p</th><th>W/sd</th><th>median prod / ref</th>
<th>sd prod / ref</th><th>severity</th>{'<th>control PSI / KS / W/sd</th>' if control else ''}</tr>
{''.join(rows)}</table>
<h2>Window features (multivariate)</h2>
<p>{badge(mmd['severity'])} MMD&sup2; {mmd['mmd2']:.4f} over 40 window features ({mmd['reference_windows']} vs
{mmd['production_windows']} windows), permutation p-value {mmd['pvalue']:.3g} ({mmd['permutations']} permutations).</p>
<h2>Model outputs</h2>{outputs_html}
<h2>Reference vs production, channel by channel</h2>
{''.join(figures)}
</body></html>
"""


def unjudged_html(result: dict) -> str:
    """The report when too few worn windows remain: the finding in plain words, nothing else to read."""
    esc = html.escape
    sources = ", ".join(f"{esc(r['recording'])} ({r['windows']} windows, {r['not_worn_windows']} not worn)"
                        for r in result["production_source"]["recordings"])
    findings = "".join(f"<li>{esc(line)}</li>" for line in result["drifted"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}</style></head><body>
<h1>Drift report: not judged</h1>
<p>Production: <code>{esc(result['production_source']['folder'])}</code>: {sources}.</p>
<h2>Findings</h2><ul>{findings}</ul>
<p>Non-wear rule: {esc(result['wear']['rule'])}.</p>
</body></html>
"""


def main(which: str) -> None:
    params = load_params()
    if which == "reference":
        make_reference(params)
    elif which == "report":
        make_report(params)
    else:
        raise SystemExit(f"usage: python -m stages.drift reference|report (got {which!r})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "report")
