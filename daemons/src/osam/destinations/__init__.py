"""Destinations: where a replica becomes a VM. `local` (a directory of images and a VM
definition, booted with qemu when asked) and `vsphere` (a VM made with pyvmomi). The
controller drives them; they never call it."""
