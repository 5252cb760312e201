#!/usr/bin/env bash
# Quality gates of the vmware.osam collection with ansible-test, run from the collection root as
# ansible-test requires:
#   bash scripts/ansible-test.sh            sanity, then units
#   bash scripts/ansible-test.sh sanity     only sanity   (extra arguments go to ansible-test,
#   bash scripts/ansible-test.sh units      only units     e.g. `units -v`, `sanity --test pep8`)
# Both use `--venv --python 3.11`: ansible-test makes its own virtual environments from the
# project's .venv (which holds ansible-core) and installs each test's pinned requirements there.
#
# ansible-test bootstraps pip in those environments with a script it downloads from a host these
# machines cannot reach; it looks for that script in its cache first and does not check a hash.
# So before the first run this puts a stand-in into the cache: a few lines that install the
# requested pip version from the package index with the pip wheel Python's ensurepip uses.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV_BIN="$OSAM_ROOT/.venv/bin"
COLLECTION="$OSAM_ROOT/collections/ansible_collections/vmware/osam"
PYTHON_VERSION=3.11
export PATH="$VENV_BIN:$PATH"

# The pip version ansible-test asks for, read from its own requirements code.
pip_version() {
    python - <<'EOF'
import os
import re

import ansible_test

source = os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')
with open(source) as f:
    print(re.search(r"pip='([0-9.]+)'", f.read()).group(1))
EOF
}

install_pip_bootstrap() {
    local version cache
    version="$(pip_version)"
    cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    [ -s "$cache" ] && return 0
    mkdir -p "$(dirname "$cache")"
    cat >"$cache" <<'EOF'
"""Stands in for ansible-test's downloaded pip bootstrap (see scripts/ansible-test.sh in vmware.osam).
Runs `pip install ARGS` from the pip wheel that ensurepip uses for this interpreter."""
import glob
import os
import runpy
import sys

import ensurepip

# CPython keeps the wheel in ensurepip/_bundled; distributions (Debian: python3-pip-whl) put it in
# the directory ensurepip knows as _WHEEL_PKG_DIR, /usr/share/python-wheels.
places = [os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'),
          getattr(ensurepip, '_WHEEL_PKG_DIR', None) or '/usr/share/python-wheels']
bundled = sorted(wheel for place in places for wheel in glob.glob(os.path.join(place, 'pip-*.whl')))
if not bundled:
    sys.exit('cannot bootstrap pip: this Python has no bundled pip wheel')
sys.path.insert(0, bundled[-1])  # a wheel is importable as is
wanted = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
sys.argv = ['pip', 'install'] + wanted
runpy.run_module('pip', run_name='__main__', alter_sys=True)
EOF
    printf 'installed a pip bootstrap stand-in for ansible-test: %s\n' "$cache"
}

run_sanity() {
    step "ansible-test sanity"
    ansible-test sanity --venv --python "$PYTHON_VERSION" --color no "$@"
}

run_units() {
    step "ansible-test units"
    ansible-test units --venv --python "$PYTHON_VERSION" --color no "$@"
}

install_pip_bootstrap
cd "$COLLECTION"
what="${1:-all}"
[ "$#" -gt 0 ] && shift
case "$what" in
    sanity) run_sanity "$@" ;;
    units) run_units "$@" ;;
    all) run_sanity "$@"; run_units "$@" ;;
    *) die "usage: $0 [sanity|units|all] [ansible-test options]" ;;
esac
