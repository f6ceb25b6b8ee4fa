#!/usr/bin/env bash
# localhost/har-base:bookworm, the stand-in for python:3.11-slim where no container registry can be reached:
# Debian bookworm from Debian's own packages (debootstrap, variant minbase) with Debian's python3.11 and
# python3-venv, imported into podman's storage (scripts/podman.sh). Build the service's image on it with
#   scripts/podman.sh build --build-arg BASE=localhost/har-base:bookworm -t localhost/har-serve .
#
#   scripts/build_base_image.sh            build it unless the image from this version of the script is there
#   DEBIAN_MIRROR=http://… scripts/…       another mirror (default: the one apt uses on this machine)
#
# Cached under .cache/containers (git-ignored; $HAR_CONTAINERS_CACHE names another folder, as for
# scripts/podman.sh): the root filesystem's tarball and the downloaded .debs. A change to this script builds a
# new tarball; the image carries the script's hash as a label.
set -euo pipefail
trap 'echo "build_base_image: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
root="$(cd "$(dirname "$0")/.." && pwd)"
podman="$root/scripts/podman.sh"
image=localhost/har-base:bookworm
packages=python3.11,python3-venv,ca-certificates   # ca-certificates: pip reaches PyPI over TLS
cache="${HAR_CONTAINERS_CACHE:-$root/.cache/containers}"
key="$(sha256sum "$0" | cut -c1-16)"
tarball="$cache/har-base-bookworm-$key.tar"

if [ "$("$podman" image inspect --format '{{index .Labels "har.base.script"}}' "$image" 2>/dev/null)" = "$key" ]; then
  echo "build_base_image: $image is up to date (script $key)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "build_base_image: debootstrap not found: apt-get install -y debootstrap" >&2; exit 1; }

# The mirror apt already uses (deb822 sources first, then sources.list), so the base needs no other network.
# Missing files and unmatched lines are not errors (pipefail); awk reads to the end, so sed never gets SIGPIPE.
apt_mirror() {
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
    sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\?$/\1/p' \
      -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)\/\?[[:space:]]\+bookworm[[:space:]].*/\2/p' |
    awk 'NR == 1'
}
mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"

if [ ! -f "$tarball" ]; then
  mkdir -p "$cache/debs"
  tree="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$tree"' EXIT
  echo "build_base_image: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" bookworm "$tree" "$mirror" \
    > "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # As Debian's slim images do: no documentation, manual pages or translations, now or from later apt-get
  # installs (the PostgreSQL image installs on this base); no package lists or downloaded .debs.
  cat > "$tree/etc/dpkg/dpkg.cfg.d/excludes" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CONF
  find "$tree/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$tree"/usr/share/man/* "$tree"/usr/share/info/* "$tree"/var/cache/apt/*.bin \
    "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* "$tree"/var/log/*.log
  find "$tree/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  # podman supplies these per container.
  rm -f "$tree/etc/resolv.conf" "$tree/etc/hostname"
  chmod 755 "$tree"   # mktemp made it 0700: as the image's /, no other user could enter it
  tar -C "$tree" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  find "$cache" -maxdepth 1 -name 'har-base-bookworm-*.tar' -not -path "$tarball" -delete   # older versions
fi

previous="$("$podman" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
# awk reads to the end: leaving early would end tar with SIGPIPE, and pipefail would stop the script.
version="$(tar -xOf "$tarball" ./var/lib/dpkg/status | awk '/^Package: python3.11$/ {p=1} p && /^Version:/ && !v {v=$2} END {print v}')"
"$podman" import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --change "LABEL har.base.script=$key" --change "LABEL har.base.python=$version" \
  --change "LABEL har.base.mirror=$mirror" "$tarball" "$image" >/dev/null
# The image this one replaces, unless images built on it still need it.
current="$("$podman" image inspect --format '{{.Id}}' "$image")"
[ -z "$previous" ] || [ "$previous" = "$current" ] || "$podman" rmi "$previous" >/dev/null 2>&1 || true
echo "build_base_image: $image from $(basename "$tarball") (Debian python3.11 $version)"
