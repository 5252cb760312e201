#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: migration_info
short_description: Report the migrations of guests - phase, progress, rate, ETA, lag and history
description:
  - Reads, through the receiver's REST API, the active migration of each guest (or its latest
    one when none is active) with its progress and the history of its phase transitions.
version_added: 0.1.0
author:
  - vmware.osam contributors (@vmware-osam)
options:
  guest:
    description:
      - Only these guests, one name or a list. All guests that ever had a migration when not given.
      - A guest without a migration is simply missing from RV(migrations).
    type: list
    elements: str
    aliases: [name, guests]
extends_documentation_fragment:
  - vmware.osam.connection
  - vmware.osam.attributes
  - vmware.osam.attributes.INFO_MODULE
  - vmware.osam.attributes.ACTION_GROUP
seealso:
  - module: vmware.osam.migration
  - module: vmware.osam.guest_info
'''

EXAMPLES = r'''
- name: Where every migration stands
  vmware.osam.migration_info:
  register: osam_status

- name: Show phase, progress and lag of each guest
  ansible.builtin.debug:
    msg: >-
      {{ item.guest }}: {{ item.phase }} {{ item.progress_percent | default('?', true) }}%
      ETA {{ item.eta | default('-', true) }}s lag {{ item.lag | default('-', true) }}s
  loop: "{{ osam_status.migrations }}"
  loop_control:
    label: "{{ item.guest }}"

- name: Guests whose switchover window was missed and that wait for a new time
  ansible.builtin.debug:
    msg: "{{ osam_status.migrations | selectattr('switchover_window_missed_at') | map(attribute='guest') | list }}"

- name: The history of web01's migration
  vmware.osam.migration_info:
    guest: web01
  register: web01
'''

RETURN = r'''
migrations:
  description:
    - One migration per guest, the active one or else the latest, in the receiver's order.
    - The fields are those of RV(vmware.osam.migration#module:migration).
  returned: always
  type: list
  elements: dict
  contains:
    guest:
      description: The guest's name.
      type: str
      sample: web01
    phase:
      description:
        - registered, full_sync, continuous_sync, quiesce, final_sync, fixup, replica_vm, tools,
          replica_on, source_off, network, completed, needs_operator or failed.
      type: str
      sample: continuous_sync
    active:
      description: Whether the migration has neither completed nor failed.
      type: bool
      sample: true
    bytes_done:
      description: Bytes replicated so far.
      type: int
      sample: 1073741824
    bytes_total:
      description: Bytes to replicate, as far as known.
      type: int
      sample: 4294967296
    progress_percent:
      description: bytes_done of bytes_total in percent, null while the total is unknown.
      type: float
      sample: 25.0
    rate:
      description: Bytes per second, recent average.
      type: float
      sample: 104857600.0
    eta:
      description: Seconds until the current sync is done at the current rate.
      type: float
      sample: 30.5
    lag:
      description: Seconds the replica is behind the guest in continuous sync.
      type: float
      sample: 0.8
    switchover:
      description: The API's switchover mode, manual, immediate or at (scheduled).
      type: str
      sample: at
    switchover_at:
      description: The scheduled switchover time, null unless scheduled.
      type: str
      sample: "2026-12-06T01:00:00.000Z"
    switchover_window_end:
      description: The end of the window the scheduled switchover may begin in, null without one.
      type: str
      sample: "2026-12-06T03:00:00.000Z"
    switchover_window_missed_at:
      description:
        - When the window closed before the switchover began (the window's end); null otherwise.
        - The migration keeps syncing and waits for a new time, a cancel or a request to switch over now.
      type: str
      sample: "2026-12-06T03:00:00.000Z"
    switchover_note:
      description: What a missed window means, in words; null otherwise.
      type: str
      sample: "switchover window 2026-12-06T01:00:00.000Z to 2026-12-06T03:00:00.000Z missed: waiting for a new time"
    lag_at_switchover:
      description: Seconds the replica was behind the guest when the switchover began, null before.
      type: float
      sample: null
    reason:
      description: Why the migration failed, null otherwise.
      type: str
      sample: null
    history:
      description: The phase transitions, oldest first, each with from, to, at and reason.
      type: list
      elements: dict
      sample:
        - {from: null, to: registered, at: "2026-11-26T08:00:00.000Z", reason: null}
        - {from: registered, to: full_sync, at: "2026-11-26T08:00:01.000Z", reason: null}
'''

from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError
from ansible_collections.vmware.osam.plugins.module_utils.base import OsamApiModule
from ansible_collections.vmware.osam.plugins.module_utils.lifecycle import migration_path, with_percent


def main():
    module = OsamApiModule(
        argument_spec=dict(guest=dict(type='list', elements='str', aliases=['name', 'guests'])),
        supports_check_mode=True,
    )
    names = module.params['guest']
    client = module.client
    try:
        if names is None:
            migrations = client.get('/v1/migrations').get('migrations', [])
        else:
            found = (client.get(migration_path(name), missing_ok=True) for name in names)
            migrations = [migration for migration in found if migration is not None]
    except ApiError as error:
        module.fail_api(error)
    module.exit_json(changed=False, migrations=[with_percent(m) for m in migrations])


if __name__ == '__main__':
    main()
