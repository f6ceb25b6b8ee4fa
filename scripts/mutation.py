"""Mutation testing of the core modules with mutmut, one module at a time against its fast tests.

    python scripts/mutation.py                       # all modules, at most 15 min each
    python scripts/mutation.py har/fusion.py --minutes 5 --children 2

For each module, a scratch copy of the project (har, serve, stages, tests, params, conf) gets a
[tool.mutmut] section that mutates only that module and runs only the tests listed below;
`mutmut run` then tries every mutant. A mutant is killed when a test fails with it. Scores
go to metrics/mutation.json: killed / (killed + survived + no tests), with the surviving
mutants' names (`mutmut show NAME` in the scratch folder prints the change).

A measurement, not a gate: it takes minutes per module and the suite itself does not depend on it.
The tests that read the real one-hour Garmin export (seconds per run) are left out: mutmut
re-runs every test that reaches a mutated function, for every mutant.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "mutation"
COPIED = ["har", "serve", "stages", "tests", "conf", "params.yaml"]

# Module -> (its fast tests, a pytest -k expression leaving out the slow ones).
MODULES = {
    "har/fusion.py": (["tests/test_fusion.py"], "not real_garmin"),
    "har/windows.py": (["tests/test_fusion.py", "tests/test_train.py::test_subject_folds_deal_every_subject_into_exactly_one_fold",
                        "tests/test_drift.py"], "not real_garmin and not calibration and not held_out and not garmin "
                                                "and not units_mistake and not stage"),
    "har/garmin.py": (["tests/test_garmin.py"], "not real_export"),
    "serve/validation.py": (["tests/test_serve_parts.py"], ""),
    "har/drift.py": (["tests/test_drift.py"], "not held_out and not garmin and not units_mistake and not stage"),
}
# mutmut's statuses, and which count for the score.
STATUS = re.compile(r"^\s+(\S+): (.+)$")


def prepare(module: str, tests: list[str], keyword: str) -> Path:
    """A scratch project whose pyproject.toml points mutmut at `module` and `tests`."""
    folder = SCRATCH / module.replace("/", "_").removesuffix(".py")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    # Tests find the real data at ../shared/data beside the project root; mutmut runs them from mutants/.
    (folder / "shared").symlink_to(ROOT.parent / "shared")
    selection = [*tests, "-p", "no:cacheprovider", *(["-k", keyword] if keyword else [])]
    (folder / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text().split("[tool.mutmut]")[0]
        + "\n[tool.mutmut]\n"
        + f"source_paths = {json.dumps(['har', 'serve', 'stages'])}\n"
        + f"only_mutate = {json.dumps([module])}\n"
        + f"pytest_add_cli_args_test_selection = {json.dumps(selection)}\n"
        + f"also_copy = {json.dumps(['conf', 'params.yaml'])}\n")
    return folder


def measure(module: str, minutes: float, children: int) -> dict:
    tests, keyword = MODULES[module]
    folder = prepare(module, tests, keyword)
    mutmut = [sys.executable, "-m", "mutmut"]
    started = time.monotonic()
    with open(folder / "mutmut.log", "w") as log:
        try:
            subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=folder, stdout=log,
                           stderr=subprocess.STDOUT, timeout=minutes * 60)
            finished = True
        except subprocess.TimeoutExpired:  # what was tried so far is on disk; the rest counts as not checked
            finished = False
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=folder, capture_output=True, text=True)
    statuses: dict[str, list[str]] = {}
    for line in listing.stdout.splitlines():
        match = STATUS.match(line)
        if match:
            statuses.setdefault(match.group(2), []).append(match.group(1))
    counts = {status: len(names) for status, names in sorted(statuses.items())}
    judged = sum(counts.get(s, 0) for s in ("killed", "survived", "no tests", "timeout"))
    killed = counts.get("killed", 0) + counts.get("timeout", 0)  # a mutant that hangs the tests is caught too
    return {"module": module, "tests": tests, "deselected": keyword or None, "counts": counts,
            "score": round(killed / judged, 3) if judged else None, "finished": finished,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "survived": sorted(statuses.get("survived", []) + statuses.get("no tests", [])),
            "scratch": str(folder.relative_to(ROOT))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), choices=list(MODULES), metavar="MODULE",
                        help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--minutes", type=float, default=15.0, help="time limit per module (default: 15)")
    parser.add_argument("--children", type=int, default=1, help="mutants tried in parallel (default: 1)")
    parser.add_argument("--output", type=Path, default=ROOT / "metrics" / "mutation.json")
    args = parser.parse_args(argv)
    for module in args.modules:
        print(f"{module}: mutating, at most {args.minutes:g} min ...", flush=True)
        result = measure(module, args.minutes, args.children)
        # Read again before writing: the other modules' figures stay as they are, whoever wrote them.
        results = json.loads(args.output.read_text()) if args.output.exists() else {}
        results[module] = result
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")  # after every module
        print(f"{module}: score {result['score']} {result['counts']} in {result['minutes']} min"
              f"{'' if result['finished'] else ' (time limit reached)'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
