#!/usr/bin/env bash
# Set everything up from nothing but Python, then run the pipeline end to end.
#   ./setup.sh            create .venv from the pinned lock, then `dvc repro`
#   ./setup.sh --no-run   set up only (CI uses this before the tests)
set -euo pipefail
cd "$(dirname "$0")"

# The page's browser tests drive Debian's Chromium through Selenium (Playwright's own browser download
# cannot be fetched here). Installed only when missing, and only as root.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
  else
    echo "setup.sh: chromium/chromedriver missing; the page's browser tests need: apt-get install -y chromium chromium-driver" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements.lock

# The operations tests (tests/test_ops_stack.py, tests/test_ops.py) run Debian's Prometheus, Alertmanager
# and kubectl. Installed when missing and when this may (root with apt-get, as in CI); elsewhere those
# tests skip, naming the package, and in CI (env CI set) they fail.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Queued experiments (`dvc queue start`) run in copies under .dvc/tmp/exps/<name>, where the
# relative ../shared/data of params.yaml would point nowhere: give that folder the same neighbour.
mkdir -p .dvc/tmp/exps
ln -sfn "$(cd .. && pwd)/shared" .dvc/tmp/exps/shared

if [ "${1:-}" != "--no-run" ]; then
  # Stage commands call `python` and queue workers call `dvc` by name: both from .venv.
  export PATH="$PWD/.venv/bin:$PATH"
  dvc repro
  python scripts/summary.py
fi
