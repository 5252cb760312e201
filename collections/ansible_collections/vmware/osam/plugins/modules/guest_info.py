#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: guest_info
short_description: List the guests registered with the receiver and the facts their sentinels reported
description:
  - Reads the guests the receiver knows through its REST API, with the inventory each guest's
    sentinel sent when it registered (OS, kernel, CPUs, memory, disks, file systems, NICs, boot mode),
    among it the disk layout the replica's disks are rebuilt from (partition tables, file systems
    with their UUIDs, labels and mkfs options, LVM, mounts, boot loader).
version_added: 0.1.0
author:
  - vmware.osam contributors (@vmware-osam)
options:
  name:
    description:
      - Only this guest (its sentinel name, usually the source hostname).
      - When the guest is not registered, RV(guests) is empty; the task does not fail.
    type: str
extends_documentation_fragment:
  - vmware.osam.connection
  - vmware.osam.attributes
  - vmware.osam.attributes.INFO_MODULE
  - vmware.osam.attributes.ACTION_GROUP
seealso:
  - module: vmware.osam.migration_info
'''

EXAMPLES = r'''
- name: Every registered guest
  vmware.osam.guest_info:
    api_url: https://receiver.example.com:8444
    api_token: "{{ lookup('ansible.builtin.file', osam_pki_dir + '/api-token-ro') }}"
    ca_cert: "{{ osam_pki_dir }}/ca.crt"
    client_cert: "{{ osam_pki_dir }}/admin.crt"
    client_key: "{{ osam_pki_dir }}/admin.key"
  register: osam_guests

- name: Guests whose sentinel is connected now
  ansible.builtin.debug:
    msg: "{{ osam_guests.guests | selectattr('connected') | map(attribute='name') }}"

- name: One guest, connection options from module_defaults
  vmware.osam.guest_info:
    name: web01
  register: web01

- name: Its disks, partition table types and boot mode
  ansible.builtin.debug:
    msg:
      - "{{ web01.guests[0].inventory.layout.disks | map(attribute='name') }}"
      - "{{ web01.guests[0].inventory.layout.disks | map(attribute='partition_table.label', default='none') }}"
      - "{{ web01.guests[0].inventory.layout.boot.mode }}"
'''

RETURN = r'''
guests:
  description: The registered guests (only O(name) when given), in the receiver's order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The guest's name, from its sentinel certificate.
      type: str
      sample: web01
    inventory:
      description:
        - The facts the sentinel reported when it registered, among them hostname, os,
          kernel, cpus, memory (bytes), disks, mounts, nics, boot (bios or uefi) and layout.
      type: dict
      sample: {hostname: web01, os: {id: debian, version_id: "12"}, memory: 4294967296, boot: uefi}
      contains:
        layout:
          description:
            - The disk layout the receiver rebuilds the replica's disks from, one raw image per
              source disk. Sizes are in bytes, mount points in the guest's terms.
            - Empty when the sentinel could not read the block devices; parts it could not read
              are empty and listed in C(errors).
          returned: when the guest's sentinel reports it (version 0.1.0 and later)
          type: dict
          contains:
            root:
              description: The directory the sentinel replicates (its C(--root)), usually C(/).
              returned: always
              type: str
              sample: /
            boot:
              description: How the guest boots.
              returned: always
              type: dict
              contains:
                mode:
                  description: Firmware mode.
                  type: str
                  choices: [bios, uefi]
                bootloader:
                  description: The boot loader recognised by its files.
                  type: str
                  choices: [grub2, systemd-boot, syslinux, unknown]
                boot_disk:
                  description: The disk that holds C(/boot), or C(/) without one; empty when unknown.
                  type: str
                  sample: sda
                esp:
                  description: Mount point of the EFI system partition, empty when none is mounted.
                  type: str
                  sample: /boot/efi
                efi_files:
                  description: The C(.efi) binaries on the EFI system partition.
                  type: list
                  elements: str
                  sample: [/boot/efi/EFI/debian/grubx64.efi, /boot/efi/EFI/debian/shimx64.efi]
            disks:
              description:
                - The disks to rebuild. With root C(/) every disk of the guest, otherwise the disks
                  behind the file systems mounted below root.
              returned: always
              type: list
              elements: dict
              contains:
                name:
                  description: Kernel name.
                  type: str
                  sample: sda
                path:
                  description: Device path.
                  type: str
                  sample: /dev/sda
                type:
                  description: C(disk), or C(loop) for a disk image mounted on a helper.
                  type: str
                size:
                  description: Size in bytes.
                  type: int
                logical_sector_size:
                  description: Logical sector size in bytes.
                  type: int
                physical_sector_size:
                  description: Physical sector size in bytes.
                  type: int
                model:
                  description: Model, if the disk reports one.
                  type: str
                serial:
                  description: Serial number, if the disk reports one.
                  type: str
                partition_table:
                  description:
                    - The partition table as C(sfdisk --json) reports it (label, id, unit,
                      firstlba, lastlba, sectorsize and the partitions with start, size, type,
                      uuid, name, attrs, bootable); null when the disk has none.
                  type: dict
                partitions:
                  description: The partitions, with start and size in sectors of the table.
                  type: list
                  elements: dict
            filesystems:
              description: File systems and swap on those disks, mounted or not.
              returned: always
              type: list
              elements: dict
              contains:
                device:
                  description: The partition, logical volume or disk it is on.
                  type: str
                  sample: /dev/sda1
                fstype:
                  description: Type as blkid reports it.
                  type: str
                  sample: ext4
                uuid:
                  description: File system UUID.
                  type: str
                label:
                  description: File system label.
                  type: str
                size:
                  description: Size of the device it is on, in bytes.
                  type: int
                mountpoint:
                  description: Where the guest mounts it, null when it is not mounted.
                  type: str
                parent:
                  description:
                    - Where it lies, by C(kind) - C(partition) (C(disk), C(number)), C(lv)
                      (C(vg), C(lv)), C(disk) (C(disk)), or another device-mapper or RAID
                      kind (C(name), C(on)).
                  type: dict
                  sample: {kind: partition, disk: sda, number: 1}
                options:
                  description:
                    - What mkfs needs to make the same kind of file system, per type - ext2/3/4
                      C(features), C(block_size), C(inode_size); xfs C(crc), C(finobt),
                      C(reflink), C(bigtime) and the like; vfat C(fat_size), C(volume_id);
                      swap C(version).
                  type: dict
            lvm:
              description: LVM physical volumes, volume groups and logical volumes on those disks.
              returned: always
              type: dict
              contains:
                pvs:
                  description: Physical volumes with their UUID, VG, size, pe_start and parent.
                  type: list
                  elements: dict
                vgs:
                  description: Volume groups with their UUID, extent size and size.
                  type: list
                  elements: dict
                lvs:
                  description:
                    - Logical volumes with their UUID, size, segment type, device-mapper name and
                      segments (which extents of which physical volume).
                  type: list
                  elements: dict
            mounts:
              description:
                - The local disk file systems mounted at or below root (target, source, device,
                  fstype, options, uuid), sorted by target.
              returned: always
              type: list
              elements: dict
            errors:
              description: The parts of the layout that could not be read (probe, error).
              returned: always
              type: list
              elements: dict
        replication:
          description:
            - How the guest replicates. C(mode) is C(file) (the files under its root) or C(block)
              (whole disks, as Windows guests do); in block mode C(block_size) and C(disks), each with
              C(name) (the replica image's), C(path) on the guest and C(size) in bytes.
          returned: when the guest's sentinel reports it
          type: dict
          sample: {mode: block, block_size: 1048576, disks: [{name: PhysicalDrive0, path: '\\.\PhysicalDrive0', size: 85899345920}]}
    agent_version:
      description: Version of the sentinel.
      type: str
      sample: 0.1.0
    connected:
      description: Whether the sentinel is connected through a gateway now.
      type: bool
      sample: true
    first_seen:
      description: When the guest first registered (ISO 8601, UTC).
      type: str
      sample: "2026-11-20T08:00:00.000Z"
    last_seen:
      description: When the guest last registered or reported (ISO 8601, UTC).
      type: str
      sample: "2026-11-26T08:00:00.000Z"
    migration_phase:
      description: Phase of the guest's active or latest migration, null when it never had one.
      type: str
      sample: continuous_sync
'''

from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError, guest_path
from ansible_collections.vmware.osam.plugins.module_utils.base import OsamApiModule


def main():
    module = OsamApiModule(
        argument_spec=dict(name=dict(type='str')),
        supports_check_mode=True,
    )
    name = module.params['name']
    try:
        if name:
            guest = module.client.get(guest_path('/v1/guests', name), missing_ok=True)
            guests = [guest] if guest is not None else []
        else:
            guests = module.client.get('/v1/guests').get('guests', [])
    except ApiError as error:
        module.fail_api(error)
    module.exit_json(changed=False, guests=guests)


if __name__ == '__main__':
    main()
