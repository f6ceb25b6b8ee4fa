"""The pull-request report: what this branch did to metrics, parameters and plots against a base revision.

It leads with the verdict: six lines (test macro-F1 of the model and the baseline, before →
after; minutes per activity on the test subjects' generated sessions, generic and per-person; the
registry gate's decision; drift on the held-out control; export parity; training time), then the parameters and plots that changed, then the metrics: only changed rows in the
main table (the unchanged ones counted), per-class rows and the full table in collapsed blocks.

Run from the repository root, after `dvc repro`:

    python scripts/pr_report.py [BASE] [OUT]        # defaults: main report.md

It writes OUT (Markdown) and the images it shows into `<OUT stem>_plots/` beside OUT, with
links relative to OUT, so the file reads the same locally and when CI posts it with
`cml comment create OUT` (CML uploads the local images and files a comment links to).
The comparisons come from DVC: `dvc metrics diff BASE --all --json`, `dvc params diff BASE --md`
and `dvc plots diff BASE`, each comparing BASE with the workspace; the gate, drift and parity
lines read the workspace's metrics files.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

WORKSPACE = "workspace"  # DVC's name for the current (possibly uncommitted) state in every diff
SERIES_KEYS = ("rev", "filename", "field")  # what tells the lines of one DVC plot apart


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def dvc(*args: str) -> str:
    # The DVC of this interpreter's environment, so the report uses the pinned version.
    return run(sys.executable, "-m", "dvc", *args)


def commit_of(revision: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"base revision {revision!r} is not a commit in this repository; "
                         f"expected a branch, tag or commit (fetch it first, e.g. `git fetch origin main`)")
    return done.stdout.strip()[:8]


def find_field(spec, axis: str):
    """The data field a Vega-Lite spec puts on `axis` ('x' or 'y'), wherever the template nests it."""
    if isinstance(spec, dict):
        encoding = spec.get(axis)
        if isinstance(encoding, dict) and isinstance(encoding.get("field"), str):
            return encoding["field"]
        children = spec.values()
    elif isinstance(spec, list):
        children = spec
    else:
        return None
    for child in children:
        field = find_field(child, axis)
        if field is not None:
            return field
    return None


def vega_versions(entry: dict) -> dict[str, list[dict]]:
    """DVC tags each data row of an overlaid plot with its `rev`; split the rows back per revision."""
    versions: dict[str, list[dict]] = {}
    for row in entry["content"]["data"]["values"]:
        row = dict(row)
        versions.setdefault(row.pop("rev"), []).append(row)
    return versions


def plot_versions(entries: list[dict]) -> dict[str, object]:
    """Something comparable per revision: the data rows of a Vega plot, the bytes of an image."""
    versions: dict[str, object] = {}
    for entry in entries:
        if entry["type"] == "vega":
            versions.update(vega_versions(entry))
        elif entry["type"] == "image":
            versions[entry["revisions"][0]] = Path(entry["url"]).read_bytes()
        else:
            raise SystemExit(f"dvc plots diff: unexpected plot type {entry['type']!r}; expected 'vega' or 'image'")
    return versions


def changed_plots(plots: dict, base: str) -> dict[str, list[dict]]:
    """The plots whose content differs between BASE and the workspace (new and removed ones included)."""
    changed = {}
    for plot_id, entries in plots.items():
        versions = plot_versions(entries)
        if versions.get(base) != versions.get(WORKSPACE):
            changed[plot_id] = entries
    return changed


def as_number(value) -> float | None:
    # Rows read from CSV/TSV (dvclive's curves) arrive as text: "0.5".
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def line_series(rows: list[dict], x: str, y: str) -> dict[str, tuple[list, list]] | None:
    """One (xs, ys) line per revision (and per file or field in multi-file plots); None if not numeric."""
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        point = as_number(row.get(x)), as_number(row.get(y))
        if None in point:
            return None  # e.g. a confusion matrix: categories, not a line
        label = " ".join(str(row[key]) for key in SERIES_KEYS if key in row)
        xs, ys = series.setdefault(label, ([], []))
        xs.append(point[0])
        ys.append(point[1])
    return series


def draw_lines(title: str, series: dict, x: str, y: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen in CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, label=label)
    axes.set(title=title, xlabel=x, ylabel=y)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_section(plot_id: str, entries: list[dict], base: str, folder: Path, out_dir: Path) -> str:
    """Markdown for one changed plot: both images side by side, or the data plot drawn as lines."""
    link = lambda path: Path(path).resolve().relative_to(out_dir.resolve()).as_posix()
    lines = [f"#### `{plot_id}`", ""]
    images = {entry["revisions"][0]: entry["url"] for entry in entries if entry["type"] == "image"}
    if images:
        cell = lambda rev: f"![{plot_id} at {rev}]({link(images[rev])})" if rev in images else "(absent)"
        lines += [f"| {base} | {WORKSPACE} |", "|---|---|", f"| {cell(base)} | {cell(WORKSPACE)} |"]
    for entry in (entry for entry in entries if entry["type"] == "vega"):
        x, y = find_field(entry["content"], "x"), find_field(entry["content"], "y")
        series = line_series(entry["content"]["data"]["values"], x, y) if x and y else None
        if series is None:
            lines.append("Not a line plot (see the interactive plots below).")
            continue
        image = folder / (plot_id.replace("/", "_") + ".png")
        draw_lines(plot_id, series, x, y, image)
        lines.append(f"![{plot_id}]({link(image)})")
    return "\n".join(lines)


def number(value) -> str:
    """A metric as a reviewer reads it: 5 decimals like `dvc metrics diff --md`, tiny values kept visible."""
    if value is None:
        return "-"
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"{value:.2g}"  # parity differences of 1e-7 would round to 0
    return str(round(value, 5)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def metric_rows(diff: dict) -> list[dict]:
    """`dvc metrics diff --all --json` as rows: path, metric, old, new, change, and whether it changed."""
    rows = []
    for path, metrics in sorted(diff.items()):
        for metric, values in sorted(metrics.items()):
            old, new = values.get("old"), values.get("new")
            rows.append({"path": path, "metric": metric, "old": old, "new": new,
                         "change": values.get("diff"), "changed": old != new})
    return rows


# Keys that hold one row per class, per subject or per sensor channel (eval.json's per_class and
# per_subject_macro_f1, windows.json's quality.motion_ratio, drift.json's channels and
# label_proportions): dozens of rows each, read only once the headline figures moved.
BREAKDOWNS = ("per_class", "per_subject", "motion_ratio", "channels", "label_proportions")


def is_breakdown(row: dict) -> bool:
    return any(part.startswith(BREAKDOWNS) for part in row["metric"].split("."))


def metrics_table(rows: list[dict], base: str) -> str:
    lines = [f"| Path | Metric | {base} | {WORKSPACE} | Change |", "|---|---|---|---|---|"]
    lines += [f"| {row['path']} | {row['metric']} | {number(row['old'])} | {number(row['new'])} | "
              f"{number(row['change'])} |" for row in rows]
    return "\n".join(lines)


def collapsed(summary: str, body: str) -> str:
    # GitHub renders Markdown inside <details> only with a blank line after <summary>.
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def metrics_section(rows: list[dict], base: str) -> str:
    """Changed rows in the main table, unchanged ones counted; per-class rows and the full table collapsed."""
    headline = [row for row in rows if not is_breakdown(row)]
    breakdown = [row for row in rows if is_breakdown(row)]
    changed = [row for row in headline if row["changed"]]
    unchanged = len(headline) - len(changed)
    parts = [metrics_table(changed, base) if changed else "No metric changed.",
             f"{unchanged} unchanged metric{'s' if unchanged != 1 else ''} not shown."]
    changed_breakdown = [row for row in breakdown if row["changed"]]
    if breakdown:
        parts.append(collapsed(f"Per-class, per-subject and per-channel metrics: {len(changed_breakdown)} of {len(breakdown)} "
                               f"changed", metrics_table(changed_breakdown, base) if changed_breakdown
                               else "None changed."))
    parts.append(collapsed(f"All metrics ({len(rows)} rows)", metrics_table(rows, base)))
    return "\n\n".join(parts)


def read_json(path: str) -> dict:
    """A metrics file of the workspace, or {} when this revision has none (the verdict then says so)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def before_after(rows: list[dict], path: str, metric: str, unit: str = "", digits: int = 4) -> str:
    row = next((row for row in rows if row["path"] == path and row["metric"] == metric), None)
    if row is None or row["new"] is None:
        return f"not measured (`{path}` has no `{metric}`)"
    show = lambda value: "-" if value is None else f"{value:.{digits}f}{unit}"
    if row["old"] is None:
        return f"{show(row['new'])} (new)"
    if not row["changed"]:
        return f"{show(row['new'])} (unchanged)"
    return f"{show(row['old'])} → {show(row['new'])} ({row['new'] - row['old']:+.{digits}f}{unit})"


def training_time(timing: dict) -> str:
    """This run's training time (the base revision's is not recorded: no tracked file holds a duration)."""
    if "train_seconds" not in timing:
        return "not measured (`logs/train.json` is missing: the train stage did not run here)"
    return f"{timing['train_seconds']:.1f} s in this run"


def verdict(rows: list[dict]) -> list[str]:
    """Six lines a reviewer reads first: quality against the baseline, minutes, the gate, drift, parity, time."""
    drift, export, train = (read_json(f"metrics/{name}.json") for name in ("drift", "export", "train"))
    # This run's registry answer and training time: logs, not metrics (a DVC output holds neither; stages/register.py).
    register, timing = read_json("logs/register.json"), read_json("logs/train.json")
    if "promoted" in register:
        decision = (f"**promoted**: v{register.get('version')} is champion" if register["promoted"] else
                    f"**not promoted**: v{register.get('version')} stays challenger, champion v{register.get('champion_version')}")
        gate = f"{decision} ({'; '.join(register.get('reasons', []))})"
    else:
        gate = "no decision (`logs/register.json` is missing: the register stage did not run)"
    control = drift.get("control", {})
    if "severity" in control:
        verdict_control = "**none**" if control["severity"] == "none" else (
            f"**{control['severity']}**: the thresholds flag held-out people, so they are too tight")
        drift_line = (f"{verdict_control} on {control.get('windows', '?')} test windows "
                      f"(production recording: {drift.get('severity', '?')})")
    else:
        drift_line = "not measured (`metrics/drift.json` has no `control`)"
    parity = export.get("parity", {})
    if "passed" in parity:
        parity_line = (f"{'**passed**' if parity['passed'] else '**FAILED**'}: max |p_keras − p_onnx| "
                       f"{number(parity.get('max_abs_diff'))} (tolerance {number(parity.get('atol'))}) on "
                       f"{parity.get('windows', '?')} windows, top-1 agreement {parity.get('top1_agreement', 0):.1%}")
    else:
        parity_line = "not checked (`metrics/export.json` has no `parity`)"
    epochs = (f", best epoch {train['best_epoch']} of {train['epochs_run']}"
              if {"best_epoch", "epochs_run"} <= set(train) else "")
    return [
        f"- **Test macro-F1**: model {before_after(rows, 'metrics/eval.json', 'macro_f1')}; baseline "
        f"{before_after(rows, 'metrics/baseline.json', 'macro_f1')} (`metrics/eval.json`, `metrics/baseline.json`)",
        # What a researcher reads: minutes per activity of whole sessions, as a share of the true minutes.
        f"- **Minutes error**: generic {before_after(rows, 'metrics/sessions.json', 'test.generic.minutes_error')}; "
        f"per-person {before_after(rows, 'metrics/sessions.json', 'personal.personal.minutes_error')} of the true "
        f"activity minutes, test subjects' generated sessions (`metrics/sessions.json`)",
        f"- **Gate**: {gate} (`logs/register.json`)",
        f"- **Drift on the held-out control**: {drift_line} (`metrics/drift.json`)",
        f"- **Export parity**: {parity_line} (`metrics/export.json`)",
        f"- **Training time**: {training_time(timing)}{epochs} (`logs/train.json`, `metrics/train.json`)",
    ]


def report_markdown(base: str, base_commit: str, head_commit: str, rows: list[dict], params: str,
                    plot_sections: list[str], html_index: str) -> str:
    parts = [
        f"## Pipeline report: `{base}` ({base_commit}) → workspace (HEAD {head_commit})",
        "\n".join(verdict(rows)),
        "### Parameters that changed", params.strip() or "No parameter changed.",
        "### Plots that changed", *(plot_sections or ["No plot changed."]),
        f"All plots of both revisions, interactive: [{html_index}]({html_index})",
        "### Metrics", metrics_section(rows, base),
    ]
    return "\n\n".join(parts) + "\n"


def build_report(base: str, out: Path) -> str:
    base_commit, head_commit = commit_of(base), commit_of("HEAD")
    rows = metric_rows(json.loads(dvc("metrics", "diff", base, "--all", "--json") or "{}"))
    params = dvc("params", "diff", base, "--md")
    folder = out.parent / f"{out.stem}_plots"
    folder.mkdir(parents=True, exist_ok=True)
    # The HTML page (index.html) keeps its images in static/; the JSON run writes the same files there.
    dvc("plots", "diff", base, "-o", str(folder))
    plots = json.loads(dvc("plots", "diff", base, "--json", "-o", str(folder / "static"))).get("data", {})
    sections = [plot_section(plot_id, entries, base, folder, out.parent)
                for plot_id, entries in sorted(changed_plots(plots, base).items())]
    html_index = (folder / "index.html").relative_to(out.parent).as_posix()
    return report_markdown(base, base_commit, head_commit, rows, params, sections, html_index)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("out", nargs="?", default="report.md", type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build_report(args.base, args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
