"""The OpenAPI contract against the live service: schemathesis (`--checks all`) on the real server.

The server is `python -m serve` on 127.0.0.1 with the tiny model and small limits (2 windows per
request), so that schema-valid bodies are small; the number of generated examples is bounded.
tests/schemathesis.toml lists the few refusals a JSON Schema cannot express (and why).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from har.config import load_params
from serve_helpers import ROOT, TOKEN, start_server, stop_server, write_tiny_model

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_schemathesis_finds_no_contract_failures(tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.fail(f"schemathesis is not installed next to {sys.executable}: pip install -r requirements.txt")
    params = load_params(ROOT / "params.yaml")
    params["serve"].update(max_windows_per_request=2, max_body_mb=1)
    params["store"].update(url=f"sqlite:///{tmp_path}/study.db", blob_root=str(tmp_path / "blobs"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    model = write_tiny_model(tmp_path / "model.onnx")
    process, url = start_server(model, tmp_path / "server.log", "--params", str(tmp_path / "params.yaml"),
                                "--no-access-log")
    try:
        run = subprocess.run(
            [str(SCHEMATHESIS), "--config-file", str(ROOT / "tests/schemathesis.toml"), "run",
             f"{url}/schema/openapi.json", "--checks", "all", "--max-examples", "25", "--workers", "1",
             "--seed", "16", "-H", f"Authorization: Bearer {TOKEN}", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache folder goes there
    finally:
        stop_server(process)
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    selected, tested = re.search(r"Selected: (\d+)/(\d+)", summary), re.search(r"Tested: (\d+)", summary)
    assert selected[1] == selected[2] == tested[1], summary  # every route was exercised
    assert "Traceback" not in (tmp_path / "server.log").read_text()
