"""The operations stack run for real: promtool over the shipped Prometheus files and the alert unit tests,
then the service scraped by a real Prometheus (Debian's binary) that sends to a real Alertmanager, which
delivers to a webhook receiver in this test. Everything on 127.0.0.1, 1 s scrape and evaluation intervals.

Binaries missing: these tests fail in CI (env CI set; setup.sh installs them as root) and skip elsewhere
with the apt-get command."""
import http.client
import json
import math
import re
import shutil
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
import yaml

from ops_helpers import Receiver, need_binary, poll, start_alertmanager, start_prometheus, stop_process
from serve_helpers import ROOT, TOKEN, start_server, stop_server, write_tiny_model

PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"windows": np.random.default_rng(0).normal(size=(2, 200, 6)).round(3).tolist()}
BAD = {"windows": [[1.0]]}  # 422: not 200 samples of 6 channels
ALERT = "HarClientErrorsHigh"  # the alert this module trips: a flood of refused prediction requests


def promtool(*args: str, cwd=PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([need_binary("promtool", "prometheus"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


# ---------------------------------------------------------------- promtool over the shipped files

def test_promtool_accepts_the_prometheus_config_and_its_rules():
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout  # the config's rule_files reach alerts.yml
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 10 rules found" in rules.stdout


def test_every_alert_has_unit_tests_that_pass():
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {t["alertname"] for test in tests for t in test["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for test in tests for t in test["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == alerts and quiet == alerts  # each alert is seen firing and seen quiet
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_catch_a_changed_threshold_duration_or_annotation(tmp_path):
    """The same tests against rules that are slightly wrong must fail, and say where."""
    shutil.copy(PROMETHEUS_DIR / "alerts_test.yml", tmp_path)
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    for change, expected in [((" > 0.01", " > 0.005"), "0.9% server errors"),
                             (("for: 2m", "for: 1m"), "service down for 2 minutes"),
                             (("printf \\\"%.2f\\\"", "humanize"), "mean confidence 0.4 on 1500 windows")]:
        assert change[0] in rules
        (tmp_path / "alerts.yml").write_text(rules.replace(*change, 1))
        result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
        assert result.returncode != 0 and expected in result.stdout + result.stderr, change


# ---------------------------------------------------------------- the live stack

def shipped(path: str) -> dict:
    return yaml.safe_load((ROOT / "ops" / path).read_text())


def rules_with_shorter_for(shorten: dict[str, str]) -> dict:
    """alerts.yml with the `for:` of the named alerts shortened, so that they fire within seconds."""
    rules = shipped("prometheus/alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] in shorten:
                rule["for"] = shorten[rule["alert"]]
    return rules


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """service -> Prometheus (shipped config, 1 s intervals, shortened `for:`) -> Alertmanager (shipped
    config, short waits) -> webhook receiver."""
    folder = tmp_path_factory.mktemp("stack")
    need_binary("prometheus", "prometheus")
    need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    model = write_tiny_model(folder / "model.onnx")
    service, service_url = start_server(model, folder / "serve.log")
    receiver = Receiver()
    processes = []
    try:
        alertmanager_config = shipped("alertmanager/alertmanager.yml")
        alertmanager_config["receivers"][0]["webhook_configs"][0]["url"] = receiver.url
        alertmanager_config["route"].update(group_wait="1s", group_interval="1s")
        alertmanager, alertmanager_url = start_alertmanager(folder / "alertmanager", alertmanager_config)
        processes.append(alertmanager)

        config = shipped("prometheus/prometheus.yml")
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "har-serve"]
        job.pop("dns_sd_configs")  # the compose replicas' names: here the one service on its loopback port
        job["static_configs"] = [{"targets": [service_url.removeprefix("http://")]}]
        config["scrape_configs"] = [job]  # no compose balancer in this stack
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager_url.removeprefix("http://")]}]
        prometheus, prometheus_url = start_prometheus(folder / "prometheus", config,
                                                      rules=rules_with_shorter_for({ALERT: "3s", "HarServiceDown": "0s"}))
        processes.append(prometheus)
        poll(lambda: query(prometheus_url, 'up{job="har-serve"} == 1'), 30, what="Prometheus scraping the service")
        state = {"folder": folder, "model": model, "service": service, "service_url": service_url,
                 "prometheus": prometheus_url, "alertmanager": alertmanager_url, "receiver": receiver}
        yield state
        service = state["service"]  # the restart test replaces it
    finally:
        for process in reversed(processes):
            stop_process(process)
        receiver.close()
        stop_server(service)


def query(prometheus_url: str, promql: str) -> list[dict]:
    answer = httpx.get(prometheus_url + "/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def firing(prometheus_url: str, name: str) -> list[dict]:
    alerts = httpx.get(prometheus_url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


class Traffic:
    """Requests to the service from a thread, until stopped: `bad` refused ones for every good one."""

    def __init__(self, url: str, bad: int):
        self.stopped, self.statuses = threading.Event(), []
        self.thread = threading.Thread(target=self.run, args=(url, bad), daemon=True)
        self.thread.start()

    def run(self, url, bad):
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
            while not self.stopped.is_set():
                for body in [GOOD] + [BAD] * bad:
                    self.statuses.append(client.post("/predict", json=body).status_code)
                time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join()


def test_refused_requests_fire_the_alert_in_prometheus_and_alertmanager_delivers_it(stack):
    started = time.monotonic()
    traffic = Traffic(stack["service_url"], bad=3)  # 75% refused: above the rule's 25%
    try:
        (alert,) = poll(lambda: firing(stack["prometheus"], ALERT), 60, what=f"{ALERT} firing in /api/v1/alerts")
        in_prometheus = time.monotonic() - started
        delivered = poll(lambda: [a for body in stack["receiver"].received for a in body["alerts"]
                                  if a["labels"]["alertname"] == ALERT and a["status"] == "firing"],
                         30, what=f"{ALERT} at the webhook")
        at_webhook = time.monotonic() - started
    finally:
        traffic.stop()
    assert set(traffic.statuses) == {200, 422}
    assert alert["labels"] == {"alertname": ALERT, "severity": "warning"}
    assert re.fullmatch(r"\d+(\.\d+)?% of prediction requests are refused \(4xx\)", alert["annotations"]["summary"])
    assert 0.5 < float(alert["value"]) <= 0.8  # 3 in 4 refused, once the first good requests age out
    assert delivered[0]["labels"] == alert["labels"]
    assert re.fullmatch(r"\d+(\.\d+)?% of prediction requests are refused \(4xx\)", delivered[0]["annotations"]["summary"])
    body = next(b for b in stack["receiver"].received if any(a["labels"]["alertname"] == ALERT for a in b["alerts"]))
    assert body["receiver"] == "team" and body["groupLabels"] == {"alertname": ALERT}
    print(f"\n{ALERT}: firing in Prometheus after {in_prometheus:.1f} s, at the webhook after {at_webhook:.1f} s")


@pytest.mark.parametrize("panel", ["Requests per second by route and status", "Mean prediction confidence"])
def test_dashboard_panels_answer_from_the_live_prometheus(stack, panel):
    dashboard = json.loads((ROOT / "ops" / "grafana" / "dashboard.json").read_text())
    (target, *_) = next(p["targets"] for p in dashboard["panels"] if p["title"] == panel)
    promql = target["expr"].replace("$__rate_interval", "1m")  # what Grafana substitutes, at this scrape interval
    traffic = Traffic(stack["service_url"], bad=0)
    try:
        result = poll(lambda: [r for r in query(stack["prometheus"], promql) if float(r["value"][1]) > 0], 30,
                      what=f"{panel!r} non-empty")
    finally:
        traffic.stop()
    values = [float(r["value"][1]) for r in result]
    assert all(math.isfinite(v) for v in values)
    if panel == "Mean prediction confidence":
        assert len(values) == 1 and 1 / 3 <= values[0] <= 1  # the top-1 of three labels
    else:
        assert any(r["metric"] == {"route": "/predict", "status": "200"} for r in result), result


# ---------------------------------------------------------------- restart under load

def load_outcome(url: str) -> str:
    """One request on a fresh connection: "200" with a whole answer, "refused", or what went wrong."""
    try:
        response = httpx.post(url + "/predict", json=GOOD, headers=AUTH, timeout=10)
    except httpx.ConnectError as error:
        return "refused" if "refused" in str(error).lower() else f"connect error: {error}"
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError):
        return f"partial body: {response.content[:80]!r}"
    return "200" if len(predictions) == len(GOOD["windows"]) else f"partial body: {len(predictions)} predictions"


def test_a_restart_under_load_shows_only_200_or_refused_and_prometheus_sees_the_gap(stack):
    outcomes, stopped = [], threading.Event()

    def load():
        deadline = time.monotonic() + 30  # bounded, whatever happens to the restart
        while not stopped.is_set() and time.monotonic() < deadline:
            outcomes.append((time.monotonic(), load_outcome(stack["service_url"])))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(1.0)
    # A client on a connection the service has already accepted (idle, kept alive) sends its request
    # just after SIGTERM: it gets its whole answer, not a connection closed without one.
    port = int(stack["service_url"].rsplit(":", 1)[1])
    held = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    held.request("GET", "/health")
    assert held.getresponse().read() == b'{"status":"alive"}'
    down = time.monotonic()
    stack["service"].terminate()
    time.sleep(0.3)
    held.request("POST", "/predict", body=json.dumps(GOOD), headers={**AUTH, "Content-Type": "application/json"})
    answer = held.getresponse()
    assert answer.status == 200 and len(json.loads(answer.read())["predictions"]) == len(GOOD["windows"])
    held.close()
    stack["service"].wait(timeout=30)  # a second SIGTERM would make uvicorn cut its shutdown short
    stack["service"], url = start_server(stack["model"], stack["folder"] / "serve-restarted.log", port=port)
    up_again = time.monotonic()
    assert url == stack["service_url"]
    time.sleep(1.0)
    stopped.set()
    thread.join()

    kinds = {outcome for _, outcome in outcomes}
    assert kinds <= {"200", "refused"}, sorted(kinds - {"200", "refused"})
    assert "refused" in kinds and any(t < down and o == "200" for t, o in outcomes)
    assert load_outcome(url) == "200"  # after the restart (the load may have used up its 30 s by then)

    def samples():
        (series,) = query(stack["prometheus"], f'up{{job="har-serve"}}[{math.ceil(time.monotonic() - down) + 5}s]')
        values = [float(v) for _, v in series["values"]]
        return values if 0 in values and values[-1] == 1 else None

    values = poll(samples, 20, what="up = 0 during the restart, then 1")
    # HarServiceDown (its `for:` shortened to 0s here) fires in the gap and reaches the receiver.
    receiver = stack["receiver"]
    down_alerts = poll(lambda: [(at, a) for at, body in zip(receiver.arrived, receiver.received) for a in body["alerts"]
                                if a["labels"]["alertname"] == "HarServiceDown"], 20, what="HarServiceDown at the webhook")
    arrived, down_alert = down_alerts[0]
    assert down_alert["labels"] == {"alertname": "HarServiceDown", "job": "har-serve", "severity": "critical"}
    assert down_alert["annotations"]["summary"] == "No har-serve instance is being scraped"
    print(f"\nrestart: {len(outcomes)} requests, {sum(o == 'refused' for _, o in outcomes)} refused, "
          f"service back after {up_again - down:.1f} s; up=0 in {values.count(0)} scrapes; "
          f"HarServiceDown at the webhook {arrived - down:.1f} s after SIGTERM")
