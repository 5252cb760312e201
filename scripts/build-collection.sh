#!/usr/bin/env bash
# Build the vmware.osam collection tarball, with the daemons inside:
#   1. the osam wheel from daemons/ (reproducible: SOURCE_DATE_EPOCH);
#   2. a copy of the collection with that wheel in the wheelhouse role's files/, where an
#      installed collection finds it without the source tree (the checkout itself never holds
#      one: there the role builds from daemons/, and a wheel left behind would go stale);
#   3. ansible-galaxy collection build of that copy into dist/ (or the directory given as $1).
# Prints the tarball's path on its last line. Uses .venv/ (scripts/setup.sh makes it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OSAM_ROOT"

COLLECTION=collections/ansible_collections/vmware/osam
OUT="${1:-$OSAM_ROOT/dist}"
PY="$OSAM_ROOT/.venv/bin/python"
[ -x "$PY" ] || die "$PY not found: run scripts/setup.sh"

step "osam wheel from daemons/"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/osam-collection.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# No build isolation: .venv has the pinned setuptools, and no index is needed.
SOURCE_DATE_EPOCH=315532800 run_quiet "pip wheel" "$PY" -m pip wheel --disable-pip-version-check \
    --no-input --no-deps --no-build-isolation --wheel-dir "$scratch/wheel" ./daemons
# tests/output holds ansible-test's scratch files, which galaxy.yml's build_ignore leaves out.
mkdir -p "$scratch/osam"
tar -C "$COLLECTION" --exclude=./tests/output --exclude=__pycache__ -c . | tar -C "$scratch/osam" -x
rm -f "$scratch"/osam/roles/wheelhouse/files/osam-*.whl
cp "$scratch"/wheel/osam-*.whl "$scratch/osam/roles/wheelhouse/files/"
step "bundled $(cd "$scratch/wheel" && ls osam-*.whl)"

step "ansible-galaxy collection build into $OUT"
mkdir -p "$OUT"
run_quiet "collection build" "$OSAM_ROOT/.venv/bin/ansible-galaxy" collection build --force \
    --output-path "$OUT" "$scratch/osam"
version="$(awk '$1 == "version:" {print $2; exit}' "$COLLECTION/galaxy.yml")"
tarball="$OUT/vmware-osam-$version.tar.gz"
[ -f "$tarball" ] || die "no $tarball after the build"
printf '%s\n' "$tarball"
