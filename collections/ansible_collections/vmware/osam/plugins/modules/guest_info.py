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
    sentinel sent when it registered (OS, kernel, CPUs, memory, disks, file systems, NICs, boot mode).
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
          kernel, cpus, memory (bytes), disks, mounts, nics and boot (bios or uefi).
      type: dict
      sample: {hostname: web01, os: {id: debian, version_id: "12"}, memory: 4294967296, boot: uefi}
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
