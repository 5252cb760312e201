#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: migration
short_description: Start, adjust or abort the migration of a guest
description:
  - Makes sure a registered guest is being migrated (O(state=present)) or is not
    (O(state=absent)), through the receiver's REST API.
  - A migration runs C(registered), C(full_sync), C(continuous_sync), then at the switchover
    C(quiesce), C(final_sync), C(fixup), then the cutover C(replica_vm), C(tools), C(replica_on),
    C(source_off), C(network) and C(completed); any phase may end in C(failed) with a reason, and a
    cutover that stops half-way ends in C(needs_operator) with what the operator must do.
  - With O(state=present), when the guest has no migration yet, or its latest one C(failed)
    (aborted, or failed for a reason since dealt with), a new migration starts.
  - With O(state=present), an active migration with the same switchover is left as it is (for
    V(scheduled), the same O(switchover_at) and O(switchover_window_end), each the same instant
    in whatever zone it is written).
  - With O(state=present), an active migration with another switchover that has not begun yet
    is changed in place - O(switchover=manual) cancels a schedule or immediate mode,
    O(switchover=scheduled) schedules or reschedules, O(switchover=immediate) requests the
    switchover now. The migration and its replica carry on.
  - With O(state=present), a migration whose switchover has begun (C(quiesce) and later)
    is left as it is, with a warning if its switchover differs; it can no longer be changed.
  - With O(state=present), a C(completed) migration counts as present, so running the same
    play again never migrates a guest twice. O(restart_completed=true) starts a new one.
  - With O(state=present), a migration in C(needs_operator) is left as it is, with a warning
    that carries the operator's instructions (the replica may be running beside the source).
  - With O(state=absent), an active migration is aborted (it ends C(failed) with the reason
    C(aborted by operator)); otherwise nothing changes.
version_added: 0.1.0
author:
  - vmware.osam contributors (@vmware-osam)
options:
  guest:
    description:
      - The guest's name as its sentinel registered it (usually the source hostname).
      - The guest must be registered (see M(vmware.osam.guest_info)) to start a migration.
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(present) makes sure the guest is being migrated (or has been, see O(restart_completed)).
      - V(absent) aborts its active migration.
    type: str
    choices: [present, absent]
    default: present
  switchover:
    description:
      - When the switchover (quiesce, final sync, cut-over) happens.
      - V(manual) waits for an operator (M(vmware.osam.switchover) with O(vmware.osam.switchover#module:state=started)).
        A switchover an operator has already requested is not withdrawn by V(manual); use
        M(vmware.osam.switchover) with O(vmware.osam.switchover#module:state=cancelled) for that.
      - V(immediate) switches over as soon as the first continuous sync pass is done. On a
        migration that is already running in another mode it requests the switchover now.
      - V(scheduled) switches over at O(switchover_at), and only before O(switchover_window_end)
        when it is given.
    type: str
    choices: [manual, immediate, scheduled]
    default: manual
  switchover_at:
    description:
      - The time of a V(scheduled) switchover, ISO 8601 with a zone, for example
        C(2026-12-01T02:00:00Z) or C(2026-12-01T04:00:00+02:00). A time without a zone is refused.
      - Required with O(switchover=scheduled), refused with the other modes.
    type: str
  switchover_window_end:
    description:
      - The end of the window a V(scheduled) switchover may begin in, ISO 8601 with a zone, after
        O(switchover_at). The switchover begins when O(switchover_at) <= now < O(switchover_window_end).
      - When the window closes before the switchover began (the first continuous sync pass was not
        done yet, or the receiver was down), it does not begin - the migration keeps syncing and
        waits for a new time, and RV(migration.switchover_note) says so. Running the task with a new
        O(switchover_at) reschedules it; running it with the missed window again changes nothing
        and warns.
      - Only with O(switchover=scheduled). Without it the schedule has no end.
    type: str
  restart_completed:
    description:
      - Whether O(state=present) starts a new migration when the guest's latest one has completed.
      - Leave it V(false) so that a play run again after a successful migration changes nothing.
    type: bool
    default: false
  wait:
    description:
      - Wait until the migration reaches this phase or a later one, polling every
        O(poll_interval) seconds. The task fails when the migration fails (with its reason) or
        after O(wait_timeout) seconds (with the last phase seen).
      - Waiting for V(completed) only ends once the switchover has happened, so it goes with
        O(switchover=immediate) or V(scheduled), or a switchover requested elsewhere.
      - Only with O(state=present). Not done in check mode.
    type: str
    choices: [registered, full_sync, continuous_sync, quiesce, final_sync, fixup, replica_vm, tools,
              replica_on, source_off, network, completed]
  wait_timeout:
    description:
      - Seconds to wait for O(wait).
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
      - Reads the current migration and reports what would change; sends no change and does not wait.
  diff_mode:
    support: full
    details:
      - Shows the migration's presence and switchover settings before and after.
seealso:
  - module: vmware.osam.switchover
  - module: vmware.osam.migration_info
'''

EXAMPLES = r'''
- name: Migrate web01, switch over when an operator says so, wait for continuous sync
  vmware.osam.migration:
    guest: web01
    switchover: manual
    wait: continuous_sync
    wait_timeout: 7200

- name: Migrate db01 and switch over on Sunday night, Berlin time
  vmware.osam.migration:
    guest: db01
    switchover: scheduled
    switchover_at: "2026-12-06T02:00:00+01:00"

- name: Switch app01 over in the maintenance window 02:00-04:00 UTC, or not at all that night
  vmware.osam.migration:
    guest: app01
    switchover: scheduled
    switchover_at: "2026-12-06T02:00:00Z"
    switchover_window_end: "2026-12-06T04:00:00Z"

- name: Every guest of the group, connection options once for all
  vmware.osam.migration:
    guest: "{{ inventory_hostname }}"
    switchover: immediate
    wait: completed
  delegate_to: localhost
  module_defaults:
    group/vmware.osam.osam:
      api_url: https://receiver.example.com:8444
      api_token: "{{ lookup('ansible.builtin.file', osam_pki_dir + '/api-token') }}"
      ca_cert: "{{ osam_pki_dir }}/ca.crt"
      client_cert: "{{ osam_pki_dir }}/admin.crt"
      client_key: "{{ osam_pki_dir }}/admin.key"

- name: Abort the migration of web01
  vmware.osam.migration:
    guest: web01
    state: absent
'''

RETURN = r'''
operation:
  description:
    - What the task did (or would do in check mode) - V(none), V(started), V(switchover_cancelled),
      V(switchover_requested), V(switchover_scheduled) or V(aborted).
  returned: always
  type: str
  sample: started
migration:
  description:
    - The guest's migration as the receiver reports it after the task (in check mode, before it),
      null when the guest has none.
    - All fields of the API's migration object, plus RV(migration.progress_percent).
  returned: always
  type: dict
  contains:
    id:
      description: The migration's number on the receiver.
      type: int
      sample: 3
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
    phase_since:
      description: When the current phase began (ISO 8601, UTC).
      type: str
      sample: "2026-11-26T08:10:00.000Z"
    switchover:
      description: The API's switchover mode, manual, immediate or at (scheduled).
      type: str
      sample: manual
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
      sample: null
    switchover_note:
      description: What a missed window means, in words; null otherwise.
      type: str
      sample: "switchover window 2026-12-06T01:00:00.000Z to 2026-12-06T03:00:00.000Z missed: waiting for a new time"
    switchover_requested:
      description: Whether an operator has asked for the switchover.
      type: bool
      sample: false
    switchover_due:
      description: Whether the switchover should begin now.
      type: bool
      sample: false
    lag_at_switchover:
      description: Seconds the replica was behind the guest when the switchover began, null before.
      type: float
      sample: 0.4
    reason:
      description: Why the migration failed, null otherwise.
      type: str
      sample: aborted by operator
    bytes_done:
      description: Bytes replicated so far.
      type: int
      sample: 1073741824
    bytes_total:
      description: Bytes to replicate, as far as known.
      type: int
      sample: 4294967296
    files_done:
      description: Files replicated so far.
      type: int
      sample: 52000
    files_total:
      description: Files to replicate, as far as known.
      type: int
      sample: 210000
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
    last_sync_at:
      description: When the last sync pass ended.
      type: str
      sample: "2026-11-26T08:12:00.000Z"
    last_error:
      description: A problem the migration is riding out (it clears once syncing works again).
      type: str
      sample: null
    history:
      description: The phase transitions, oldest first, each with from, to, at and reason.
      type: list
      elements: dict
      sample: [{from: null, to: registered, at: "2026-11-26T08:00:00.000Z", reason: null}]
'''

from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError, guest_path
from ansible_collections.vmware.osam.plugins.module_utils.base import OsamApiModule
from ansible_collections.vmware.osam.plugins.module_utils.lifecycle import (
    API_MODE, BEFORE_SWITCHOVER, COMPLETED, FAILED, NEEDS_OPERATOR, PHASES, WaitFailed, api_time, migration_path,
    missed_window, parse_time, same_time, schedule_warnings, switchover_settings, wait_for_phase, window_end_time,
    with_percent)


def wanted_switchover(module):
    """(mode, epoch or None, window end epoch or None) asked for; fails the task on a bad
    combination or time."""
    mode, at, window_end = module.params['switchover'], module.params['switchover_at'], module.params['switchover_window_end']
    if mode != 'scheduled':
        if at is not None:
            module.fail_json(msg='switchover_at goes only with switchover=scheduled')
        if window_end is not None:
            module.fail_json(msg='switchover_window_end goes only with switchover=scheduled')
        return mode, None, None
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
    return mode, when, end


def switchover_matches(migration, mode, when, end):
    """Whether an active migration already switches over the way the task asks."""
    current = migration['switchover']
    if mode == 'manual':
        return current == 'manual'
    if mode == 'immediate':
        return current == 'immediate' or bool(migration.get('switchover_requested'))
    return (current == 'at' and not migration.get('switchover_requested')
            and same_time(migration.get('switchover_at'), when)
            and same_time(migration.get('switchover_window_end'), end))


def plan(module, current, mode, when, end):
    """(operation, warning or None) for the wanted state and the current migration."""
    if module.params['state'] == 'absent':
        return ('aborted' if current and current['active'] else 'none'), None
    if current is None or current['phase'] == FAILED:
        return 'started', None
    if current['phase'] == COMPLETED:
        return ('started' if module.params['restart_completed'] else 'none'), None
    if current['phase'] == NEEDS_OPERATOR:
        # The replica may be running beside the source: nothing starts until an operator acted.
        return 'none', ('the migration of %s needs the operator: %s'
                        % (current['guest'], current.get('reason') or 'no reason given'))
    if switchover_matches(current, mode, when, end):
        # The same window again does not reopen it: that takes a new time.
        return 'none', missed_window(current) if mode == 'scheduled' else None
    if current['phase'] not in BEFORE_SWITCHOVER:
        return 'none', ('the migration of %s is in %s: its switchover has begun and switchover=%s no longer applies'
                        % (current['guest'], current['phase'], mode))
    return {'manual': 'switchover_cancelled', 'immediate': 'switchover_requested',
            'scheduled': 'switchover_scheduled'}[mode], None


def carry_out(module, operation, guest, mode):
    """Send the change; returns the migration the receiver answers with."""
    client = module.client
    at, window_end = module.params['switchover_at'], module.params['switchover_window_end']
    schedule = dict(at=at.strip()) if at is not None else {}
    if window_end is not None:
        schedule['window_end'] = window_end.strip()
    if operation == 'started':
        return client.post('/v1/migrations', dict(guest=guest, switchover=API_MODE[mode], **schedule))
    if operation == 'aborted':
        return client.post(migration_path(guest, '/abort'))
    if operation == 'switchover_cancelled':
        return client.delete(migration_path(guest, '/switchover'))
    if operation == 'switchover_requested':
        return client.post(migration_path(guest, '/switchover'))
    return client.post(migration_path(guest, '/switchover'), schedule)


def view(migration):
    """How diffs show a migration: phase and switchover, or None when there is none to speak of."""
    if migration is None or migration['phase'] == FAILED:
        return None
    return dict(phase=migration['phase'], **switchover_settings(migration))


def predicted(current, operation, mode, when, end):
    """The diff's "after" for the operation."""
    if operation == 'none':
        return view(current)
    if operation == 'aborted':
        return None
    if operation == 'started':
        return dict(phase='registered', switchover=API_MODE[mode], switchover_at=api_time(when),
                    switchover_window_end=api_time(end), switchover_requested=False)
    after = view(current)
    if operation == 'switchover_requested':
        # A request replaces a schedule: the receiver forgets the time and its window.
        after.update(switchover_requested=True, switchover_at=None, switchover_window_end=None)
    else:
        after.update(switchover=API_MODE[mode], switchover_at=api_time(when), switchover_window_end=api_time(end),
                     switchover_requested=False)
    return after


def main():
    module = OsamApiModule(
        argument_spec=dict(
            guest=dict(type='str', required=True, aliases=['name']),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            switchover=dict(type='str', choices=['manual', 'immediate', 'scheduled'], default='manual'),
            switchover_at=dict(type='str'),
            switchover_window_end=dict(type='str'),
            restart_completed=dict(type='bool', default=False),
            wait=dict(type='str', choices=list(PHASES)),
            wait_timeout=dict(type='int', default=3600),
            poll_interval=dict(type='float', default=5),
        ),
        required_if=[('switchover', 'scheduled', ['switchover_at'])],
        supports_check_mode=True,
    )
    guest, state, wait = module.params['guest'], module.params['state'], module.params['wait']
    if wait and state == 'absent':
        module.fail_json(msg='wait goes only with state=present')
    mode, when, end = wanted_switchover(module)
    client = module.client
    operation, done = 'none', False
    try:
        current = client.get(migration_path(guest), missing_ok=True)
        operation, warning = plan(module, current, mode, when, end)
        if warning:
            module.warn(warning)
        if operation == 'started' and module.check_mode:
            # What the POST would say for a guest the receiver does not know.
            if client.get(guest_path('/v1/guests', guest), missing_ok=True) is None:
                module.fail_json(msg='guest %s is not registered with the receiver' % guest)
        migration = current
        if operation != 'none' and not module.check_mode:
            migration = carry_out(module, operation, guest, mode)
            done = True
        if wait and not module.check_mode:
            migration = wait_for_phase(client, guest, wait, module.params['wait_timeout'],
                                       module.params['poll_interval'])
    except ApiError as error:
        module.fail_api(error, changed=done, operation=operation)
    except WaitFailed as failure:
        module.fail_json(msg=failure.message, changed=done, operation=operation,
                         migration=with_percent(failure.migration))

    result = dict(changed=operation != 'none', operation=operation, migration=with_percent(migration))
    if module._diff:
        result['diff'] = dict(before=view(current), after=predicted(current, operation, mode, when, end))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
