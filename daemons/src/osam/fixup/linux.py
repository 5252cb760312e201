"""The Linux fix-up: the steps that make a replica boot on VMware's virtual hardware, in
the order they depend on each other.

  distro       what the replica runs (facts every later step reads)
  fstab        device names → UUID=, network mounts optional
  hostname     the source's host name, resolvable in /etc/hosts
  network      the NICs' configuration for the destination (osam.fixup.network, when present)
  guest_tools  old hypervisor agents removed or masked, open-vm-tools installed or deferred
  initramfs    pvscsi/vmxnet3 & co in every kernel's initramfs
  bootloader   GRUB configuration, BIOS boot code or the UEFI fallback path
  selinux      relabel on the first boot (last: every file written before it needs a label)

Each step is idempotent: a second run on the same replica changes nothing.

Command line, for operators and tests (prints the report as JSON):
  python -m osam.fixup.linux --root DIR --inventory FILE.json [--package-cache DIR]
      [--nic-mac MAC ...] [--firmware bios|uefi] [--boot-disk DEV] [--uuid-device UUID=DEV ...]
      [--dry-run]
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import bootloader, distro, fstab, guest_tools, hostname, initramfs, selinux
from .context import FixupContext, FixupError, Nic, Runner, Target

NETWORK_MODULE = "osam.fixup.network"


def steps() -> List[Tuple[str, Callable[[FixupContext], None]]]:
    return [
        ("distro", distro.apply),
        ("fstab", fstab.apply),
        ("hostname", hostname.apply),
        ("network", network),
        ("guest_tools", guest_tools.apply),
        ("initramfs", initramfs.apply),
        ("bootloader", bootloader.apply),
        ("selinux", selinux.apply),
    ]


def network(ctx: FixupContext) -> None:
    """The network step lives in its own module (osam.fixup.network), which a build may not
    have yet: then the source's network configuration is left as it is, with a warning."""
    if importlib.util.find_spec(NETWORK_MODULE) is None:
        ctx.warn("network", f"{NETWORK_MODULE} is not available: the network configuration is "
                            f"left as the source had it")
        return
    importlib.import_module(NETWORK_MODULE).apply(ctx)


def fixup_linux(root: str, inventory: Dict[str, Any], target: Target, runner: Runner,
                devices: Optional[Dict[str, Any]] = None, *, dry_run: bool = False) -> Dict[str, Any]:
    """Fix the replica mounted at `root` up; returns the report (also saved in the replica,
    except in a dry run). A failing step raises FixupError naming it; the report of what was
    done until then is saved first."""
    ctx = make_context(root, inventory, target, runner, dry_run)
    ctx.facts["devices"] = dict(devices or {})
    for name, apply in steps():
        try:
            apply(ctx)
        except Exception as exc:
            ctx.facts["failed"] = {"step": name, "error": str(exc)}
            ctx.save_report()
            raise FixupError(f"fix-up step {name} failed: {exc}") from exc
    return ctx.save_report()


def make_context(root: str, inventory: Dict[str, Any], target: Target, runner: Runner,
                 dry_run: bool) -> FixupContext:
    if dry_run:
        from .dryrun import DryRunContext
        return DryRunContext(root, inventory, target, runner)
    return FixupContext(root, inventory, target, runner)


# -- command line ----------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m osam.fixup.linux",
                                description="Fix a mounted Linux replica up for VMware virtual hardware.")
    p.add_argument("--root", required=True, help="the replica's root directory (its file systems mounted)")
    p.add_argument("--inventory", required=True, help="the source's inventory (JSON)")
    p.add_argument("--package-cache", help="directory of open-vm-tools packages for the replica")
    p.add_argument("--nic-mac", action="append", default=[], metavar="MAC",
                   help="MAC of the destination VM's NICs (vmxnet3), in the source's NIC order")
    p.add_argument("--firmware", choices=("bios", "uefi"),
                   help="the destination VM's firmware (default: the source's boot mode)")
    p.add_argument("--boot-disk", help="receiver device of the replica's boot disk (BIOS boot code)")
    p.add_argument("--uuid-device", action="append", default=[], metavar="UUID=DEV",
                   help="receiver device holding the file system UUID (for grub inside the chroot)")
    p.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .chroot import ChrootRunner

    args = parse_args(argv)
    with open(args.inventory) as f:
        inventory = json.load(f)
    firmware = args.firmware or ((inventory.get("layout") or {}).get("boot") or {}).get("mode") or "bios"
    target = Target(nics=[Nic(mac.lower()) for mac in args.nic_mac], firmware=firmware,
                    package_cache=args.package_cache)
    devices: Dict[str, Any] = {"boot_disk": args.boot_disk or "", "by_uuid": {}}
    for pair in args.uuid_device:
        uuid, sep, device = pair.partition("=")
        if not sep:
            print(f"--uuid-device {pair!r}: expected UUID=DEVICE", file=sys.stderr)
            return 2
        devices["by_uuid"][uuid] = device
    try:
        report = fixup_linux(args.root, inventory, target, ChrootRunner(args.root, devices), devices,
                             dry_run=args.dry_run)
    except FixupError as exc:
        print(f"fix-up failed: {exc}", file=sys.stderr)
        return 1
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
