#!/usr/bin/env bash
# Install the Debian packages of scripts/debian-packages.txt that are missing.
#
#   bash scripts/install-debian-packages.sh [PACKAGE ...]
#
# With no argument: every package of the list (plus $TFENV_APT_EXTRA); with arguments:
# only those, each of which must be on the list (the list is the one place that says
# what this project takes from Debian). apt-get runs only when something is missing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
say() { echo "[apt] $*"; }
die() {
  echo "[apt] ERROR: $*" >&2
  exit 1
}
mapfile -t LISTED < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^[[:space:]]*$/d' \
  "$HERE/debian-packages.txt")
if [ $# -gt 0 ]; then
  wanted=("$@")
  for pkg in "${wanted[@]}"; do
    printf '%s\n' "${LISTED[@]}" | grep -qx "$pkg" ||
      die "$pkg is not in scripts/debian-packages.txt: add it there"
  done
else
  # shellcheck disable=SC2206
  wanted=("${LISTED[@]}" ${TFENV_APT_EXTRA:-})
fi
missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  say "Debian packages present: ${wanted[*]}"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} yourself"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "installing ${missing[*]} needs root: run as root or install sudo"
fi
say "installing Debian packages: ${missing[*]} ..."
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends "${missing[@]}" >/dev/null
