#!/usr/bin/env bash
# Build the small Debian 12 *source* guest disk of the Linux boot proof: a KVM/virtio machine
# whose initramfs knows only virtio drivers, so it boots under qemu on virtio hardware and
# cannot find its root disk on vSphere's pvscsi until a migration's fix-up adds the drivers.
#   3 GiB sparse raw, dos label: p1 ext4 "rootfs" (2.5 GiB, bootable), p2 swap "swap";
#   GRUB for BIOS on the serial console (root=UUID=, net.ifnames=0, no timeout);
#   hostname src-guest, eth0 static 10.0.2.15/24 (qemu user networking), fstab by UUID;
#   root autologin on ttyS0 prints a BOOT-PROOF block (tests/e2e/qemu_boot.py parses it)
#   and powers the machine off.
# Usage: bash scripts/guest-image.sh build [OUT]   build into OUT (default: the cached path)
#        bash scripts/guest-image.sh path          print the cached path
# The cached image is $OSAM_CACHE/guest-images/debian12-<hash>.raw (OSAM_CACHE defaults to
# ~/.cache/vmware.osam), <hash> a hash of this script. build is a no-op while OUT exists,
# unless OSAM_REBUILD_IMAGES=1. OSAM_DEBIAN_MIRROR overrides the mirror (default: apt's).
# Needs root, loop devices, debootstrap, sfdisk, partx, e2fsprogs (scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SELF="$OSAM_ROOT/scripts/guest-image.sh"
# Absolute: debootstrap wants an absolute --cache-dir.
CACHE_DIR="$(realpath -m "${OSAM_CACHE:-$HOME/.cache/vmware.osam}")/guest-images"
SUITE=bookworm
PACKAGES=linux-image-amd64,grub-pc,systemd-sysv,udev,kmod,zstd,ifupdown,iproute2,ca-certificates
ROOT_PASSWORD=osam
GUEST_HOSTNAME=src-guest
# All the source initramfs may load (MODULES=list): virtio disks and NIC, ext4 and the
# checksum it asks for at mount. Never vmw_pvscsi/vmxnet3: the fix-up must add those.
INITRAMFS_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod virtio_net ext4 crc32c_generic)

# State the cleanup trap undoes: the image being built, its loop device, the mount point.
TMP_IMG="" LOOP="" MNT=""

recipe_hash() { sha256sum "$SELF" | cut -c1-16; }
cached_path() { printf '%s/debian12-%s.raw\n' "$CACHE_DIR" "$(recipe_hash)"; }

# timed NAME CMD...: run one build step and say how long it took.
timed() {
    local t0="$EPOCHREALTIME"
    "$@"
    step "step $1: $(elapsed "$t0")"
}

# Undo everything a build set up, innermost mount first; on failure also drop the partial image.
cleanup() {
    set +e
    if [ -n "$MNT" ]; then
        findmnt -rn -o TARGET | awk -v m="$MNT" '$0 == m || index($0, m "/") == 1' | sort -r |
            while read -r target; do umount "$target" 2>/dev/null || umount -l "$target"; done
        rmdir "$MNT" 2>/dev/null
    fi
    if [ -n "$LOOP" ]; then
        partx -d "$LOOP" 2>/dev/null
        losetup -d "$LOOP"
    fi
    [ -z "$TMP_IMG" ] || rm -f "$TMP_IMG"
    TMP_IMG="" LOOP="" MNT=""
}

# ---------------------------------------------------------------- build steps
partition() {
    truncate -s 3G "$TMP_IMG"
    printf 'label: dos\nstart=2048, size=2560MiB, type=83, bootable\ntype=82\n' | sfdisk -q "$TMP_IMG"
    LOOP=$(losetup -f -P --show "$TMP_IMG")
    # No udev here: the kernel does not always scan the table, so add the partitions ourselves.
    [ -b "${LOOP}p1" ] || partx -a "$LOOP"
    mkfs.ext4 -q -L rootfs "${LOOP}p1"
    mkswap -q -L swap "${LOOP}p2"
    MNT=$(mktemp -d "${TMPDIR:-/tmp}/osam-guest-image.XXXXXX")
    mount "${LOOP}p1" "$MNT"
}

bootstrap() {
    local log="${OUT%.raw}.debootstrap.log"   # beside the image: builds of other recipes may run too
    mkdir -p "$CACHE_DIR/debs"
    debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs" --include="$PACKAGES" \
        "$SUITE" "$MNT" "$(debian_mirror)" >"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; die "debootstrap $SUITE failed (log above, full: $log)"; }
}

configure_identity() {
    local root_uuid swap_uuid
    root_uuid=$(blkid -s UUID -o value "${LOOP}p1")
    swap_uuid=$(blkid -s UUID -o value "${LOOP}p2")
    printf '%s\n' "$GUEST_HOSTNAME" >"$MNT/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        "$GUEST_HOSTNAME" >"$MNT/etc/hosts"
    printf 'UUID=%s\t/\text4\terrors=remount-ro\t0 1\nUUID=%s\tnone\tswap\tsw\t0 0\n' \
        "$root_uuid" "$swap_uuid" >"$MNT/etc/fstab"
    printf 'root:%s\n' "$ROOT_PASSWORD" | chroot "$MNT" chpasswd
}

configure_network() {
    # The address qemu's user networking expects; eth0 because GRUB passes net.ifnames=0.
    cat >"$MNT/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 10.0.2.15/24
    gateway 10.0.2.2
EOF
    printf 'nameserver 10.0.2.3\n' >"$MNT/etc/resolv.conf"
}

configure_console() {
    local dropin="$MNT/etc/systemd/system/serial-getty@ttyS0.service.d"
    mkdir -p "$dropin"
    printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM\n' \
        >"$dropin/autologin.conf"
    # Runs in root's login shell on ttyS0 only: a console login elsewhere stays usable.
    cat >"$MNT/etc/profile.d/osam-boot-proof.sh" <<'EOF'
# vmware.osam boot proof: report what booted in key: value lines, then power off.
osam_driver() {  # the driver behind a sysfs device, skipping the generic SCSI disk driver
    p=$(readlink -f "$1")
    while [ -n "$p" ] && [ "$p" != / ]; do
        if [ -e "$p/driver" ]; then
            d=$(basename "$(readlink "$p/driver")")
            [ "$d" = sd ] || { echo "$d"; return; }
        fi
        p=${p%/*}
    done
    echo none
}
if [ "$(id -u)" = 0 ] && [ "$(tty)" = /dev/ttyS0 ]; then
    state=$(systemctl is-system-running --wait 2>/dev/null)
    echo "=== BOOT-PROOF BEGIN ==="
    echo "state: $state"
    echo "failed: $(systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{printf "%s ", $1}')"
    echo "hostname: $(hostname)"
    echo "root: $(findmnt -n -o SOURCE,FSTYPE /)"
    echo "cmdline: $(cat /proc/cmdline)"
    ip -br addr | sed 's/^/addr: /'
    for dev in /sys/class/net/eth* /sys/block/sd? /sys/block/vd?; do
        [ -e "$dev/device" ] && echo "driver: ${dev##*/} $(osam_driver "$dev/device")"
    done
    swapon --show=NAME,TYPE,SIZE --noheadings --raw | sed 's/^/swap: /'
    echo "=== BOOT-PROOF END ==="
    systemctl poweroff 2>/dev/null  # no D-Bus here: systemctl says so, then powers off directly
fi
EOF
}

configure_boot() {
    sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=0/' \
        -e 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=""/' \
        -e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 net.ifnames=0"/' \
        "$MNT/etc/default/grub"
    printf 'GRUB_TERMINAL="serial console"\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n' \
        >>"$MNT/etc/default/grub"
    sed -i 's/^MODULES=.*/MODULES=list/' "$MNT/etc/initramfs-tools/initramfs.conf"
    printf '%s\n' "${INITRAMFS_MODULES[@]}" >"$MNT/etc/initramfs-tools/modules"
    # Not a hibernating machine: no resume device to wait for before the root.
    printf 'RESUME=none\n' >"$MNT/etc/initramfs-tools/conf.d/resume"
}

configure() { configure_identity; configure_network; configure_console; configure_boot; }

# A private /dev for the chroot with the loop nodes, and the by-uuid link udev would have
# made: grub-mkconfig writes root=UUID= only when it finds one.
chroot_mounts() {
    local root_uuid
    root_uuid=$(blkid -s UUID -o value "${LOOP}p1")
    mount -t tmpfs -o mode=755 osam-dev "$MNT/dev"
    mount -t proc proc "$MNT/proc"
    mount -t sysfs sysfs "$MNT/sys"
    cp -a /dev/{null,zero,full,random,urandom,tty,console} "$LOOP" "${LOOP}p1" "${LOOP}p2" "$MNT/dev/"
    mkdir -p "$MNT/dev/pts" "$MNT/dev/shm" "$MNT/dev/disk/by-uuid"
    ln -s "../../${LOOP##*/}p1" "$MNT/dev/disk/by-uuid/$root_uuid"
}

initramfs() {
    run_quiet "update-initramfs" chroot "$MNT" update-initramfs -u -k all
    local files
    files=$(chroot "$MNT" sh -c 'lsinitramfs /boot/initrd.img-*')
    ! grep -qE '/(vmw_pvscsi|vmxnet3)\.ko' <<<"$files" \
        || die "the source initramfs carries vmw_pvscsi/vmxnet3: the boot proof would prove nothing"
    grep -qE '/virtio_blk\.ko' <<<"$files" || die "the source initramfs lacks virtio_blk"
    # The drivers the fix-up will need must exist as modules in the guest, not be built in.
    compgen -G "$MNT/lib/modules/*/kernel/drivers/scsi/vmw_pvscsi.ko*" >/dev/null \
        || die "the guest kernel has no vmw_pvscsi module"
}

bootloader() {
    run_quiet "grub-install" chroot "$MNT" grub-install --target=i386-pc --modules="part_msdos ext2" "$LOOP"
    run_quiet "update-grub" chroot "$MNT" update-grub
    local root_uuid
    root_uuid=$(blkid -s UUID -o value "${LOOP}p1")
    grep -q "root=UUID=$root_uuid" "$MNT/boot/grub/grub.cfg" \
        || die "grub.cfg does not boot root=UUID=$root_uuid"
}

tidy() {
    rm -rf "$MNT"/var/cache/apt/archives/*.deb "$MNT"/var/cache/apt/*.bin "$MNT"/var/lib/apt/lists/*
    # Punch the freed blocks out of the image so it stays sparse.
    fstrim "$MNT" >/dev/null 2>&1 || warn "fstrim failed: the image is less sparse than it could be"
}

finish() {
    local built=$TMP_IMG
    TMP_IMG=""   # keep it: cleanup only unmounts and detaches now
    cleanup
    mv "$built" "$OUT"
}

up_to_date() {
    if [ -s "$OUT" ] && [ "${OSAM_REBUILD_IMAGES:-0}" != 1 ]; then
        step "guest image $OUT: up to date"
        return 0
    fi
    return 1
}

build() {
    OUT=$(realpath -m "${1:-$(cached_path)}")
    up_to_date && return
    [ "$(id -u)" -eq 0 ] || die "root needed: loop devices, mounts, chroot"
    for tool in debootstrap sfdisk partx losetup mkfs.ext4 mkswap blkid fstrim; do
        command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh (Debian packages)"
    done
    mkdir -p "$CACHE_DIR" "$(dirname "$OUT")"
    # One build per output at a time; a second caller waits, then finds it built.
    exec 9>"$OUT.lock"
    flock 9
    up_to_date && return
    local t0="$EPOCHREALTIME"
    step "guest image $OUT: building (debootstrap $SUITE from $(debian_mirror))"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    TMP_IMG="$OUT.building.$$"
    timed partition
    timed bootstrap
    timed configure
    chroot_mounts
    timed initramfs
    timed bootloader
    timed tidy
    timed finish
    trap - EXIT INT TERM
    step "guest image $OUT: built in $(elapsed "$t0"), $(du -h "$OUT" | cut -f1) used of $(du -h --apparent-size "$OUT" | cut -f1)"
}

case "${1:-}" in
    build) build "${2:-}" ;;
    path) cached_path ;;
    *) die "usage: $0 build [OUT] | path" ;;
esac
