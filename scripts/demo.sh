#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run a real local migration: a sample guest tree goes through
# a sentinel, a gateway and a receiver on loopback, with mutual TLS, full, continuous and final
# sync, and the replica is checked against the source. Extra arguments go to `osam demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OSAM_ROOT"
bash scripts/setup.sh
step "osam demo"
exec "$OSAM_ROOT/.venv/bin/osam" demo "$@"
