#!/usr/bin/env bash
# podman with the project's settings: `scripts/podman.sh <podman arguments>`, e.g. `scripts/podman.sh images`.
#   - CONTAINERS_CONF=ops/podman/containers.conf: runc, cgroupfs, no default ulimits (why: that file);
#   - images and layers under .cache/containers/storage (git-ignored; $HAR_CONTAINERS_CACHE names another
#     folder), so a build reuses the layers of the one before and a CI cache of that folder keeps them between
#     runs; the state of running containers under /tmp (short paths: conmon's sockets live there);
#   - `build`: the CA bundle this machine's pip trusts ($PIP_CERT, else Debian's system bundle) mounted into
#     every RUN step with a pip configuration naming it, so pip in the image trusts what pip on the host trusts
#     (here a TLS-intercepting proxy stands between the machine and PyPI); nothing of it stays in the image;
#   - BUILDAH_FORMAT=docker: images in Docker's format, the one that keeps the Dockerfile's HEALTHCHECK (OCI
#     images drop it).
# The tests (tests/container_helpers.py), scripts/build_base_image.sh and podman-compose (--podman-path) all
# call podman through this script.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="$root/ops/podman/containers.conf"
export BUILDAH_FORMAT=docker
cache="${HAR_CONTAINERS_CACHE:-$root/.cache/containers}"
storage="$cache/storage"
state="/tmp/har-podman-$(id -u)-$(printf %s "$storage" | md5sum | cut -c1-8)"
global=(--root "$storage" --runroot "$state/run" --tmpdir "$state/tmp")
ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
if [ "${1:-}" = build ] && [ -f "$ca" ]; then
  shift
  mkdir -p "$cache/pip"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$cache/pip/pip.conf"
  exec podman "${global[@]}" build --volume "$(realpath "$ca"):/etc/ssl/certs/ca-certificates.crt:ro" \
    --volume "$cache/pip:/etc/xdg/pip:ro" "$@"
fi
exec podman "${global[@]}" "$@"
