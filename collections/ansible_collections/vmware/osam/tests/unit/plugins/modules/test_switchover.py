# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vmware.osam.switchover against the FakeReceiver, which stands in for the HTTP layer because no
receiver runs in unit tests (tests/collection/test_modules_live.py drives a real one)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmware.osam.plugins.modules import switchover
from ansible_collections.vmware.osam.tests.unit.utils import fail_module, run_module

LATER = '2030-01-01T02:00:00Z'


def run(conn, check_mode=False, diff=False, **args):
    return run_module(switchover.main, dict(conn, **args), check_mode, diff)


def fail(conn, check_mode=False, **args):
    return fail_module(switchover.main, dict(conn, **args), check_mode)


def test_started_requests_the_switchover_once(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync')
    result = run(conn, diff=True, guest='web01')
    assert result['changed'] and result['operation'] == 'requested'
    assert result['migration']['switchover_requested'] is True
    assert result['diff']['after']['switchover_requested'] is True
    assert not run(conn, guest='web01')['changed']
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', None)]


@pytest.mark.parametrize('phase', ['quiesce', 'final_sync', 'completed'])
def test_started_is_already_true_once_the_switchover_has_begun(receiver, conn, phase):
    receiver.add_migration('web01', phase)
    assert not run(conn, guest='web01')['changed']
    assert receiver.changes() == []


def test_check_mode_sends_nothing(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    assert run(conn, check_mode=True, guest='web01')['operation'] == 'requested'
    assert receiver.changes() == []


def test_scheduled_reschedules_only_when_the_time_differs(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', '2030-01-01T02:00:00.000Z')
    assert not run(conn, guest='web01', state='scheduled', switchover_at='2030-01-01T03:00:00+01:00')['changed']
    result = run(conn, guest='web01', state='scheduled', switchover_at='2030-01-02T02:00:00Z')
    assert result['operation'] == 'scheduled' and result['migration']['switchover_at'] == '2030-01-02T02:00:00.000Z'
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', dict(at='2030-01-02T02:00:00Z'))]


def test_scheduled_replaces_a_request(receiver, conn):
    receiver.add_migration('web01', 'full_sync', requested=True)
    assert run(conn, guest='web01', state='scheduled', switchover_at=LATER)['changed']


@pytest.mark.parametrize('current', [dict(switchover='at', at='2030-01-01T02:00:00.000Z'),
                                     dict(switchover='immediate'), dict(switchover='manual', requested=True)])
def test_cancelled_goes_back_to_manual(receiver, conn, current):
    receiver.add_migration('web01', 'continuous_sync', **current)
    result = run(conn, guest='web01', state='cancelled')
    assert result['operation'] == 'cancelled'
    assert (result['migration']['switchover'], result['migration']['switchover_requested']) == ('manual', False)
    assert not run(conn, guest='web01', state='cancelled')['changed']


@pytest.mark.parametrize('state, extra', [('cancelled', {}), ('scheduled', dict(switchover_at=LATER))])
@pytest.mark.parametrize('check_mode', [False, True])
def test_too_late_to_change_fails_with_the_receivers_words(receiver, conn, state, extra, check_mode):
    receiver.add_migration('web01', 'quiesce', requested=True)
    result = fail(conn, check_mode=check_mode, guest='web01', state=state, **extra)
    assert result['msg'] == 'the migration of web01 is in quiesce: the switchover can no longer be changed'
    assert receiver.changes() == []


def test_a_failed_migration_fails_with_its_reason(receiver, conn):
    receiver.add_migration('web01', 'failed', reason='aborted by operator')
    assert fail(conn, guest='web01')['msg'] == 'the migration of web01 failed: aborted by operator'


def test_no_migration_fails_with_the_receivers_answer(receiver, conn):
    result = fail(conn, guest='web01')
    assert result['msg'] == ('GET https://receiver.example.com:8444/v1/migrations/web01: HTTP 404: '
                             'no migration for guest web01')


def test_wait_until_completed(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync')
    phases = iter(['quiesce', 'final_sync', 'completed'])
    # The phases move on once the switchover has been asked for.
    receiver.on_get.append(lambda fake, guest: fake.changes() and fake.advance(guest, next(phases, 'completed')))
    result = run(conn, guest='web01', wait=True, poll_interval=0)
    assert result['changed'] and result['migration']['phase'] == 'completed'


def test_wait_fails_when_the_final_sync_fails(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync')
    receiver.on_get.append(lambda fake, guest: fake.changes() and fake.advance(guest, 'failed', 'final sync: replica disk full'))
    result = fail(conn, guest='web01', wait=True, poll_interval=0)
    assert result['msg'] == 'the migration of web01 failed while waiting for completed: final sync: replica disk full'
    assert result['changed'] is True


@pytest.mark.parametrize('args, message', [
    (dict(state='cancelled', wait=True), 'wait goes only with state=started or state=scheduled'),
    (dict(state='started', switchover_at=LATER), 'switchover_at goes only with state=scheduled'),
    (dict(state='scheduled'), 'state is scheduled but all of the following are missing: switchover_at'),
    (dict(state='scheduled', switchover_at='at dawn'), "switchover_at: 'at dawn' is not an ISO 8601 time"),
    (dict(state='started', switchover_window_end=LATER), 'switchover_window_end goes only with state=scheduled'),
    (dict(state='cancelled', switchover_window_end=LATER), 'switchover_window_end goes only with state=scheduled'),
    (dict(state='scheduled', switchover_at=LATER, switchover_window_end='2030-01-01T02:00:00+00:00'),
     'switchover_window_end: 2030-01-01T02:00:00+00:00 is not after switchover_at'),
    (dict(state='scheduled', switchover_at=LATER, switchover_window_end='dawn'),
     "switchover_window_end: 'dawn' is not an ISO 8601 time"),
])
def test_wrong_arguments_are_refused_before_any_request(receiver, conn, args, message):
    assert message in fail(conn, guest='web01', **args)['msg']
    assert receiver.requests == []


def test_a_migration_needing_the_operator_fails_with_the_instructions(receiver, conn):
    receiver.add_migration('web01', 'needs_operator', reason='power off the source, then power on the replica')
    assert fail(conn, guest='web01')['msg'] == ('the migration of web01 needs the operator: '
                                                'power off the source, then power on the replica')
    assert receiver.changes() == []


WINDOW_END = '2030-01-01T04:00:00Z'
WINDOW_END_API = '2030-01-01T04:00:00.000Z'


def test_scheduled_with_a_window_end_and_again(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync')
    result = run(conn, diff=True, guest='web01', state='scheduled', switchover_at=LATER, switchover_window_end=WINDOW_END)
    assert result['operation'] == 'scheduled'
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', dict(at=LATER, window_end=WINDOW_END))]
    assert result['migration']['switchover_window_end'] == WINDOW_END_API
    assert result['diff']['after'] == dict(switchover='at', switchover_at='2030-01-01T02:00:00.000Z',
                                           switchover_window_end=WINDOW_END_API, switchover_requested=False)
    same = run(conn, guest='web01', state='scheduled', switchover_at=LATER, switchover_window_end='2030-01-01T05:00:00+01:00')
    assert not same['changed'] and len(receiver.changes()) == 1


@pytest.mark.parametrize('current_end, args, sent', [
    (None, dict(switchover_window_end=WINDOW_END), dict(at=LATER, window_end=WINDOW_END)),
    (WINDOW_END_API, dict(switchover_window_end='2030-01-01T05:00:00Z'), dict(at=LATER, window_end='2030-01-01T05:00:00Z')),
    (WINDOW_END_API, {}, dict(at=LATER)),
])
def test_another_window_end_reschedules(receiver, conn, current_end, args, sent):
    receiver.add_migration('web01', 'continuous_sync', 'at', '2030-01-01T02:00:00.000Z', window_end=current_end)
    result = run(conn, guest='web01', state='scheduled', switchover_at=LATER, **args)
    assert result['operation'] == 'scheduled'
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', sent)]


def test_a_missed_window_waits_for_a_new_time(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', '2030-01-01T02:00:00.000Z', window_end=WINDOW_END_API,
                           missed=True)
    same = run(conn, guest='web01', state='scheduled', switchover_at=LATER, switchover_window_end=WINDOW_END)
    assert not same['changed'] and receiver.changes() == []
    assert same['warnings'] == ['the migration of web01: switchover window 2030-01-01T02:00:00.000Z to '
                                '2030-01-01T04:00:00.000Z missed: waiting for a new time']
    rescheduled = run(conn, guest='web01', state='scheduled', switchover_at='2030-01-02T02:00:00Z')
    assert rescheduled['changed'] and rescheduled['migration']['switchover_note'] is None
    assert rescheduled['migration']['switchover_window_end'] is None


@pytest.mark.parametrize('state', ['started', 'cancelled'])
def test_a_request_or_a_cancel_ends_the_wait_for_a_new_time(receiver, conn, state):
    receiver.add_migration('web01', 'continuous_sync', 'at', '2030-01-01T02:00:00.000Z', window_end=WINDOW_END_API,
                           missed=True)
    result = run(conn, diff=True, guest='web01', state=state)
    assert result['changed'] and result['warnings'] == []
    migration = result['migration']
    assert (migration['switchover_window_end'], migration['switchover_window_missed_at'], migration['switchover_note']) == (
        None, None, None)
    assert result['diff']['after']['switchover_window_end'] is None
