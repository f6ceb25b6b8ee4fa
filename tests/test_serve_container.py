"""The service's Dockerfile (Docker cannot run here): what it copies exists, what it installs covers the imports."""
import ast
import re
import sys
from importlib.metadata import packages_distributions, requires

from packaging.requirements import Requirement

from serve_helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCAL = {"har", "serve", "store"}
# Reached only for a models:/ model URI (the registry's client and its reachability check); the image
# serves a mounted file, and Kubernetes fetches the registry's champion with an init container
# (ops/k8s/deployment.yaml), so mlflow (and the requests it brings) stay out.
OPTIONAL = {"mlflow", "requests"}


def service_imports() -> set[str]:
    """Top-level third-party modules imported by serve/ and the har modules it reaches, transitively."""
    seen, todo, third_party = set(), [ROOT / "serve/__main__.py", ROOT / "serve/app.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in LOCAL:
                    module = ROOT / (name.replace(".", "/") + ".py")
                    todo.append(module if module.exists() else ROOT / name.replace(".", "/") / "__init__.py")
                elif top not in sys.stdlib_module_names and top not in OPTIONAL:
                    third_party.add(top)
    return third_party


def with_dependencies(distributions: set[str]) -> set[str]:
    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    closed, todo = set(), [norm(d) for d in distributions]
    while todo:
        name = todo.pop()
        if name in closed:
            continue
        closed.add(name)
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(norm(requirement.name))
    return closed


def test_dockerfile_installs_what_the_service_imports():
    install = re.search(r"pip install -c requirements.lock (.*?)\n\n", DOCKERFILE, re.S)[1]
    installed = with_dependencies({p for p in install.replace("\\", " ").split()})
    providers = packages_distributions()
    missing = {m for m in service_imports() if not {p.lower().replace("_", "-") for p in providers[m]} & installed}
    assert not missing, f"the image lacks the distributions of {missing}"


def test_dockerfile_copies_existing_paths_and_runs_the_service_as_non_root():
    for source in re.findall(r"^COPY (\S+)", DOCKERFILE, re.M):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\S+", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/health" in DOCKERFILE
    assert '"-m", "serve"' in DOCKERFILE and '"--model"' in DOCKERFILE
