"""The collaboration loop: the pull-request report, the DVC remote, the GitHub workflows.

The DVC tests build a throwaway git + DVC project under tmp_path (a one-stage pipeline whose
metric follows a parameter) and never touch this repository's history or cache. It uses this
repository's own .dvc/config, so its default remote is the one a clone of the project gets.
"""
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from configobj import ConfigObj

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"
WORKFLOWS = ROOT / ".github" / "workflows"

# The stage: reads train.lr, appends to a log outside every clone (so a test can count how
# often it really ran), writes a metric, a TSV curve, a curve that never changes, an image and a model.
TRAIN = '''\
import json, pathlib, struct, zlib
import yaml

lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
with open("../stage_runs.log", "a") as log:
    log.write(f"lr={lr}\\n")

def png(path, rgb):
    """A 4x4 single-colour PNG, so the image plot changes with the parameter."""
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\\x00" + bytes(rgb) * 4 for _ in range(4))
    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    path.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

for folder in ("metrics", "plots", "models", "logs"):
    pathlib.Path(folder).mkdir(exist_ok=True)
# The files the report's verdict reads, shaped like the pipeline's; some values follow lr, some do not.
write = lambda name, document: json.dump(document, open(f"metrics/{name}.json", "w"))
write("eval", {"accuracy": round(1 - lr, 4), "macro_f1": round(0.8 - lr / 10, 4),
               "per_class": {"a": {"f1": round(1 - lr, 4), "support": 10}, "b": {"f1": 0.5, "support": 10}}})
write("baseline", {"macro_f1": 0.7})
write("train", {"best_epoch": 4, "epochs_run": 5})
# What the pipeline logs beside its metrics (git-ignored): durations and the registry's answer.
log = lambda name, document: json.dump(document, open(f"logs/{name}.json", "w"))
log("train", {"train_seconds": round(10 + lr * 100, 1)})
write("export", {"parity": {"passed": True, "max_abs_diff": 1e-7, "atol": 1e-4, "windows": 100, "top1_agreement": 1.0}})
promoted = lr > 0.2
write("register", {"macro_f1": round(0.8 - lr / 10, 4), "parity_passed": True})
log("register", {"promoted": promoted, "version": 2 if promoted else 1, "champion_version": 2 if promoted else 1,
                 "reasons": ["export parity check passed", "not worse"]})
write("drift", {"severity": "critical", "control": {"severity": "none", "windows": 100}})
write("sessions", {"test": {"generic": {"minutes_error": round(0.2 + lr / 10, 4)}},
                   "personal": {"personal": {"minutes_error": 0.12}}})
curve = [f"{e}\\t{lr * (5 - e):.4f}" for e in range(5)]  # a TSV, as dvclive writes its curves
pathlib.Path("plots/loss.tsv").write_text("epoch\\tloss\\n" + "\\n".join(curve) + "\\n")
json.dump([{"epoch": e, "value": 1.0} for e in range(5)], open("plots/steady.json", "w"))
png(pathlib.Path("plots/confusion.png"), (int(lr * 255), 0, 0))
pathlib.Path("models/model.bin").write_text(f"weights trained with lr={lr}\\n")
'''

DVC_YAML = '''\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train.lr]
    outs: [models/model.bin]
    metrics:
      - metrics/eval.json: {cache: false}
      - metrics/baseline.json: {cache: false}
      - metrics/train.json: {cache: false}
      - metrics/export.json: {cache: false}
      - metrics/register.json: {cache: false}
      - metrics/drift.json: {cache: false}
      - metrics/sessions.json: {cache: false}
    plots:
      - plots/loss.tsv: {cache: false, x: epoch, y: loss}
      - plots/steady.json: {cache: false, x: epoch, y: value}
      - plots/confusion.png: {cache: false}
'''


def run(*command, cwd, env, check=True):
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done


def stage_runs(work: Path) -> list[str]:
    return (work / "stage_runs.log").read_text().splitlines()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """tmp/project on branch change-lr (lr 0.1 -> 0.3) one commit ahead of main; outputs reproduced."""
    work = tmp_path_factory.mktemp("collaboration")
    repo = work / "project"
    repo.mkdir()
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",  # the stage's `python` is this environment's
        "HOME": str(work),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(work / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    in_repo = lambda *command: run(*command, cwd=repo, env=env)
    in_repo("git", "init", "-q", "-b", "main")
    in_repo(DVC, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for branch, lr in (("main", 0.1), ("change-lr", 0.3)):
        if branch != "main":
            in_repo("git", "checkout", "-q", "-b", branch)
        (repo / "params.yaml").write_text(f"train:\n  lr: {lr}\n")
        in_repo(DVC, "repro", "-q")
        # The second run rewrites the outputs within the same second and at the same sizes: git's stat
        # cache could take them for unchanged, so the index is emptied and every file read again.
        in_repo("git", "rm", "-r", "-q", "-f", "--cached", "--ignore-unmatch", ".")
        in_repo("git", "add", "-A")
        in_repo("git", "commit", "-q", "-m", f"train with lr={lr}")
    return SimpleNamespace(work=work, repo=repo, env=env)


def markdown_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]


def section(markdown: str, heading: str) -> str:
    """The text under `### heading` up to the next heading of that level."""
    return markdown.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]


@pytest.mark.slow
def test_report_shows_the_changed_parameter_metric_and_plots(project):
    run(sys.executable, ROOT / "scripts" / "pr_report.py", cwd=project.repo, env=project.env)  # main, report.md

    report = (project.repo / "report.md").read_text()
    rows = markdown_rows(report)
    assert ["params.yaml", "train.lr", "0.1", "0.3"] in rows
    assert ["metrics/eval.json", "accuracy", "0.9", "0.7", "-0.2"] in rows
    assert "`plots/loss.tsv`" in report and "`plots/confusion.png`" in report
    assert "steady.json" not in section(report, "Plots that changed"), "an unchanged plot is reported"
    # Both versions of the image side by side, and every local link resolves beside the report.
    assert "![plots/confusion.png at main]" in report and "![plots/confusion.png at workspace]" in report
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert any(link.endswith("loss.tsv.png") for link in links)
    assert any(link.endswith("index.html") for link in links)
    for link in links:
        assert (project.repo / link).is_file(), link


@pytest.mark.slow
def test_report_leads_with_the_verdict_and_collapses_the_rest(project, tmp_path):
    run(sys.executable, ROOT / "scripts" / "pr_report.py", "main", tmp_path / "report.md",
        cwd=project.repo, env=project.env)
    report = (tmp_path / "report.md").read_text()

    # The six verdict lines come right after the title, before any table.
    verdict = report.split("\n\n")[1].splitlines()
    assert [line.split("**")[1] for line in verdict] == [
        "Test macro-F1", "Minutes error", "Gate", "Drift on the held-out control", "Export parity", "Training time"]
    assert "model 0.7900 → 0.7700 (-0.0200); baseline 0.7000 (unchanged)" in verdict[0]
    assert "generic 0.2100 → 0.2300 (+0.0200); per-person 0.1200 (unchanged)" in verdict[1]
    assert "**promoted**: v2 is champion (export parity check passed; not worse)" in verdict[2]
    assert "**none** on 100 test windows (production recording: critical)" in verdict[3]
    assert "**passed**: max |p_keras − p_onnx| 1e-07 (tolerance 0.0001) on 100 windows" in verdict[4]
    assert "40.0 s in this run, best epoch 4 of 5" in verdict[5]
    for line in verdict:
        assert re.search(r"\(`(metrics|logs)/\w+\.json`", line), f"names no metrics file: {line}"

    # Then parameters, plots, metrics, in that order.
    headings = [report.index(f"### {name}\n") for name in ("Parameters that changed", "Plots that changed", "Metrics")]
    assert headings == sorted(headings)
    assert ["params.yaml", "train.lr", "0.1", "0.3"] in markdown_rows(section(report, "Parameters that changed"))

    # The main table: changed rows only, the unchanged ones counted, per-class rows collapsed.
    metrics = section(report, "Metrics")
    main_table, per_class, everything = metrics.split("<details>")
    main_rows = markdown_rows(main_table)[2:]
    assert ["metrics/eval.json", "accuracy", "0.9", "0.7", "-0.2"] in main_rows
    assert ["metrics/register.json", "macro_f1", "0.79", "0.77"] in [row[:4] for row in main_rows]
    assert all(row[2] != row[3] for row in main_rows), "an unchanged row in the main table"
    assert not any("per_class" in row[1] for row in main_rows)
    # Unchanged: baseline macro_f1, 2 of train, 5 of export parity, register's parity_passed, 3 of drift,
    # the per-person minutes error.
    assert "13 unchanged metrics not shown." in main_table
    assert per_class.startswith("<summary>Per-class, per-subject and per-channel metrics: 1 of 4 changed</summary>")
    assert markdown_rows(per_class)[2:] == [["metrics/eval.json", "per_class.a.f1", "0.9", "0.7", "-0.2"]]
    assert everything.startswith("<summary>All metrics (21 rows)</summary>")
    assert ["metrics/baseline.json", "macro_f1", "0.7", "0.7"] in [row[:4] for row in markdown_rows(everything)]
    assert everything.rstrip().endswith("</details>")


def test_verdict_says_what_is_missing_when_a_revision_has_no_metrics(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("pr_report", ROOT / "scripts" / "pr_report.py")
    pr_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pr_report)
    monkeypatch.chdir(tmp_path)  # no metrics/ here
    verdict = pr_report.verdict([])
    assert len(verdict) == 6
    for line, file in zip(verdict, ("metrics/eval", "metrics/sessions", "logs/register", "metrics/drift",
                                    "metrics/export", "logs/train")):
        assert f"`{file}.json`" in line and ("not" in line or "no decision" in line), line


def test_report_names_a_base_revision_that_does_not_exist(project, tmp_path):
    done = run(sys.executable, ROOT / "scripts" / "pr_report.py", "no-such-branch", tmp_path / "r.md",
               cwd=project.repo, env=project.env, check=False)
    assert done.returncode != 0
    assert "'no-such-branch' is not a commit" in done.stderr
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_fresh_clone_pulls_outputs_from_the_default_remote_instead_of_recomputing(project):
    runs_before = stage_runs(project.work)
    run(DVC, "push", cwd=project.repo, env=project.env)
    assert any((project.work / "dvc-remote").rglob("*")), "the default remote is not ../dvc-remote"

    clone = project.work / "clone"
    run("git", "clone", "-q", "-b", "change-lr", project.repo, clone, cwd=project.work, env=project.env)
    assert not (clone / "models" / "model.bin").exists()
    run(DVC, "pull", cwd=clone, env=project.env)

    assert (clone / "models" / "model.bin").read_text() == "weights trained with lr=0.3\n"
    assert json.loads(run(DVC, "status", "--json", cwd=clone, env=project.env).stdout) == {}
    assert stage_runs(project.work) == runs_before, "the stage ran again in the clone"


def test_default_remote_lives_outside_the_repository():
    config = ConfigObj(str(ROOT / ".dvc" / "config"))
    name = config["core"]["remote"]
    url = config[f'remote "{name}"']["url"]
    assert "://" not in url, "the default should be a local folder; teams add S3 in config.local"
    folder = (ROOT / ".dvc" / url).resolve()  # DVC resolves relative URLs from .dvc/
    assert ROOT.resolve() not in [folder, *folder.parents]


# Commands a workflow step may call: the tools the workflow installs (setup-python, setup-cml,
# the .venv that setup.sh builds) and basic shell utilities. Anything else must be a repo file.
KNOWN_TOOLS = {"python", "pip", "dvc", "cml", "git", "bash", "ls", "echo", "cat"}
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "iterative/setup-cml"}


def shell_commands(script: str):
    """Each simple command of a `run:` script as its words (env assignments dropped)."""
    for line in script.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                words.pop(0)
            if words:
                yield words


def load_workflow(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads a bare `on` as true
    return workflow


@pytest.mark.parametrize("name, triggers", [("ci.yml", {"push", "pull_request"}),
                                            ("pr-report.yml", {"pull_request"})])
def test_workflow_is_valid_and_calls_only_what_exists(name, triggers):
    workflow = load_workflow(name)
    assert triggers <= set(workflow["on"])
    assert workflow["jobs"]
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert step["uses"].split("@")[0] in ALLOWED_ACTIONS, step["uses"]
                continue
            for command, *args in shell_commands(step["run"]):
                path = Path(command)
                if path.parts[:2] == (".venv", "bin"):
                    assert path.name in KNOWN_TOOLS, command
                elif command not in KNOWN_TOOLS:
                    assert (ROOT / path).is_file(), f"{name}: `{command}` is neither a known tool nor in the repo"
                if command in {"python", "bash"} and args and not args[0].startswith("-"):
                    assert (ROOT / args[0]).is_file(), f"{name}: `{command} {args[0]}`: no such file"


def test_pr_report_workflow_builds_the_report_with_the_script_and_posts_it_with_cml():
    steps = load_workflow("pr-report.yml")["jobs"]["report"]["steps"]
    commands = [words for step in steps if "run" in step for words in shell_commands(step["run"])]
    script = next(i for i, words in enumerate(commands) if words[:2] == ["python", "scripts/pr_report.py"])
    comment = next(i for i, words in enumerate(commands) if words[:3] == ["cml", "comment", "create"])
    repro = next(i for i, words in enumerate(commands) if words[:2] == ["dvc", "repro"])
    assert repro < script < comment
    assert commands[script][-1] == commands[comment][-1] == "report.md"
    assert any(step["uses"].startswith("actions/checkout") and step["with"].get("fetch-depth") == 0
               for step in steps if "uses" in step), "the base branch's history is needed for the diff"
