#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: switchover
short_description: Start, schedule or cancel the switchover of a guest's migration
description:
  - The switchover ends a migration - the guest is quiesced, a final sync carries the last
    changes and the replica takes over. It begins from C(continuous_sync).
  - V(started) asks for the switchover as soon as continuous sync allows. Nothing changes if it
    was already asked for, or has begun (C(quiesce) and later) or is done (C(completed)).
  - V(scheduled) (re)schedules it at O(switchover_at), with the window end O(switchover_window_end)
    or none; nothing changes if it is scheduled then already, with the same window end.
  - A scheduled switchover whose window closed before it began does not begin - the migration keeps
    syncing and waits for a new time (RV(migration.switchover_note) says so). V(scheduled) with a new
    time, V(started) and V(cancelled) each end that wait; V(scheduled) with the missed window again
    changes nothing and warns.
  - V(cancelled) takes back a request or a schedule, so the migration waits for an operator
    again; nothing changes if it already does.
  - A guest without a migration, a C(failed) or C(needs_operator) migration, and a change that comes too late (once
    the switchover has begun) fail the task with the receiver's reason.
version_added: 0.1.0
author:
  - vmware.osam contributors (@vmware-osam)
options:
  guest:
    description:
      - The guest's name as its sentinel registered it.
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(started), V(scheduled) or V(cancelled), see above.
    type: str
    choices: [started, scheduled, cancelled]
    default: started
  switchover_at:
    description:
      - The time of a V(scheduled) switchover, ISO 8601 with a zone, for example
        C(2026-12-01T02:00:00Z). Required with O(state=scheduled), refused otherwise.
    type: str
  switchover_window_end:
    description:
      - The end of the window a V(scheduled) switchover may begin in, ISO 8601 with a zone, after
        O(switchover_at). The switchover begins when O(switchover_at) <= now < O(switchover_window_end);
        once the window has closed it does not begin and waits for a new time.
      - Only with O(state=scheduled). Without it the schedule has no end (a window end set before is dropped).
    type: str
  wait:
    description:
      - Wait until the migration has C(completed), polling every O(poll_interval) seconds.
        The task fails when the migration fails (with its reason) or after O(wait_timeout)
        seconds (with the last phase seen).
      - Only with O(state=started) or O(state=scheduled). Not done in check mode.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for completion.
    type: int
    default: 3600
  poll_interval:
    description:
      - Seconds between two looks at the migration while waiting.
    type: float
    default: 5
extends_documentation_fragment:
  - vmware.osam.connection
  - vmware.osam.attributes
  - vmware.osam.attributes.ACTION_GROUP
attributes:
  check_mode:
    support: full
    details:
      - Reads the migration and reports what would change; sends no change and does not wait.
  diff_mode:
    support: full
    details:
      - Shows the switchover settings before and after.
seealso:
  - module: vmware.osam.migration
'''

EXAMPLES = r'''
- name: Switch web01 over now and wait until the replica has taken over
  vmware.osam.switchover:
    guest: web01
    wait: true
    wait_timeout: 1800

- name: Switch db01 over at 02:00 UTC
  vmware.osam.switchover:
    guest: db01
    state: scheduled
    switchover_at: "2026-12-06T02:00:00Z"

- name: Switch db01 over between 02:00 and 04:00 UTC, or wait for a new time
  vmware.osam.switchover:
    guest: db01
    state: scheduled
    switchover_at: "2026-12-06T02:00:00Z"
    switchover_window_end: "2026-12-06T04:00:00Z"

- name: Not tonight after all
  vmware.osam.switchover:
    guest: db01
    state: cancelled
'''

RETURN = r'''
operation:
  description: What the task did (or would do in check mode) - V(none), V(requested), V(scheduled) or V(cancelled).
  returned: always
  type: str
  sample: requested
migration:
  description:
    - The guest's migration as the receiver reports it after the task (in check mode, before it).
    - The fields are those of RV(vmware.osam.migration#module:migration).
  returned: always
  type: dict
  contains:
    phase:
      description:
        - registered, full_sync, continuous_sync, quiesce, final_sync, fixup, replica_vm, tools,
          replica_on, source_off, network, completed, needs_operator or failed.
      type: str
      sample: completed
    switchover:
      description: The API's switchover mode, manual, immediate or at (scheduled).
      type: str
      sample: manual
    switchover_at:
      description: The scheduled switchover time, null unless scheduled.
      type: str
      sample: null
    switchover_window_end:
      description: The end of the window the scheduled switchover may begin in, null without one.
      type: str
      sample: null
    switchover_window_missed_at:
      description: When the window closed before the switchover began (the window's end); null otherwise.
      type: str
      sample: null
    switchover_note:
      description: What a missed window means, in words; null otherwise.
      type: str
      sample: null
    switchover_requested:
      description: Whether an operator has asked for the switchover.
      type: bool
      sample: true
    lag_at_switchover:
      description: Seconds the replica was behind the guest when the switchover began.
      type: float
      sample: 0.4
    progress_percent:
      description: bytes_done of bytes_total in percent, null while the total is unknown.
      type: float
      sample: 100.0
    history:
      description: The phase transitions, oldest first, each with from, to, at and reason.
      type: list
      elements: dict
      sample: [{from: final_sync, to: completed, at: "2026-11-26T09:00:00.000Z", reason: null}]
'''

from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError
from ansible_collections.vmware.osam.plugins.module_utils.base import OsamApiModule
from ansible_collections.vmware.osam.plugins.module_utils.lifecycle import (
    BEFORE_SWITCHOVER, COMPLETED, FAILED, NEEDS_OPERATOR, WaitFailed, api_time, migration_path, missed_window, parse_time,
    same_time, schedule_warnings, switchover_settings, wait_for_phase, window_end_time, with_percent)


def wanted_time(module):
    """(epoch, window end epoch or None) of a schedule, (None, None) for the other states."""
    at, window_end = module.params['switchover_at'], module.params['switchover_window_end']
    if module.params['state'] != 'scheduled':
        if at is not None:
            module.fail_json(msg='switchover_at goes only with state=scheduled')
        if window_end is not None:
            module.fail_json(msg='switchover_window_end goes only with state=scheduled')
        return None, None
    try:
        when = parse_time(at)
    except ValueError as error:
        module.fail_json(msg='switchover_at: %s' % error)
    try:
        end = window_end_time(window_end, when)
    except ValueError as error:
        module.fail_json(msg='switchover_window_end: %s' % error)
    for warning in schedule_warnings(at, when, window_end, end):
        module.warn(warning)
    return when, end


def plan(migration, state, when, end=None):
    """The operation for the wanted state, or ValueError saying why it cannot be had."""
    guest, phase = migration['guest'], migration['phase']
    if phase in (FAILED, NEEDS_OPERATOR):
        what = 'failed' if phase == FAILED else 'needs the operator'
        raise ValueError('the migration of %s %s: %s' % (guest, what, migration.get('reason') or 'no reason given'))
    begun = phase not in BEFORE_SWITCHOVER
    if state == 'started':
        return 'none' if begun or migration.get('switchover_requested') else 'requested'
    if begun:
        # The receiver's own words for this (409), so check mode says the same.
        raise ValueError('the migration of %s is in %s: the switchover can no longer be changed' % (guest, phase))
    requested = migration.get('switchover_requested')
    if state == 'scheduled':
        same = (migration['switchover'] == 'at' and not requested and same_time(migration.get('switchover_at'), when)
                and same_time(migration.get('switchover_window_end'), end))
        return 'none' if same else 'scheduled'
    return 'none' if migration['switchover'] == 'manual' and not requested else 'cancelled'


def predicted(migration, operation, when, end=None):
    after = switchover_settings(migration)
    if operation == 'requested':
        after.update(switchover_requested=True, switchover_at=None, switchover_window_end=None)
    elif operation == 'scheduled':
        after.update(switchover='at', switchover_at=api_time(when), switchover_window_end=api_time(end),
                     switchover_requested=False)
    elif operation == 'cancelled':
        after.update(switchover='manual', switchover_at=None, switchover_window_end=None, switchover_requested=False)
    return after


def main():
    module = OsamApiModule(
        argument_spec=dict(
            guest=dict(type='str', required=True, aliases=['name']),
            state=dict(type='str', choices=['started', 'scheduled', 'cancelled'], default='started'),
            switchover_at=dict(type='str'),
            switchover_window_end=dict(type='str'),
            wait=dict(type='bool', default=False),
            wait_timeout=dict(type='int', default=3600),
            poll_interval=dict(type='float', default=5),
        ),
        required_if=[('state', 'scheduled', ['switchover_at'])],
        supports_check_mode=True,
    )
    guest, state, wait = module.params['guest'], module.params['state'], module.params['wait']
    if wait and state == 'cancelled':
        module.fail_json(msg='wait goes only with state=started or state=scheduled')
    when, end = wanted_time(module)
    client = module.client
    operation, done = 'none', False
    try:
        current = client.get(migration_path(guest))
        try:
            operation = plan(current, state, when, end)
        except ValueError as error:
            module.fail_json(msg=str(error), migration=with_percent(current))
        if operation == 'none' and state == 'scheduled' and missed_window(current):
            module.warn(missed_window(current))  # the same window again does not reopen it
        migration = current
        if operation != 'none' and not module.check_mode:
            if operation == 'cancelled':
                migration = client.delete(migration_path(guest, '/switchover'))
            else:
                body = None
                if operation == 'scheduled':
                    body = dict(at=module.params['switchover_at'].strip())
                    if module.params['switchover_window_end'] is not None:
                        body['window_end'] = module.params['switchover_window_end'].strip()
                migration = client.post(migration_path(guest, '/switchover'), body)
            done = True
        if wait and not module.check_mode and migration['phase'] != COMPLETED:
            migration = wait_for_phase(client, guest, COMPLETED, module.params['wait_timeout'],
                                       module.params['poll_interval'])
    except ApiError as error:
        module.fail_api(error, changed=done, operation=operation)
    except WaitFailed as failure:
        module.fail_json(msg=failure.message, changed=done, operation=operation,
                         migration=with_percent(failure.migration))

    result = dict(changed=operation != 'none', operation=operation, migration=with_percent(migration))
    if module._diff:
        result['diff'] = dict(before=switchover_settings(current), after=predicted(current, operation, when, end))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
