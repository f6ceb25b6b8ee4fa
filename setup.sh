#!/usr/bin/env bash
# Set everything up from nothing but Python, then run the pipeline end to end.
#   ./setup.sh            create .venv from the pinned lock, then `dvc repro`
#   ./setup.sh --no-run   set up only (CI runs the full ./setup.sh, then checks the run reproduced dvc.lock)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests drive for real: Chromium for the page (Playwright's own browser download
# cannot be fetched here), Prometheus, Alertmanager and kubectl for the operations tests, PostgreSQL for the study store's,
# HAProxy and curl in front of and against the service's replicas. Installed when
# missing and when this may (root with apt-get, as in CI); elsewhere those tests skip naming the
# package, and in CI (env CI set) they fail.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)  # the study store's tests
command -v haproxy >/dev/null || missing+=(haproxy)  # the replicas' load balancer (tests/test_replicas.py)
command -v curl >/dev/null || missing+=(curl)  # one of the real clients of tests/test_refusals.py
command -v redis-server >/dev/null || missing+=(redis-server)  # the streams' broker (tests/test_stream_broker.py)
# The service's image built and run (tests/test_serve_container.py, test_serve_compose.py): podman with runc
# (ops/podman/containers.conf says why not crun), debootstrap for the Debian-built base, podman-compose.
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v podman-compose >/dev/null || missing+=(podman-compose)
# .cache/setup-packages.done appears once no more packages are coming (holding apt-get's exit status, or
# "none"): .ci/run waits for it to build the container tests' images beside the pipeline.
mkdir -p .cache
rm -f .cache/setup-packages.done
apt_pid=""
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # In the background: only the tests need these, so they install while pip and the pipeline run
  # (the end of this script waits for them and fails with apt-get's output if it failed).
  apt_log="$(mktemp)"
  (
    status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } || status=$?
    echo "$status" > .cache/setup-packages.done
    exit "$status"
  ) >"$apt_log" 2>&1 &
  apt_pid=$!
else
  [ "${#missing[@]}" -eq 0 ] || echo "setup.sh: missing ${missing[*]}; install with: apt-get install -y ${missing[*]}" >&2
  echo none > .cache/setup-packages.done
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements.lock

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

if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  cat "$apt_log" >&2
  echo "setup.sh: apt-get install ${missing[*]} failed (its output above)" >&2
  exit 1
fi
