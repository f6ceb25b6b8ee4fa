"""Several `python -m serve` replicas behind HAProxy (Debian's `haproxy`, the shipped ops/haproxy/haproxy.cfg),
all on 127.0.0.1: for tests/test_replicas.py and bench/replicas.py.

The shipped config is used as it is, but for its addresses: its `bind` lines get free loopback ports, and
its `server-template` (replicas found through Docker's DNS) becomes one `server` line per replica here."""
from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ops_helpers import need_binary, unused_port
from serve_helpers import ROOT, TOKEN, start_server, stop_server

HAPROXY_CFG = ROOT / "ops" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str:
    """Debian's haproxy. Missing: the test fails in CI (setup.sh installs it) and skips elsewhere."""
    return need_binary("haproxy", "haproxy")


def loopback_config(port: int, stats_port: int, replicas: dict[str, int]) -> str:
    """The shipped config with loopback addresses; everything else (checks, timeouts, retries) as shipped."""
    text = HAPROXY_CFG.read_text()
    lines = "\n".join(f"    server {name} 127.0.0.1:{replica_port} check" for name, replica_port in replicas.items())
    for pattern, replacement in [(r"^(\s*)bind :8000\b.*$", rf"\1bind 127.0.0.1:{port}"),
                                 (r"^(\s*)bind :8404\b.*$", rf"\1bind 127.0.0.1:{stats_port}"),
                                 (r"^\s*server-template serve .*$", lines)]:
        text, found = re.subn(pattern, replacement, text, flags=re.M)
        assert found == 1, f"{HAPROXY_CFG}: no line matches {pattern!r}: the test's substitution is out of date"
    return text


class Balancer:
    """HAProxy in the foreground on free loopback ports, in front of `replicas` (name -> port)."""

    def __init__(self, folder: Path, replicas: dict[str, int]):
        self.folder = folder
        self.port, self.stats_port = unused_port(), unused_port()
        self.url, self.stats_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.stats_port}"
        config = folder / "haproxy.cfg"
        config.write_text(loopback_config(self.port, self.stats_port, replicas))
        self.log = folder / "haproxy.log"
        self.process = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)], stdout=open(self.log, "ab"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.stats_url + "/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"haproxy did not answer within 30 s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def servers(self) -> dict[str, dict]:
        """The backend's servers as HAProxy's stats CSV has them: status (UP, DOWN, ...), scur (requests on it
        now), stot (all it was sent), ..."""
        text = httpx.get(self.stats_url + "/stats;csv", timeout=5).text.lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "serve" and row["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_until(self, name: str, status: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (seen := self.servers()[name]["status"]) != status:
            assert time.monotonic() < deadline, f"HAProxy saw {name} {seen}, not {status}, for {timeout_s:.0f} s"
            time.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Replica:
    """One `python -m serve` with `args`; restarted on the port it first got."""

    def __init__(self, name: str, folder: Path, model: Path, args: list[str], token: str = TOKEN):
        self.name, self.folder, self.model, self.args, self.token = name, folder, model, args, token
        self.port: int | None = None
        self.starts = 0
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.process, url = start_server(self.model, self.log, *self.args, token=self.token, port=self.port)
        self.port = int(url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; requests in flight lose their connection."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait: the service drains (--drain-s), finishes what is in flight and exits."""
        self.process.terminate()
        self.process.wait(timeout=60)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_server(self.process)


def replica_args(params: Path, store_url: str, drain_s: float = 3.0) -> list[str]:
    """What every replica runs with: the shared store, refused if it were SQLite; leaving rotation on SIGTERM."""
    return ["--params", str(params), "--store", store_url, "--replicated", "--drain-s", str(drain_s)]
