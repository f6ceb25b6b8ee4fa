"""The MLflow model registry: log a model version, gate its promotion, roll back, load by alias.

Every registered version gets the alias `challenger`; the alias `champion` moves only when
`promotion_decision` says so (export parity passed, test macro-F1 not worse than the champion's
by more than a tolerance), or by an explicit `rollback`. The service loads
`models:/<name>@champion` through `load_onnx_from_registry`.

The default store is an SQLite file inside the repository's ignored files (mlruns/), with the
artifacts beside it; MLFLOW_TRACKING_URI points it anywhere else (a tracking server).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from har.audit import audit, local_actor

ROOT = Path(__file__).resolve().parent.parent
CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "model"
SOURCE_FILE = "registry_source.json"  # beside a model downloaded from the registry: which version it is


class RegistryUnreachable(RuntimeError):
    """The tracking server does not answer; raised before anything is written."""


# ---------------------------------------------------------------- where the registry lives

def checkout_root(path: Path = ROOT) -> Path:
    """The real checkout, also when DVC runs a queued experiment in a copy under .dvc/tmp/exps/<name>.

    Without this a queued experiment would register into a throw-away copy of mlruns/.
    """
    parts = path.resolve().parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path.resolve()


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the configured URI, else SQLite in <checkout>/mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{checkout_root() / 'mlruns' / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Artifacts beside an SQLite store (so a test's store in tmp_path keeps its files there too);
    a tracking server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """For a tracking server (http/https URI): its /health must answer, else RegistryUnreachable naming
    the URI. Checked once up front, so a server that is down fails at once (MLflow's own client would
    retry for minutes) and before any run, version or alias is written."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if isinstance(exc, requests.ConnectionError) else str(exc)
        raise RegistryUnreachable(f"MLflow tracking server {uri} is unreachable ({reason}); nothing was changed. "
                                  f"Start it, or point MLFLOW_TRACKING_URI at one that runs.") from None


def connect(uri: str):
    """An MlflowClient on `uri` (created if it is a local SQLite file), also set as mlflow's default."""
    import mlflow

    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri))


# ---------------------------------------------------------------- provenance

def git_commit(cwd: Path = ROOT) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the working tree has uncommitted changes); (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def data_hash(lock_path: Path, out: str = "data/windows") -> str | None:
    """The md5 dvc.lock records for the training windows (the data this model was trained on)."""
    if not Path(lock_path).exists():
        return None
    lock = yaml.safe_load(Path(lock_path).read_text()) or {}
    for stage in (lock.get("stages") or {}).values():
        for item in stage.get("outs", []):
            if item.get("path") == out:
                return item.get("md5")
    return None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists kept as values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def numeric(tree: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers (not booleans) of a metrics file, flattened, as MLflow metrics."""
    return {k: float(v) for k, v in flatten(tree, prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# ---------------------------------------------------------------- the gate

def parity_passed(export_metrics: dict) -> bool | None:
    """metrics/export.json's verdict, `parity.passed`; None when it gives none."""
    verdict = (export_metrics.get("parity") or {}).get("passed")
    return verdict if isinstance(verdict, bool) else None


def promotion_decision(macro_f1: float | None, parity: bool | None, champion: dict | None, *,
                       tolerance: float, require_parity: bool = True) -> tuple[bool, list[str]]:
    """Whether a new version becomes champion, and every reason for the answer.

    `champion` is {"version", "macro_f1"} of the current champion, or None when there is none.
    """
    reasons, promote = [], True
    if require_parity and parity is not True:
        promote = False
        reasons.append("export parity check did not pass" if parity is False else
                       "export parity unknown: metrics/export.json has no boolean `passed`")
    elif require_parity:
        reasons.append("export parity check passed")
    if macro_f1 is None or not math.isfinite(macro_f1):
        promote = False
        reasons.append("no test macro_f1 in metrics/eval.json")
        return promote, reasons
    if champion is None:
        reasons.append(f"no champion yet: macro-F1 {macro_f1:.4f} becomes the first")
    elif champion.get("macro_f1") is None:
        reasons.append(f"champion v{champion['version']} has no macro-F1 comparable with this one: kept "
                       f"(`python -m stages.rollback <version>` promotes by hand)")
        promote = False
    elif macro_f1 < champion["macro_f1"] - tolerance:
        promote = False
        reasons.append(f"macro-F1 {macro_f1:.4f} is worse than champion v{champion['version']}'s "
                       f"{champion['macro_f1']:.4f} by more than the tolerance {tolerance}")
    else:
        reasons.append(f"macro-F1 {macro_f1:.4f} vs champion v{champion['version']}'s {champion['macro_f1']:.4f} "
                       f"(tolerance {tolerance}): not worse")
    return promote, reasons


def current_champion(client, name: str) -> dict | None:
    """{"version", "macro_f1"} of the version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    f1 = version.tags.get("macro_f1")
    seen = version.tags.get("subjects_seen")
    return {"version": int(version.version), "macro_f1": float(f1) if f1 else None,
            "data_hash": known_hash(version.tags.get("data_hash")), "subjects_seen": json.loads(seen) if seen else None}


def known_hash(value: str | None) -> str | None:
    """A data hash that identifies windows; None for a missing or "unknown" one (never comparable)."""
    return value if value and value != "unknown" else None


def comparable_champion(champion: dict | None, data_hash: str | None, rescore, name: str) -> tuple[dict | None, list[str]]:
    """The champion with a macro-F1 measured on the same test windows as the new version.

    A macro-F1 is only comparable on the same windows. When the champion was evaluated on other
    (or unidentified) data, `rescore(model_uri, subjects_seen)` scores it on the current test
    windows and returns (macro-F1, "") or (None, why it cannot: e.g. it learned from subjects
    that are now in the test split). A failed re-score counts as "cannot", with the error.
    """
    if champion is None or rescore is None or (known_hash(data_hash) and champion["data_hash"] == data_hash):
        return champion, []
    try:
        rescored, why = rescore(f"models:/{name}/{champion['version']}", champion["subjects_seen"])
    except Exception as exc:  # a download or onnxruntime error must not leave a run without a version
        rescored, why = None, f"re-scoring failed ({type(exc).__name__}: {exc})"
    recorded = "none recorded" if champion["macro_f1"] is None else f"{champion['macro_f1']:.4f}"
    note = (f"champion v{champion['version']} was evaluated on other windows (data hash "
            f"{champion['data_hash'] or 'unknown'}, macro-F1 {recorded}); ")
    note += f"re-scored on this test split: {rescored:.4f}" if rescored is not None else f"it cannot be re-scored: {why}"
    return {**champion, "macro_f1": rescored}, [note]


# ---------------------------------------------------------------- register, roll back, load

def onnx_signature(model):
    """Input and output tensor specs read from the ONNX graph (float32 [-1, L, 6] -> [-1, k])."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(value):
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim]
        return TensorSpec(np.dtype("float32"), tuple(dims), name=value.name)

    return ModelSignature(inputs=Schema([spec(model.graph.input[0])]), outputs=Schema([spec(model.graph.output[0])]))


def runtime_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("onnx", "onnxruntime", "numpy")]


def register_model(model_path, *, name: str, experiment: str, params: dict, eval_metrics: dict, export_metrics: dict,
                   tolerance: float, require_parity: bool = True, uri: str | None = None,
                   provenance: dict | None = None, extra_files: list = (), artifact_dirs: list = (),
                   rescore=None, actor: str | None = None) -> dict:
    """Log the run and the ONNX model, register a version as challenger, move champion if the gate passes.

    `rescore` scores a champion evaluated on other data on the current test windows (see
    comparable_champion). Returns the decision (the register stage writes it to logs/register.json, and
    what was submitted, the registry-independent part, to metrics/register.json).
    Audited (har/audit.py): registry.register, and registry.promote when champion moved; `actor`
    defaults to local_actor().
    """
    import hashlib

    import mlflow
    import onnx

    uri = uri or tracking_uri()
    client = connect(uri)
    model = onnx.load(str(model_path))
    macro_f1 = eval_metrics.get("macro_f1")
    parity = parity_passed(export_metrics)
    # provenance may carry model_sha256 (the checksum the service verifies); else the file's hash.
    tags = {"git_commit": "", "git_dirty": "", "data_hash": "",
            "model_sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest(),
            **{k: "" if v is None else str(v) for k, v in (provenance or {}).items()},
            "macro_f1": "" if macro_f1 is None else str(macro_f1), "parity_passed": str(parity)}

    with mlflow.start_run(experiment_id=experiment_id(client, experiment, uri)) as run:
        flat_params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(params).items()}
        items = list(flat_params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[i:i + 100]))
        mlflow.log_metrics({**numeric(eval_metrics, "test."), **numeric(export_metrics, "export.")})
        mlflow.set_tags(tags)
        for folder in artifact_dirs:
            if Path(folder).is_dir():
                mlflow.log_artifacts(str(folder), artifact_path=Path(folder).name)
        # One file, no external data: the service re-serialises it to check the checksum in its metadata.
        # Requirements given, not inferred: inference imports the model in a subprocess (15 s) to learn
        # what is plain here, onnx and onnxruntime.
        info = mlflow.onnx.log_model(model, name=MODEL_ARTIFACT, signature=onnx_signature(model),
                                     save_as_external_data=False, pip_requirements=runtime_requirements())
        for path in extra_files:  # e.g. drift_reference.json, at the model's top level beside model.onnx
            if Path(path).exists():
                client.log_model_artifact(info.model_id, str(path))
        run_id = run.info.run_id

    champion_before, notes = comparable_champion(current_champion(client, name), tags["data_hash"] or None,
                                                 rescore, name)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    promote, reasons = promotion_decision(macro_f1, parity, champion_before, tolerance=tolerance,
                                          require_parity=require_parity)
    reasons = notes + reasons
    client.set_model_version_tag(name, version.version, "gate", "passed" if promote else "failed")
    actor = actor or local_actor()
    audit("registry.register", actor=actor, model=name, version=version.version, run_id=run_id,
          alias=CHALLENGER, gate="passed" if promote else "failed")
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        audit("registry.promote", actor=actor, model=name, version=version.version,
              champion_before=champion_before["version"] if champion_before else None, macro_f1=macro_f1)
    champion_after = current_champion(client, name)
    return {"model_name": name, "version": int(version.version), "run_id": run_id, "promoted": promote,
            "reasons": reasons, "macro_f1": macro_f1, "parity_passed": parity, "tolerance": tolerance,
            "champion_before": champion_before, "champion_version": champion_after["version"] if champion_after else None,
            "model_uri": f"models:/{name}@{CHAMPION}", **{k: tags[k] for k in ("git_commit", "data_hash", "model_sha256")}}


def rollback(name: str, version: int, *, reason: str = "", uri: str | None = None, actor: str | None = None) -> dict:
    """Point `champion` at an earlier version (it must exist), recording who it replaced and why
    (tags on the version, and a registry.rollback audit event; `actor` defaults to local_actor())."""
    from mlflow.exceptions import MlflowException

    client = connect(uri or tracking_uri())
    try:
        target = client.get_model_version(name, str(version))
    except MlflowException:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise ValueError(f"registered model {name!r} has no version {version} (versions: {known or 'none'})") from None
    before = current_champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, target.version)
    client.set_model_version_tag(name, target.version, "rolled_back_from",
                                 str(before["version"]) if before else "none")
    if reason:
        client.set_model_version_tag(name, target.version, "rollback_reason", reason)
    audit("registry.rollback", actor=actor or local_actor(), model=name, version=target.version,
          champion_before=before["version"] if before else None, reason=reason, gate=target.tags.get("gate"))
    return {"model_name": name, "champion_before": before["version"] if before else None,
            "champion_version": int(target.version), "gate": target.tags.get("gate"), "reason": reason}


def load_onnx_from_registry(uri: str, dst: str | Path | None = None, tracking: str | None = None) -> Path:
    """A local ONNX file for `models:/<name>@<alias>` (or `models:/<name>/<version>`), or a plain path.

    The registry's copy is downloaded into `dst` (a fresh temporary folder by default), with the
    drift reference it was registered with beside it as drift_reference.json, and registry_source.json
    saying which registered version it is (an alias is resolved once, so the file and the version agree).
    """
    if not str(uri).startswith("models:/"):
        path = Path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} not found (expected an .onnx file or models:/<name>@<alias>)")
        return path
    import mlflow

    # The download progress bar would only clutter a service's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = connect(tracking or tracking_uri())
    name, _, alias = str(uri)[len("models:/"):].partition("@")
    if alias:
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, version = name.rsplit("/", 1)
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="har-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    (local / SOURCE_FILE).write_text(json.dumps({"uri": str(uri), "name": name, "version": int(version)}))
    return local / yaml.safe_load((local / "MLmodel").read_text())["flavors"]["onnx"]["data"]


def registry_source(model_path) -> dict | None:
    """{"uri", "name", "version"} of a model downloaded by load_onnx_from_registry; None for a plain file."""
    path = Path(model_path).with_name(SOURCE_FILE)
    return json.loads(path.read_text()) if path.exists() else None


def register_personal_model(model_path, *, name: str, experiment: str, tags: dict, generic_name: str,
                            uri: str | None = None, actor: str | None = None) -> dict:
    """Log and register one person's model as its own registered model `name` (<generic name>-<subject>).

    No gate: a person's model has no test split of its own. The newest version takes `champion`
    (what the service would load); its tags name the subject and the generic version it came from.
    Audited as registry.register and registry.promote, with the subject.
    """
    import mlflow
    import onnx

    uri = uri or tracking_uri()
    client = connect(uri)
    model = onnx.load(str(model_path))
    tags = {**{k: str(v) for k, v in tags.items()}, "generic_model": generic_name}
    with mlflow.start_run(experiment_id=experiment_id(client, experiment, uri), run_name=name) as run:
        mlflow.set_tags({**tags, "kind": "personal"})
        info = mlflow.onnx.log_model(model, name=MODEL_ARTIFACT, signature=onnx_signature(model),
                                     save_as_external_data=False, pip_requirements=runtime_requirements())
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    actor = actor or local_actor()
    audit("registry.register", actor=actor, subject=tags.get("subject"), model=name, version=version.version,
          run_id=run.info.run_id, alias=CHAMPION, gate="none (personal model)")
    before = current_champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    audit("registry.promote", actor=actor, subject=tags.get("subject"), model=name, version=version.version,
          champion_before=before["version"] if before else None)
    return {"model_name": name, "version": int(version.version), "run_id": run.info.run_id,
            "model_uri": f"models:/{name}@{CHAMPION}", **tags}
