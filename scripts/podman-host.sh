#!/usr/bin/env bash
# Prepare this machine (Debian 12, root, no container registry reachable) to run the
# collection's molecule scenarios with the podman driver:
#   1. podman engine settings this kind of host needs (a drop-in under containers.conf.d);
#   2. the local systemd images the scenarios boot, built from a debootstrapped rootfs:
#        localhost/osam-systemd:bookworm   Debian 12, Python 3.11
#        localhost/osam-systemd:bullseye   Debian 11, Python 3.9
#      An image carries the hash of its recipe as a label; it is rebuilt only when the
#      recipe changes, or always with OSAM_REBUILD_IMAGES=1;
#   3. a smoke test: systemd boots as PID 1 in a privileged container.
# Usage: bash scripts/podman-host.sh [SUITE...]     (default: bookworm bullseye)
# Environment: OSAM_REBUILD_IMAGES=1 rebuilds; OSAM_DEBIAN_MIRROR overrides the mirror
# (default: the one apt on this machine uses); OSAM_IMAGE_WORK is the scratch directory.
# Needs the Debian packages podman, runc, netavark, aardvark-dns, iptables, debootstrap
# (scripts/setup.sh installs them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_REPO=localhost/osam-systemd
RECIPE_LABEL=org.vmware-osam.image-recipe
WORK=${OSAM_IMAGE_WORK:-/var/tmp/osam-images}
SUITES=("$@")
[ "${#SUITES[@]}" -gt 0 ] || SUITES=(bookworm bullseye)

[ "$(id -u)" -eq 0 ] || die "root needed: rootful podman with privileged systemd containers"
# iptables: netavark (podman's network stack) sets up container networks with it.
for tool in podman runc debootstrap iptables; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh (Debian packages)"
done

# ---------------------------------------------------------------- 1. engine
# - runc: crun 1.8 (Debian 12) refuses hosts with a hybrid cgroup layout;
# - cgroupfs and the file events logger: there may be no systemd as PID 1 on the host;
# - explicit ulimits: rootful podman asks for nofile/nproc=1048576, which root here cannot
#   grant without CAP_SYS_RESOURCE; the host's hard limits are what a container can get.
configure_engine() {
    local nofile nproc hu conf=/etc/containers/containers.conf.d/50-osam.conf
    nofile=$(ulimit -Hn); nproc=$(cat /proc/sys/kernel/pid_max); hu=$(ulimit -Hu)
    [[ $nofile =~ ^[0-9]+$ ]] || nofile=1048576
    [[ $hu =~ ^[0-9]+$ ]] && (( hu < nproc )) && nproc=$hu
    mkdir -p "${conf%/*}"
    cat >"$conf.tmp" <<CONF
# Written by vmware.osam scripts/podman-host.sh: podman settings for molecule on this host.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    if cmp -s "$conf.tmp" "$conf"; then rm -f "$conf.tmp"; step "podman engine: $conf up to date"
    else mv "$conf.tmp" "$conf"; step "podman engine: wrote $conf"; fi
    local runtime
    runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null) \
        || die "podman info failed: $(podman info 2>&1 | tail -n 3)"
    [ "$runtime" = runc ] || die "podman uses $runtime, not runc: is $conf read? (podman $(podman --version))"
}

# ---------------------------------------------------------------- 2. images
# What goes into an image. Anything that changes the result belongs here or in
# build_rootfs, because both are hashed into the recipe label.
# - systemd as PID 1 with dbus: the roles install and start real units;
# - python3 only, no python3-venv: the roles make venvs without ensurepip, like on a
#   minimal guest, with the pip wheel they ship;
# - iproute2 (ip -j addr), util-linux (lsblk): the sentinel's inventory.
PACKAGES=systemd,systemd-sysv,dbus,python3,sudo,procps,iproute2,util-linux

build_rootfs() {   # build_rootfs SUITE DIR
    local suite=$1 dir=$2
    rm -rf "$dir"
    debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$dir" "$(debian_mirror)" \
        >"$WORK/debootstrap-$suite.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap-$suite.log" >&2; die "debootstrap $suite failed (log above)"; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    # systemd makes a fresh machine id on first boot: each container gets its own.
    : >"$dir/etc/machine-id"
    # Units that only make sense on real hardware or fail in a container.
    for unit in systemd-remount-fs.service getty@tty1.service serial-getty@.service \
                systemd-udevd.service systemd-udev-trigger.service; do
        ln -sf /dev/null "$dir/etc/systemd/system/$unit"
    done
    printf 'localhost\n' >"$dir/etc/hostname"
}

recipe_hash() {   # recipe_hash SUITE
    { printf 'suite=%s\npackages=%s\n' "$1" "$PACKAGES"; declare -f build_rootfs; } | sha256sum | cut -c1-16
}

image_recipe() {   # the recipe label of an existing image, empty when there is none
    podman image inspect --format "{{ index .Labels \"$RECIPE_LABEL\" }}" "$1" 2>/dev/null || true
}

build_image() {   # build_image SUITE
    local suite=$1 image="$IMAGE_REPO:$1" hash t0=$SECONDS
    hash=$(recipe_hash "$suite")
    if [ "${OSAM_REBUILD_IMAGES:-0}" != 1 ] && [ "$(image_recipe "$image")" = "$hash" ]; then
        step "image $image: up to date (recipe $hash)"
        return
    fi
    step "image $image: building (recipe $hash, debootstrap $suite from $(debian_mirror))"
    mkdir -p "$WORK"
    build_rootfs "$suite" "$WORK/rootfs-$suite"
    tar -C "$WORK/rootfs-$suite" -c . | podman import \
        --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
        --change "LABEL $RECIPE_LABEL=$hash" - "$image" >/dev/null 2>"$WORK/import-$suite.log" \
        || { cat "$WORK/import-$suite.log" >&2; die "podman import of $suite failed"; }
    rm -rf "$WORK/rootfs-$suite"
    step "image $image: built in $(( SECONDS - t0 ))s"
}

# ---------------------------------------------------------------- 3. smoke test
smoke() {   # smoke SUITE: systemd reaches running (or degraded) as PID 1
    local image="$IMAGE_REPO:$1" name="osam-smoke-$1-$$" state=""
    podman rm -f "$name" >/dev/null 2>&1 || true
    # Removed below; the trap covers an interrupted run.
    trap "podman rm -f '$name' >/dev/null 2>&1 || true" EXIT
    podman run -d --name "$name" --privileged --systemd=always "$image" /sbin/init >/dev/null
    for _ in $(seq 60); do
        state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        sleep 1
    done
    local py
    py=$(podman exec "$name" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    podman rm -f "$name" >/dev/null 2>&1 || true
    trap - EXIT
    [[ $state == running || $state == degraded ]] || die "$image: systemd did not come up (state '$state')"
    step "image $image: systemd $state, python $py"
}

configure_engine
for suite in "${SUITES[@]}"; do
    build_image "$suite"
    smoke "$suite"
done
