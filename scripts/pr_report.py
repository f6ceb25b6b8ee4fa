"""The pull-request report: what this branch did to metrics, parameters and plots against a base revision.

Run from the repository root, after `dvc repro`:

    python scripts/pr_report.py [BASE] [OUT]        # defaults: main report.md

It writes OUT (Markdown) and the images it shows into `<OUT stem>_plots/` beside OUT, with
links relative to OUT, so the file reads the same locally and when CI posts it with
`cml comment create OUT` (CML uploads the local images and files a comment links to).
Everything comes from DVC: `dvc metrics diff BASE --md`, `dvc params diff BASE --md` and
`dvc plots diff BASE`, each comparing BASE with the workspace.
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


def report_markdown(base: str, base_commit: str, head_commit: str, metrics: str, params: str,
                    plot_sections: list[str], html_index: str) -> str:
    parts = [
        f"## Pipeline report: `{base}` ({base_commit}) → workspace (HEAD {head_commit})",
        "### Metrics", metrics.strip() or "No metric changed.",
        "### Parameters", params.strip() or "No parameter changed.",
        "### Plots that changed", *(plot_sections or ["No plot changed."]),
        f"All plots of both revisions, interactive: [{html_index}]({html_index})",
    ]
    return "\n\n".join(parts) + "\n"


def build_report(base: str, out: Path) -> str:
    base_commit, head_commit = commit_of(base), commit_of("HEAD")
    metrics = dvc("metrics", "diff", base, "--md")
    params = dvc("params", "diff", base, "--md")
    folder = out.parent / f"{out.stem}_plots"
    folder.mkdir(parents=True, exist_ok=True)
    # The HTML page (index.html) keeps its images in static/; the JSON run writes the same files there.
    dvc("plots", "diff", base, "-o", str(folder))
    plots = json.loads(dvc("plots", "diff", base, "--json", "-o", str(folder / "static"))).get("data", {})
    sections = [plot_section(plot_id, entries, base, folder, out.parent)
                for plot_id, entries in sorted(changed_plots(plots, base).items())]
    html_index = (folder / "index.html").relative_to(out.parent).as_posix()
    return report_markdown(base, base_commit, head_commit, metrics, params, sections, html_index)


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
