"""Drift alerts to a webhook: one JSON POST when the drift stage's verdict is severe enough.

The body carries `text` (what Slack and Mattermost incoming webhooks display) and the details
for any other receiver. Configured in `monitor.webhook` (conf/monitor/default.yaml); the URL
usually holds a secret, so it is best given through the environment variable `url_env` names,
and it never appears in messages (only its host does).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from har.drift import SEVERITIES


def webhook_url(webhook: dict) -> str | None:
    """The environment variable named by `url_env` when set, else `url`, else None (notifications off)."""
    from_env = os.environ.get(webhook.get("url_env") or "", "").strip()
    return from_env or webhook.get("url") or None


def drift_alert(result: dict, *, report: str | None = None) -> dict:
    """The JSON body for a drift verdict (`result` as metrics/drift.json holds it)."""
    severity = result["severity"]
    drifted = list(result.get("drifted") or [])
    text = f"Drift {severity.upper()} on {result['production_windows']} production windows"
    if drifted:
        text += ": " + "; ".join(drifted)
    if result.get("units_hint"):
        text += f" ({result['units_hint']})"
    if report:
        text += f". Report: {report}"
    return {"text": text, "source": "har drift stage", "severity": severity, "drifted": drifted,
            "production_windows": result["production_windows"], "units_hint": result.get("units_hint"),
            "report": report}


def post_json(url: str, payload: dict, *, timeout_s: float) -> int:
    """POST `payload` as JSON; the HTTP status (raises urllib's errors)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "har-drift-notifier"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.status


def notify_drift(result: dict, webhook: dict, *, report: str | None = None) -> str:
    """Post the drift alert when a URL is configured and the severity reaches `min_severity`.

    Returns one line saying what happened, for the stage to print. A receiver that is down does
    not fail the stage (its report and metrics are still right); the line says so instead.
    """
    url = webhook_url(webhook)
    if not url:
        return "drift webhook: not configured (monitor.webhook)"
    minimum = webhook.get("min_severity", "warning")
    if minimum not in SEVERITIES:
        raise ValueError(f"monitor.webhook.min_severity is {minimum!r}, expected one of {list(SEVERITIES)}")
    if SEVERITIES.index(result["severity"]) < SEVERITIES.index(minimum):
        return f"drift webhook: severity {result['severity']} is below {minimum}, nothing sent"
    host = urlsplit(url).hostname
    try:
        status = post_json(url, drift_alert(result, report=report), timeout_s=float(webhook.get("timeout_s", 5)))
    except urllib.error.HTTPError as error:
        return f"drift webhook: FAILED, {host} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"drift webhook: FAILED, {host} unreachable ({getattr(error, 'reason', error)})"
    return f"drift webhook: {result['severity']} alert sent to {host} (HTTP {status})"
