"""The offline fix-up of a block-replicated Windows replica (see offline.py).

  offline           entry point: fixup_windows(images, inventory, target, work_dir)
  ntfs              partitions, loop devices, ntfs-3g mounts, case-insensitive paths
  hivex_loader      the hivex binding, also from Debian's python3-hivex in a venv
  hive              a hive's keys and values, changes compared, reported and remembered
  system_hive       the SYSTEM hive edits, in the current control set
  storage           the boot disk controller's driver (pvscsi, else inbox LSI SAS)
  old_hypervisors   Hyper-V, KVM, Xen and VirtualBox services and class filters off
  network           static IPv4 settings read, carried to the first boot, old ones released
  firstboot_files   firstboot.json, driver packages and VMware Tools for the first boot
  volume_files      durable, backed-up, reported writes into the system volume
"""
from .errors import WindowsFixupError
from .offline import WindowsTarget, fixup_windows

__all__ = ["WindowsFixupError", "WindowsTarget", "fixup_windows"]
