"""How the code is laid out, read from the source itself: each DVC stage's `deps` name exactly the project
modules its command runs, and dependencies between the packages point one way (../shared/DESIGN.md)."""
import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("har", "stages", "serve", "store")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (a module, or a package's __init__.py); None outside the project."""
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {inner.lineno for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))}
    return lines


def project_imports(path: Path) -> set[Path]:
    """The project modules `path` imports anywhere (at the top or inside a function), as files."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.level == 0 and node.module:
            # `from har import drift` names the module har/drift.py, `from store import Store` the package's
            # __init__.py. A package's __init__ run on the way to its module counts where it runs code
            # (stages/__init__.py pins the numerical kernels; har's holds a docstring only): closure().
            names = [f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}") else node.module
                     for alias in node.names]
        else:
            continue
        found |= {f for name in names if name.split(".")[0] in PACKAGES and (f := module_file(name)) is not None}
    return found


def runs_code(init: Path) -> bool:
    """Whether a package's __init__.py does more than document the package."""
    body = ast.parse(init.read_text(), str(init)).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def closure(path: Path) -> set[Path]:
    """`path` and every project module it imports, directly or through another, with the __init__.py of
    each package on the way that runs code."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(project_imports(current))
            todo.extend(init for parent in current.parents if parent != ROOT and ROOT in parent.parents
                        and (init := parent / "__init__.py").is_file() and runs_code(init))
    return seen


def stages() -> dict[str, dict]:
    """Each stage of dvc.yaml (a foreach stage's template as one)."""
    return {name: stage.get("do", stage) for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


@pytest.mark.parametrize("name", sorted(stages()))
def test_each_stages_deps_are_the_project_modules_its_command_runs(name):
    """A change to any module a stage runs re-runs the stage, and a module it no longer runs does not."""
    stage = stages()[name]
    command = re.search(r"python -m (stages\.\w+)", stage["cmd"])
    assert command, f"{name}: cmd {stage['cmd']!r} does not run a stages.<name> module"
    runs = {str(p.relative_to(ROOT)) for p in closure(module_file(command[1]))}
    listed = {d for d in stage["deps"] if isinstance(d, str) and d.endswith(".py")}
    assert sorted(runs - listed) == [], f"{name}: imported but not in deps"
    assert sorted(listed - runs) == [], f"{name}: in deps but not imported"


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [("har", ("serve", "store", "stages")), ("store", ("serve",))])
def test_dependencies_point_one_way(package, forbidden):
    """har/ is the domain and uses none of the ways in; the study store uses no HTTP."""
    wrong = [f"{path.relative_to(ROOT)} imports {target.relative_to(ROOT)}"
             for path in python_files(package) for target in project_imports(path)
             if target.relative_to(ROOT).parts[0] in forbidden]
    assert wrong == []


def test_the_layout_checks_see_imports_inside_functions_and_skip_type_checking_ones(tmp_path):
    """The checks above read what they claim: a lazy import counts, a TYPE_CHECKING one does not."""
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from store import Store\n"
                      "def f():\n    from serve.batch import main\n    from har import drift\n")
    assert project_imports(sample) == {ROOT / "serve/batch/__init__.py", ROOT / "har/drift.py"}
