#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole test suite: daemons/tests and
# the end-to-end tests under tests/ (testpaths in pytest.ini). Extra arguments go
# to pytest, e.g.  bash scripts/test.sh -k registry -x   or   bash scripts/test.sh daemons/tests/test_x.py
# OSAM_TEST_TIMEOUT sets the per-test timeout in seconds (default 300; a test's
# own @pytest.mark.timeout wins).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OSAM_ROOT"

bash scripts/setup.sh

step "pytest"
rc=0
"$OSAM_ROOT/.venv/bin/pytest" -c pytest.ini --rootdir "$OSAM_ROOT" \
    -p no:cacheprovider -ra --timeout "${OSAM_TEST_TIMEOUT:-300}" "$@" || rc=$?
case "$rc" in
    0) ;;
    5) die "pytest collected no tests (exit 5): a test run that runs nothing is a failure" ;;
    *) printf 'error: pytest failed (exit %d)\n' "$rc" >&2 ;;
esac
exit "$rc"
