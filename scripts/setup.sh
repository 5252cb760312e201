#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) to build, test and benchmark vmware.osam:
#   1. Debian packages (build deps of systemd-python, rsync/ssh/lsyncd for the
#      benchmark anchors, file-system and network tools the tests use);
#   2. the venv .venv/ at the repo root, made with Debian's /usr/bin/python3;
#   3. requirements/dev.txt (exact pins), then the daemons: pip install --no-deps -e daemons.
# Idempotent: each step is skipped when already done; the Python part is keyed
# by a hash of requirements/*.txt, daemons/pyproject.toml, this script, the repo
# path and the interpreter, so a second run takes about a second.
# Environment: OSAM_SETUP_FORCE=1 redoes the Python step; OSAM_SKIP_APT=1 skips step 1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OSAM_ROOT"
t0="$EPOCHREALTIME"

APT_PACKAGES=(
    # venv + building systemd-python from source (no wheels on the index)
    python3 python3-venv python3-dev gcc pkg-config libsystemd-dev
    # replication tools and benchmark anchors (rsync over ssh, lsyncd)
    rsync acl attr openssh-server openssh-client lsyncd
    # disks, file systems, namespaces, processes, file capabilities in tests
    util-linux e2fsprogs iproute2 procps libcap2-bin
    # TLS roots for pip
    ca-certificates
    # molecule: rootful podman with runc, container DNS and NAT (netavark calls iptables) on a podman network, and
    # debootstrap for the locally built systemd images (no registry is reachable)
    podman runc netavark aardvark-dns iptables debootstrap
    # guest disks: partition tables and the file systems replicas recreate; booting them
    # under qemu (scripts/guest-image.sh, tests/e2e/qemu_boot.py)
    fdisk lvm2 xfsprogs dosfstools mtools qemu-system-x86
    # the vSphere API simulator (govmomi's vcsim) the tests run against: scripts/build-vcsim.sh
    # builds it from Debian's own Go toolchain and govmomi sources (no Go module proxy needed)
    golang-go golang-github-vmware-govmomi-dev
    # Windows replicas: NTFS images and mounts (ntfs-3g over FUSE), registry hives (hivex)
    ntfs-3g python3-hivex libhivex-bin
)
VENV="$OSAM_ROOT/.venv"
PY_BASE=/usr/bin/python3
STAMP="$VENV/.osam-setup.stamp"

# ---------------------------------------------------------------- 1. Debian
missing_packages() {
    local p status
    for p in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || printf '%s\n' "$p"
    done
}

if [ "${OSAM_SKIP_APT:-0}" = 1 ]; then
    step "debian packages: skipped (OSAM_SKIP_APT=1)"
else
    command -v dpkg-query >/dev/null || die "not a Debian system (no dpkg-query); Debian 12 expected"
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        step "debian packages: all ${#APT_PACKAGES[@]} present"
    else
        step "debian packages: installing ${missing[*]}"
        [ "$(id -u)" -eq 0 ] || die "root needed to install Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
        # Keep package scripts from starting services (openssh-server would start
        # an sshd on all addresses): the benchmark starts its own on 127.0.0.1.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        run_quiet "apt-get update" apt-get "${apt_opts[@]}" update
        run_quiet "apt-get install" apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
        if [ -n "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
        mapfile -t still < <(missing_packages)
        [ "${#still[@]}" -eq 0 ] || die "still missing after apt-get install: ${still[*]}"
    fi
fi

# Tests and daemons listen on and dial "localhost": make sure it resolves (a bare
# debootstrap or some minimal images come without /etc/hosts).
if ! getent hosts localhost >/dev/null 2>&1; then
    step "hosts: localhost does not resolve, adding it to /etc/hosts"
    [ "$(id -u)" -eq 0 ] || die "localhost does not resolve and /etc/hosts needs root to fix"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>/etc/hosts
fi

# ---------------------------------------------------------------- 2. venv
[ -x "$PY_BASE" ] || die "$PY_BASE not found (python3 package)"
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    step "venv: $VENV is broken, recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    step "venv: creating .venv with $PY_BASE"
    run_quiet "venv" "$PY_BASE" -m venv "$VENV"
else
    step "venv: .venv present ($("$VENV/bin/python" -V 2>&1))"
fi

# ---------------------------------------------------------------- 3. Python packages
key="$(
    {
        printf 'root=%s\n' "$OSAM_ROOT"
        printf 'python=%s\n' "$("$VENV/bin/python" -c 'import sys; print(sys.version)')"
        for f in requirements/*.txt daemons/pyproject.toml scripts/setup.sh; do
            printf '%s\n' "$f"; cat "$f"
        done
    } | sha256sum | cut -c1-16
)"
# The stamp is trusted only if the package still imports (a half-done venv fails here).
if [ "${OSAM_SETUP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] \
        && "$VENV/bin/python" -c 'import osam' >/dev/null 2>&1; then
    step "python packages: up to date (key $key)"
else
    step "python packages: installing requirements/dev.txt (key $key)"
    rm -f "$STAMP"
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
    run_quiet "pip install requirements" "${pip[@]}" install --progress-bar off -r requirements/dev.txt
    step "python packages: pip install --no-deps -e daemons"
    run_quiet "pip install daemons" "${pip[@]}" install --progress-bar off \
        --no-deps --no-build-isolation -e daemons
    run_quiet "pip check" "${pip[@]}" check
    run_quiet "import check" "$VENV/bin/python" -c \
        'import osam, cryptography, lz4.block, msgpack, xxhash, h11, systemd.daemon, pytest, hypothesis, ansible'
    printf '%s\n' "$key" >"$STAMP"
fi

step "setup done in $(elapsed "$t0")"
