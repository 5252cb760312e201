"""Fix-up of a replica before its first boot on the destination's virtual hardware.

The replica's file systems are mounted on the receiver; the fix-up edits files below that
root and runs the replica's own tools (initramfs, bootloader, package manager) in a chroot.
Every change is reported and every edited file backed up first (see context.py).
"""
