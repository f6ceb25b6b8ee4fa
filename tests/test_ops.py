"""Operations files against the real thing: alert rules and dashboard against a live scrape, the compose
file against the repository and the app, the Kubernetes manifests as `kubectl kustomize` renders them
(against the app and the API schemas), the drift webhook against a local receiver."""
import copy
import functools
import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from har.config import load_params, write_json
from har.drift import build_reference, output_summary, reference_path_for
from har.notify import notify_drift
from ops_helpers import need_binary
from har.runtime import ModelRuntime
from serve_helpers import LABELS, ROOT, TOKEN, refusing_address, start_server, stop_server, write_tiny_model

OPS = ROOT / "ops"
PARAMS = load_params(ROOT / "params.yaml")
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}


# ---------------------------------------------------------------- PromQL, read just far enough

def promql_selectors(expr: str) -> list[tuple[str, dict]]:
    """(metric name, {label: (operator, value)}) for every series selector in a PromQL expression."""
    expr = re.sub(r"\$\{?\w+\}?", "1m", expr)  # Grafana variables ($__rate_interval)
    selectors = []
    pattern = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?|"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\d+(?:\.\d+)?(?:e[+-]?\d+)?')
    label_lists = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
    expr = label_lists.sub(" ", expr)
    for match in pattern.finditer(expr):
        name, matchers = match.group(1), match.group(2)
        if name is None or name.lower() in PROMQL_WORDS or expr[match.end():].lstrip().startswith("("):
            continue  # a string, range, number, keyword or function
        labels = {k: (op, v) for k, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', matchers or "")}
        selectors.append((name, labels))
    return selectors


def test_the_promql_reader_finds_names_and_matchers():
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(har_a_bucket{route=~"/p|/v2/models/.+/infer", '
            'status="200"}[5m]))) > 1e3 and on() sum(increase(har_b_total[$__rate_interval])) > 0')
    assert promql_selectors(expr) == [("har_a_bucket", {"route": ("=~", "/p|/v2/models/.+/infer"), "status": ("=", "200")}),
                                      ("har_b_total", {})]


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads((OPS / "grafana" / "dashboard.json").read_text())
    return {f"{panel['title']} [{target['refId']}]": target["expr"]
            for panel in dashboard["panels"] for target in panel.get("targets", [])}


# ---------------------------------------------------------------- the live service

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The service on loopback with a tiny model and its drift reference, after a little traffic of each kind:
    what its /metrics holds, its routes, and what its health routes answer."""
    folder = tmp_path_factory.mktemp("ops")
    model = write_tiny_model(folder / "model.onnx")
    reference_windows = np.random.default_rng(1).normal(size=(100, 200, 6)).astype(np.float32)
    monitor = PARAMS["monitor"]
    write_json(reference_path_for(model), build_reference(
        reference_windows, bins=monitor["bins"], max_samples=monitor["max_samples"], seed=0,
        thresholds=monitor["thresholds"], votes=monitor["votes"], min_windows=monitor["min_windows"],
        outputs=output_summary(ModelRuntime(model).predict(reference_windows), LABELS)))
    process, url = start_server(model, folder / "server.log")
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            windows = np.random.default_rng(0).normal(size=(2, 200, 6)).round(3).tolist()
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert client.post("/predict", json={"windows": windows}, headers=auth).status_code == 200
            assert client.post("/predict", json={"windows": [[1.0]]}, headers=auth).status_code == 422
            assert client.post("/predict", json={"windows": windows}).status_code == 401
            probes = {path: client.get(path).status_code for path in ("/health", "/health/ready")}
            routes = list(client.get("/schema/openapi.json").json()["paths"])
            scrape = client.get("/metrics").text
    finally:
        stop_server(process)
    samples = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return {"samples": samples, "routes": routes, "probes": probes}


def check_selectors(expressions: dict[str, str], live: dict) -> list[str]:
    """Problems: metric names or label names the service does not export, route matchers that match no route."""
    problems = []
    for where, expr in expressions.items():
        selectors = promql_selectors(expr)
        if not selectors:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name, matchers in selectors:
            if name not in live["samples"]:
                problems.append(f"{where}: {name} is not in the service's /metrics")
                continue
            for label, (op, value) in matchers.items():
                if label != "job" and label not in live["samples"][name]:  # `job` is Prometheus's own target label
                    problems.append(f"{where}: {name} has no label {label!r} (has {sorted(live['samples'][name])})")
                if label == "route" and op in ("=", "=~") and not any(re.fullmatch(value, r) for r in live["routes"]):
                    problems.append(f"{where}: route matcher {value!r} matches none of the app's routes")
    return problems


def test_every_alert_rule_uses_metrics_the_service_exports(live):
    rules = alert_expressions()
    assert {"HarHighErrorRate", "HarPredictLatencyHigh", "HarLowConfidence", "HarServiceDown",
            "HarDriftCritical"} <= set(rules)
    assert check_selectors(rules, live) == []


def test_every_dashboard_panel_uses_metrics_the_service_exports(live):
    assert check_selectors(dashboard_expressions(), live) == []


def test_the_selector_check_catches_a_misspelt_metric_label_or_route(live):
    problems = check_selectors({"typo": 'rate(har_http_request_total[5m])',
                                "label": 'har_windows_predicted_total{activity="x"}',
                                "route": 'har_http_requests_total{route="/predictions"}'}, live)
    assert len(problems) == 3


def test_prometheus_scrapes_the_service_and_loads_the_rules():
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file, here and in the container
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "har-serve")
    assert job["metrics_path"] == "/metrics"
    # every replica of the compose service `serve`, each its own target
    assert job["dns_sd_configs"] == [{"names": ["serve"], "type": "A", "port": PARAMS["serve"]["port"]}]
    assert 'job="har-serve"' in alert_expressions()["HarServiceDown"]


# ---------------------------------------------------------------- docker compose

def compose() -> dict:
    """docker-compose.yml as compose reads it with none of its optional variables set (${VAR:-default})."""
    return yaml.safe_load(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (ROOT / "docker-compose.yml").read_text()))


def dockerfile_command() -> list[str]:
    """The Dockerfile's ENTRYPOINT (exec form)."""
    line = next(l for l in (ROOT / "Dockerfile").read_text().splitlines() if l.startswith("ENTRYPOINT"))
    return json.loads(line.removeprefix("ENTRYPOINT"))


def test_compose_names_only_files_that_exist():
    services = compose()["services"]
    assert set(services) >= {"serve", "mlflow", "prometheus"}
    build = services["serve"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):  # a bind mount (named volumes are declared at the top level)
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            elif source == "/var/run/docker.sock":  # vector reads the containers' logs from the Docker daemon
                assert volume.endswith(":ro"), f"{name}: the Docker socket must be mounted read-only"
            else:
                assert source in compose()["volumes"], f"{name}: volume {source} is not declared"


def test_compose_serves_the_model_the_way_the_image_expects():
    serve = compose()["services"]["serve"]
    entrypoint = dockerfile_command()
    assert entrypoint[:3] == ["python", "-m", "serve"] and (ROOT / "serve" / "__main__.py").is_file()
    # the replicas publish nothing: the balancer does, on serve.port, and sends to the image's port
    assert "ports" not in serve and compose()["services"]["balancer"]["ports"][0] == f"{PARAMS['serve']['port']}:8000"
    balanced = re.search(r"^\s*server-template serve \d+ serve:(\d+) ", (OPS / "haproxy" / "haproxy.cfg").read_text(), re.M)
    assert balanced.group(1) == entrypoint[entrypoint.index("--port") + 1]
    model = serve["command"][serve["command"].index("--model") + 1]
    assert any(model.startswith(v.split(":")[1] + "/") for v in serve["volumes"]), "the model is not on a mounted volume"
    assert PARAMS["serve"]["token_env"] in serve["environment"]
    assert "${HAR_SERVE_TOKEN:?" in (ROOT / "docker-compose.yml").read_text()  # no token, no start


def test_compose_mounts_the_prometheus_files_where_the_config_reads_them():
    prometheus = compose()["services"]["prometheus"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in prometheus["volumes"] if v.startswith("."))
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts["./ops/prometheus/prometheus.yml"] == config_path
    rules = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())["rule_files"]
    assert {str(Path(config_path).parent / rule) for rule in rules} <= set(mounts.values())


def test_compose_runs_the_alertmanager_prometheus_sends_to_with_the_shipped_config():
    services = compose()["services"]
    alertmanager = services["alertmanager"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in alertmanager["volumes"] if v.startswith("."))
    config_path = next(a.split("=", 1)[1] for a in alertmanager["command"] if a.startswith("--config.file="))
    assert mounts["./ops/alertmanager/alertmanager.yml"] == config_path
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "alertmanager" and alertmanager["ports"] == [f"{port}:{port}"]
    assert "alertmanager" in services["prometheus"]["depends_on"]


def test_compose_and_kubernetes_pin_the_mlflow_of_the_lock_file():
    locked = next(l.split("==")[1] for l in (ROOT / "requirements.lock").read_text().splitlines()
                  if l.lower().startswith("mlflow=="))
    assert compose()["services"]["mlflow"]["image"] == f"ghcr.io/mlflow/mlflow:v{locked}"
    assert manifest("Deployment")["spec"]["template"]["spec"]["initContainers"][0]["image"] == \
        f"ghcr.io/mlflow/mlflow:v{locked}"


# ---------------------------------------------------------------- Kubernetes

@functools.cache
def rendered() -> str:
    """What `kubectl apply -k ops/k8s` sends to the cluster: `kubectl kustomize ops/k8s`."""
    kubectl = need_binary("kubectl", "kubernetes-client")
    result = subprocess.run([kubectl, "kustomize", str(OPS / "k8s")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def manifests() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered()) if doc]


def manifest(kind: str) -> dict:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def test_kubernetes_probes_hit_the_apps_health_routes_on_the_served_port(live):
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PARAMS["serve"]["port"]}
    assert int(dockerfile_command()[dockerfile_command().index("--port") + 1]) == ports["http"]
    for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
        assert live["probes"][path] == 200
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]


def test_kubernetes_token_comes_from_a_secret_where_the_image_reads_it():
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    token_file = Path(dockerfile_command()[dockerfile_command().index("--token-file") + 1])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == token_file.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] and [i["path"] for i in volume["secret"]["items"]] == [token_file.name]
    assert not any(doc["kind"] == "Secret" for doc in manifests())  # the token itself is never in the repository


def test_kubernetes_model_is_fetched_from_the_registry_into_the_served_path():
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env["MODEL_URI"] == f"models:/{PARAMS['registry']['model_name']}@champion"
    destination = fetch["command"][fetch["command"].index("--dst-path") + 1]
    container = pod["containers"][0]
    model = Path(container["args"][container["args"].index("--model") + 1])
    assert model.name == Path(PARAMS["registry"]["model"]).name  # the registered artifact's file name
    for mounts in (fetch["volumeMounts"], container["volumeMounts"]):
        assert any(m["name"] == "model" and Path(m["mountPath"]) == Path(destination) == model.parent for m in mounts)


def test_kubernetes_service_and_autoscaler_point_at_the_deployment():
    deployment, service, hpa = manifest("Deployment"), manifest("Service"), manifest("HorizontalPodAutoscaler")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    kustomization = yaml.safe_load((OPS / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in (OPS / "k8s").glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target["name"] == "cpu" and 0 < target["target"]["averageUtilization"] <= 100
    # Utilisation is measured against the CPU request: without one the HPA cannot scale.
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def memory_mib(quantity: str) -> float:
    """A Kubernetes (1408Mi, 2Gi) or compose (1408m, 2g) memory quantity in MiB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity).groups()
    return float(number) * {"Mi": 1, "Gi": 1024, "m": 1, "g": 1024}[unit]


def test_the_memory_limit_is_the_upload_budget_plus_the_measured_base():
    """A burst is refused before it outgrows the container: limit = serve.recordings.memory_budget_mb + the
    service's resting RSS measured by bench/uploads.py (the comments in both files hold the arithmetic)."""
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    limit = memory_mib(container["resources"]["limits"]["memory"])
    assert memory_mib(compose()["services"]["serve"]["mem_limit"]) == limit
    assert memory_mib(container["resources"]["requests"]["memory"]) == limit
    measured = json.loads((ROOT / "metrics" / "bench_uploads.json").read_text())["burst"]
    base = limit - PARAMS["serve"]["recordings"]["memory_budget_mb"]
    assert measured["base_rss_mib"] <= base <= measured["base_rss_mib"] + 64  # the base, rounded up a little
    assert measured["memory_budget_mib"] == PARAMS["serve"]["recordings"]["memory_budget_mb"]
    assert measured["peak_within_budget_plus_base"] and measured["server_errors"] == 0


def test_kubernetes_manifests_match_the_api_schemas():
    """Offline schema validation (kubernetes-validate, from PyPI, with the schemas of each Kubernetes
    release bundled): misspelt fields and wrong types fail here, not at `kubectl apply`."""
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    kinds = []
    for doc in manifests():
        kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields are errors too
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    broken = copy.deepcopy(manifest("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {"path": "/ready"}
    with pytest.raises(kubernetes_validate.ValidationError, match="'httpget' was unexpected"):
        kubernetes_validate.validate(broken, version, strict=True)


# ---------------------------------------------------------------- the drift webhook

@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 that keeps every POST body (and answers `status`)."""
    received, status = [], {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/drift", received, status
    server.shutdown()
    server.server_close()


DRIFT = {"severity": "critical", "production_windows": 1815, "units_hint": "accelerometer looks like milli-g",
         "drifted": ["az [critical]: PSI 8.12, KS 1.00, W/sd 212.0"]}


def test_a_drift_alert_reaches_the_webhook_with_the_verdict(receiver, monkeypatch):
    url, received, _ = receiver
    monkeypatch.delenv("HAR_DRIFT_WEBHOOK_URL", raising=False)
    outcome = notify_drift(DRIFT, {**PARAMS["monitor"]["webhook"], "url": url}, report="reports/drift.html")
    assert outcome == "drift webhook: critical alert sent to 127.0.0.1 (HTTP 200)"
    (posted,) = received
    assert posted["path"] == "/hooks/drift" and posted["type"] == "application/json"
    body = posted["body"]
    assert body["severity"] == "critical" and body["drifted"] == DRIFT["drifted"] and body["production_windows"] == 1815
    assert body["text"].startswith("Drift CRITICAL on 1815 production windows: az [critical]")
    assert body["report"] == "reports/drift.html"


def test_the_webhook_url_from_the_environment_wins_and_stays_out_of_messages(receiver, monkeypatch):
    url, received, _ = receiver
    monkeypatch.setenv("HAR_DRIFT_WEBHOOK_URL", url + "?token=s3cret")
    sock, refusing = refusing_address()  # the configured URL would fail: only the environment's can succeed
    with sock:
        outcome = notify_drift(DRIFT, {**PARAMS["monitor"]["webhook"], "url": f"http://{refusing}/unused"})
    assert len(received) == 1 and "s3cret" not in outcome
    assert outcome == "drift webhook: critical alert sent to 127.0.0.1 (HTTP 200)"


def test_below_the_threshold_or_unconfigured_nothing_is_sent(receiver, monkeypatch):
    url, received, _ = receiver
    monkeypatch.delenv("HAR_DRIFT_WEBHOOK_URL", raising=False)
    webhook = {**PARAMS["monitor"]["webhook"], "url": url, "min_severity": "critical"}
    assert "below critical, nothing sent" in notify_drift({**DRIFT, "severity": "warning"}, webhook)
    assert "not configured" in notify_drift(DRIFT, PARAMS["monitor"]["webhook"])
    assert received == []


def test_a_failing_receiver_is_reported_not_raised(receiver, monkeypatch):
    url, received, status = receiver
    monkeypatch.delenv("HAR_DRIFT_WEBHOOK_URL", raising=False)
    status["code"] = 500
    assert notify_drift(DRIFT, {"url": url}) == "drift webhook: FAILED, 127.0.0.1 answered HTTP 500"
    sock, refusing = refusing_address()
    with sock:
        assert "FAILED, 127.0.0.1 unreachable" in notify_drift(DRIFT, {"url": f"http://{refusing}/", "timeout_s": 2})
