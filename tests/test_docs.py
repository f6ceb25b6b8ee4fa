"""The documentation: the site builds without a broken link, and the README cannot go stale.

The README is a landing page whose headline figures are read from metrics/*.json and whose
pipeline picture is drawn from the stage graph; these tests compare both with their sources.
The figures are compared with the metrics files as committed (`git show HEAD:metrics/...`), not
as the workspace has them: an experiment (`dvc exp run`) rewrites metrics/ and must not turn the
suite red for a README that quotes the commit.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent

# The figures the landing page must quote: the model against the baseline, serving and fusing speed.
HEADLINE_FILES = {"metrics/eval.json", "metrics/baseline.json", "metrics/bench_serve.json", "metrics/bench_fuse.json"}


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # mkdocs is pinned in requirements.lock: a missing one is a broken install, so this fails, not skips.
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, capture_output=True, text=True,
                          env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds_in_strict_mode(tmp_path):
    done = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    # The pages that include repository files and the pipeline's plots really got them.
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "min_motion_ratio" in configuration, "conf/config.yaml was not included"
    assert (tmp_path / "site" / "plots" / "confusion.png").read_bytes() == (ROOT / "plots" / "confusion.png").read_bytes()


def copy_of_the_site_sources(folder: Path) -> Path:
    """mkdocs.yml with everything it reads, so a test can break a page without touching the repository."""
    for name in ("docs", "conf", "plots"):
        shutil.copytree(ROOT / name, folder / name)
    (folder / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "mkdocs_hooks.py", folder / "scripts")
    shutil.copy(ROOT / "mkdocs.yml", folder)
    return folder / "mkdocs.yml"


@pytest.mark.parametrize("breakage, named", [
    ("[the serving page](serving-typo.md)", "serving-typo.md"),
    ("[a section](serving.md#no-such-section)", "no-such-section"),
])
def test_a_broken_link_fails_the_build(tmp_path, breakage, named):
    config = copy_of_the_site_sources(tmp_path)
    page = tmp_path / "docs" / "getting-started.md"
    page.write_text(page.read_text() + f"\nSee {breakage}.\n")
    done = mkdocs_build(config, tmp_path / "site")
    assert done.returncode != 0
    assert named in done.stderr


def test_a_page_missing_from_the_nav_fails_the_build(tmp_path):
    config = copy_of_the_site_sources(tmp_path)
    (tmp_path / "docs" / "orphan.md").write_text("# Nobody links here\n")
    done = mkdocs_build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "orphan.md" in done.stderr


def test_readme_is_a_landing_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert "./setup.sh   " in text and ".venv/bin/python -m pytest   " in text, "the two commands"
    assert "mkdocs serve" in text
    # Every relative link and image resolves to a file in the repository (GitHub shows them there).
    targets = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
                if not re.match(r"[a-z]+://", target)]
    assert "docs/serving.md" in targets and "docs/experiments.md" in targets, "serving and sweeps are one click away"
    for target in targets:
        assert (ROOT / target).is_file(), f"README links {target}, which does not exist"


# --- headline figures ---------------------------------------------------------------------------

def committed_text(path: str, root: Path = ROOT) -> str:
    """The file as HEAD has it; in a copy that is no git checkout (an unpacked archive), the file itself."""
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode != 0:
        return (root / path).read_text()
    done = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise FileNotFoundError(f"{path} is not committed ({done.stderr.strip()})")
    return done.stdout


def headline_rows(readme: str) -> list[tuple[str, str, str, str]]:
    """(figure, value as written, metrics file, key) for each row of the README's headline table."""
    section = readme.split("## Headline figures\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.fullmatch(r"\|(.+)\|(.+)\|\s*`([^`]+)`\s*→\s*`([^`]+)`\s*\|", line.strip())
        if match:
            figure, value, path, key = (part.strip() for part in match.groups())
            rows.append((figure, value, path, key))
    return rows


def lookup(document: dict, dotted_key: str):
    value = document
    for part in dotted_key.split("."):
        value = value[part]
    return value


def headline_mismatches(readme: str, read=committed_text) -> list[str]:
    """Every headline figure that differs from its metrics file (`read(path)` its text), rounded to the
    digits the README shows."""
    problems = []
    for figure, value, path, key in headline_rows(readme):
        written = re.search(r"\d[\d,]*(?:\.\d+)?", value)
        if written is None:
            problems.append(f"{figure!r}: no number in {value!r}")
            continue
        number = written.group().replace(",", "")
        digits = len(number.split(".")[1]) if "." in number else 0
        try:
            measured = lookup(json.loads(read(path)), key)
        except (FileNotFoundError, KeyError, TypeError) as error:
            problems.append(f"{figure!r}: {path} has no {key} ({error!r})")
            continue
        if f"{measured:.{digits}f}" != number:
            problems.append(f"{figure!r}: README says {number}, {path} {key} is {measured}")
    return problems


def test_readme_headline_figures_equal_the_metrics_files():
    readme = README.read_text()
    rows = headline_rows(readme)
    assert HEADLINE_FILES <= {path for _, _, path, _ in rows}, "a headline figure is missing"
    assert headline_mismatches(readme) == []


def test_a_stale_headline_figure_is_caught(tmp_path):
    readme = README.read_text()
    figure, value, path, key = headline_rows(readme)[0]
    changed = readme.replace(f"| {value} |", f"| {value.replace('0.', '0.9', 1)} |", 1)
    assert changed != readme
    assert len(headline_mismatches(changed)) == 1
    # And the other way round: the metrics file moves, the README stays.
    files = {name: committed_text(name) for name in HEADLINE_FILES}
    document = json.loads(files[path])
    document[key] = lookup(document, key) + 0.01  # the first row's key is a top-level one
    files[path] = json.dumps(document)
    assert [problem for problem in headline_mismatches(readme, files.__getitem__) if path in problem]


def test_headline_figures_are_read_from_the_commit_not_the_workspace(tmp_path):
    """An experiment rewrote metrics/ in a clone: the README quoting the commit stays green; a README
    edited to the experiment's figure is caught (it quotes what no commit holds)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    readme = (clone / "README.md").read_text()
    _, value, path, key = headline_rows(readme)[0]
    document = json.loads((clone / path).read_text())
    document[key] = lookup(document, key) + 0.05  # what `dvc exp run` might write
    (clone / path).write_text(json.dumps(document))

    assert headline_mismatches(readme, lambda name: committed_text(name, clone)) == []
    assert headline_mismatches(readme, lambda name: (clone / name).read_text())  # the workspace would fail it
    # Not a git checkout (the clone without .git): the files as they are.
    shutil.rmtree(clone / ".git")
    assert json.loads(committed_text(path, clone)) == document


# --- the pipeline picture -----------------------------------------------------------------------

def stage(name: str) -> str:
    return name.split("@")[0]  # a foreach stage (fuse_garmin@<session>) is drawn once


def dvc_dag_edges() -> set[tuple[str, str]]:
    done = subprocess.run([VENV_BIN / "dvc", "dag", "--mermaid"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = dict(re.findall(r'(\w+)\["([^"]+)"\]', done.stdout))
    return {(stage(names[a]), stage(names[b])) for a, b in re.findall(r"(\w+)-->(\w+)", done.stdout)}


def drawn_edges(markdown: str) -> set[tuple[str, str]]:
    """Stage-to-stage arrows (`a --> b`) of the page's mermaid block; dotted arrows from data are not stages."""
    block = markdown.split("```mermaid\n", 1)[1].split("```", 1)[0]
    return set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, flags=re.M))


@pytest.mark.parametrize("page", ["README.md", "docs/pipeline.md"])
def test_pipeline_picture_matches_dvc_dag(page):
    assert drawn_edges((ROOT / page).read_text()) == dvc_dag_edges()
