# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vmware.osam.migration against the FakeReceiver, which stands in for the HTTP layer because no
receiver runs in unit tests (tests/collection/test_modules_live.py drives a real one)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmware.osam.plugins.modules import migration
from ansible_collections.vmware.osam.tests.unit.utils import fail_module, run_module

LATER = '2030-01-01T02:00:00+01:00'
LATER_API = '2030-01-01T01:00:00.000Z'
LATER_END = '2030-01-01T04:00:00+01:00'
LATER_END_API = '2030-01-01T03:00:00.000Z'


def run(conn, check_mode=False, diff=False, **args):
    return run_module(migration.main, dict(conn, **args), check_mode, diff)


def fail(conn, check_mode=False, **args):
    return fail_module(migration.main, dict(conn, **args), check_mode)


def test_starts_a_migration_for_a_registered_guest(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, guest='web01')
    assert result['changed'] and result['operation'] == 'started'
    assert receiver.changes() == [('POST', '/v1/migrations', dict(guest='web01', switchover='manual'))]
    assert result['migration']['phase'] == 'registered'
    assert result['migration']['progress_percent'] == 25.0


def test_scheduled_is_the_apis_at_mode(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, guest='web01', switchover='scheduled', switchover_at=LATER)
    assert receiver.changes() == [('POST', '/v1/migrations', dict(guest='web01', switchover='at', at=LATER))]
    assert result['migration']['switchover_at'] == LATER_API


def test_the_same_active_migration_is_left_alone(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', LATER_API)
    # The same instant written in another zone is the same schedule.
    result = run(conn, guest='web01', switchover='scheduled', switchover_at='2030-01-01T01:00:00Z')
    assert not result['changed'] and result['operation'] == 'none'
    assert receiver.changes() == []


def test_check_mode_reports_the_start_and_sends_nothing(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, check_mode=True, diff=True, guest='web01', switchover='immediate')
    assert result['changed'] and result['operation'] == 'started'
    assert receiver.changes() == [] and receiver.migrations == {}
    assert result['migration'] is None
    assert result['diff'] == dict(before=None, after=dict(phase='registered', switchover='immediate',
                                                          switchover_at=None, switchover_window_end=None,
                                                          switchover_requested=False))


def test_check_mode_fails_for_a_guest_the_receiver_does_not_know(receiver, conn):
    result = fail(conn, check_mode=True, guest='ghost')
    assert result['msg'] == 'guest ghost is not registered with the receiver'


def test_starting_for_an_unknown_guest_fails_with_the_receivers_answer(receiver, conn):
    result = fail(conn, guest='ghost')
    assert result['msg'] == 'POST https://receiver.example.com:8444/v1/migrations: HTTP 404: guest ghost is not registered'
    assert result['changed'] is False and result['status'] == 404


@pytest.mark.parametrize('current, wanted, operation, sent', [
    (dict(switchover='manual'), dict(switchover='scheduled', switchover_at=LATER), 'switchover_scheduled',
     ('POST', '/v1/migrations/web01/switchover', dict(at=LATER))),
    (dict(switchover='at', at=LATER_API), dict(switchover='manual'), 'switchover_cancelled',
     ('DELETE', '/v1/migrations/web01/switchover', None)),
    (dict(switchover='manual'), dict(switchover='immediate'), 'switchover_requested',
     ('POST', '/v1/migrations/web01/switchover', None)),
    (dict(switchover='at', at='2031-01-01T00:00:00.000Z'), dict(switchover='scheduled', switchover_at=LATER),
     'switchover_scheduled', ('POST', '/v1/migrations/web01/switchover', dict(at=LATER))),
])
def test_another_switchover_is_changed_in_place(receiver, conn, current, wanted, operation, sent):
    receiver.add_migration('web01', 'continuous_sync', **current)
    result = run(conn, diff=True, guest='web01', **wanted)
    assert result['changed'] and result['operation'] == operation
    assert receiver.changes() == [sent]
    assert result['diff']['before'] != result['diff']['after']
    assert result['migration']['phase'] == 'continuous_sync'


def test_a_requested_switchover_counts_as_immediate_and_is_not_withdrawn_by_manual(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'manual', requested=True)
    assert not run(conn, guest='web01', switchover='immediate')['changed']
    assert not run(conn, guest='web01', switchover='manual')['changed']
    assert receiver.changes() == []


def test_a_begun_switchover_is_left_alone_with_a_warning(receiver, conn):
    receiver.add_migration('web01', 'final_sync', 'manual', requested=True)
    result = run(conn, guest='web01', switchover='scheduled', switchover_at=LATER)
    assert not result['changed'] and receiver.changes() == []
    assert result['warnings'] == ['the migration of web01 is in final_sync: its switchover has begun and '
                                  'switchover=scheduled no longer applies']


def test_a_completed_migration_counts_as_present(receiver, conn):
    receiver.add_migration('web01', 'completed')
    result = run(conn, guest='web01', switchover='immediate', wait='continuous_sync')
    assert not result['changed'] and result['migration']['phase'] == 'completed'
    assert receiver.changes() == []


def test_restart_completed_starts_a_new_one(receiver, conn):
    receiver.add_migration('web01', 'completed')
    result = run(conn, guest='web01', restart_completed=True)
    assert result['changed'] and result['migration']['phase'] == 'registered'


def test_a_failed_migration_is_started_again(receiver, conn):
    receiver.add_migration('web01', 'failed', reason='aborted by operator')
    result = run(conn, guest='web01')
    assert result['operation'] == 'started' and result['migration']['id'] == 2


def test_absent_aborts_an_active_migration_once(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    result = run(conn, diff=True, guest='web01', state='absent')
    assert result['changed'] and result['operation'] == 'aborted'
    assert result['migration']['phase'] == 'failed' and result['migration']['reason'] == 'aborted by operator'
    assert result['diff']['after'] is None
    assert not run(conn, guest='web01', state='absent')['changed']
    assert receiver.changes() == [('POST', '/v1/migrations/web01/abort', None)]


def test_absent_without_any_migration_changes_nothing(receiver, conn):
    assert not run(conn, guest='web01', state='absent')['changed']


def test_absent_in_check_mode_sends_nothing(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    assert run(conn, check_mode=True, guest='web01', state='absent')['changed']
    assert receiver.changes() == []


def test_wait_polls_until_the_phase(receiver, conn):
    receiver.add_guest('web01')
    phases = iter(['full_sync', 'continuous_sync'])
    receiver.on_get.append(lambda fake, guest: fake.advance(guest, next(phases, 'continuous_sync')))
    result = run(conn, guest='web01', wait='continuous_sync', poll_interval=0)
    assert result['changed'] and result['migration']['phase'] == 'continuous_sync'
    assert [h['to'] for h in result['migration']['history']] == ['registered', 'full_sync', 'continuous_sync']


def test_wait_fails_with_the_migrations_reason(receiver, conn):
    receiver.add_guest('web01')
    receiver.on_get.append(lambda fake, guest: fake.advance(guest, 'failed', 'sentinel gone for 8 hours'))
    result = fail(conn, guest='web01', wait='continuous_sync', poll_interval=0)
    assert result['msg'] == ('the migration of web01 failed while waiting for continuous_sync: '
                             'sentinel gone for 8 hours')
    assert result['changed'] is True and result['migration']['phase'] == 'failed'


def test_wait_times_out_with_the_last_phase(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    result = fail(conn, guest='web01', wait='continuous_sync', wait_timeout=0, poll_interval=0)
    assert result['msg'].startswith('timed out after 0s waiting for the migration of web01 to reach continuous_sync; '
                                    'last phase seen: full_sync')
    assert result['changed'] is False


def test_a_conflict_from_the_receiver_is_shown(receiver, conn, monkeypatch):
    receiver.add_guest('web01')
    route = receiver.route

    def someone_starts_one_first(method, path, body, authorization):
        # Another migration appears between the module's look and its POST.
        if method == 'POST' and 'web01' not in receiver.migrations:
            receiver.add_migration('web01', 'registered', 'immediate')
        return route(method, path, body, authorization)
    monkeypatch.setattr(receiver, 'route', someone_starts_one_first)
    result = fail(conn, guest='web01')
    assert result['msg'] == ('POST https://receiver.example.com:8444/v1/migrations: HTTP 409: '
                             'guest web01 already has an active migration with switchover immediate')
    assert result['changed'] is False


@pytest.mark.parametrize('args, message', [
    (dict(switchover='manual', switchover_at=LATER), 'switchover_at goes only with switchover=scheduled'),
    (dict(switchover='scheduled'), 'switchover is scheduled but all of the following are missing: switchover_at'),
    (dict(switchover='scheduled', switchover_at='2030-01-01 02:00'), "switchover_at: '2030-01-01 02:00' is not an ISO 8601 time with a zone"),
    (dict(state='absent', wait='completed'), 'wait goes only with state=present'),
    (dict(switchover='immediate', switchover_window_end=LATER_END), 'switchover_window_end goes only with switchover=scheduled'),
    (dict(switchover='scheduled', switchover_at=LATER, switchover_window_end='2030-01-01 04:00'),
     "switchover_window_end: '2030-01-01 04:00' is not an ISO 8601 time with a zone"),
    (dict(switchover='scheduled', switchover_at=LATER, switchover_window_end='2030-01-01T01:00:00Z'),
     'switchover_window_end: 2030-01-01T01:00:00Z is not after switchover_at'),
])
def test_wrong_arguments_are_refused_before_any_request(receiver, conn, args, message):
    result = fail(conn, guest='web01', **args)
    assert message in result['msg']
    assert receiver.requests == []


def test_a_past_schedule_is_warned_about(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, guest='web01', switchover='scheduled', switchover_at='2020-01-01T00:00:00Z')
    assert result['warnings'] == ['switchover_at 2020-01-01T00:00:00Z is in the past: the switchover begins as soon '
                                  'as continuous sync allows']


def test_connection_options_come_from_the_environment(receiver, conn, monkeypatch):
    for option, variable in (('api_url', 'OSAM_API'), ('api_token', 'OSAM_TOKEN'), ('ca_cert', 'OSAM_CA_CERT'),
                             ('client_cert', 'OSAM_CLIENT_CERT'), ('client_key', 'OSAM_CLIENT_KEY')):
        monkeypatch.setenv(variable, conn[option])
    receiver.add_guest('web01')
    assert run({}, guest='web01')['changed']
    assert receiver.calls[0]['client_key'] == conn['client_key']


def test_without_url_or_token_the_task_says_which_is_missing(receiver, monkeypatch):
    monkeypatch.delenv('OSAM_API', raising=False)
    monkeypatch.delenv('OSAM_TOKEN', raising=False)
    result = fail({}, guest='web01')
    assert result['msg'] == 'missing required arguments: api_token, api_url'


def test_a_migration_needing_the_operator_is_left_alone_with_the_instructions(receiver, conn):
    receiver.add_migration('web01', 'needs_operator', reason='power off the source, then power on the replica')
    result = run(conn, guest='web01', switchover='immediate')
    assert not result['changed'] and result['operation'] == 'none' and receiver.changes() == []
    assert result['warnings'] == ['the migration of web01 needs the operator: '
                                  'power off the source, then power on the replica']


def test_scheduled_with_a_window_end(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, diff=True, guest='web01', switchover='scheduled', switchover_at=LATER,
                 switchover_window_end=LATER_END)
    assert receiver.changes() == [('POST', '/v1/migrations',
                                   dict(guest='web01', switchover='at', at=LATER, window_end=LATER_END))]
    assert result['migration']['switchover_window_end'] == LATER_END_API
    assert result['diff']['after']['switchover_window_end'] == LATER_END_API
    # The same window written in another zone is the same schedule.
    again = run(conn, guest='web01', switchover='scheduled', switchover_at='2030-01-01T01:00:00Z',
                switchover_window_end='2030-01-01T03:00:00Z')
    assert not again['changed'] and len(receiver.changes()) == 1


@pytest.mark.parametrize('current_end, wanted_end, sent', [
    (None, LATER_END, dict(at=LATER, window_end=LATER_END)),
    (LATER_END_API, '2030-01-01T05:00:00+01:00', dict(at=LATER, window_end='2030-01-01T05:00:00+01:00')),
    (LATER_END_API, None, dict(at=LATER)),
])
def test_another_window_end_at_the_same_time_is_a_reschedule(receiver, conn, current_end, wanted_end, sent):
    receiver.add_migration('web01', 'continuous_sync', 'at', LATER_API, window_end=current_end)
    args = dict(switchover_window_end=wanted_end) if wanted_end else {}
    result = run(conn, diff=True, guest='web01', switchover='scheduled', switchover_at=LATER, **args)
    assert result['operation'] == 'switchover_scheduled'
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', sent)]
    assert result['diff']['before']['switchover_window_end'] == current_end
    assert result['diff']['after']['switchover_window_end'] == result['migration']['switchover_window_end']


def test_a_missed_window_is_not_reopened_by_the_same_task_but_by_a_new_time(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', LATER_API, window_end=LATER_END_API, missed=True)
    same = run(conn, guest='web01', switchover='scheduled', switchover_at=LATER, switchover_window_end=LATER_END)
    assert not same['changed'] and receiver.changes() == []
    assert same['migration']['switchover_window_missed_at'] == LATER_END_API
    assert same['warnings'] == ['the migration of web01: switchover window %s to %s missed: waiting for a new time'
                                % (LATER_API, LATER_END_API)]
    new = run(conn, guest='web01', switchover='scheduled', switchover_at='2030-01-02T02:00:00Z',
              switchover_window_end='2030-01-02T04:00:00Z')
    assert new['operation'] == 'switchover_scheduled' and new['warnings'] == []
    assert new['migration']['switchover_note'] is None and new['migration']['switchover_window_missed_at'] is None


def test_immediate_after_a_missed_window_requests_the_switchover(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', LATER_API, window_end=LATER_END_API, missed=True)
    result = run(conn, diff=True, guest='web01', switchover='immediate')
    assert result['operation'] == 'switchover_requested'
    assert receiver.changes() == [('POST', '/v1/migrations/web01/switchover', None)]
    assert result['diff']['after']['switchover_window_end'] is None
    assert result['migration']['switchover_requested'] and result['migration']['switchover_note'] is None


def test_a_window_already_over_is_warned_about(receiver, conn):
    receiver.add_guest('web01')
    result = run(conn, guest='web01', switchover='scheduled', switchover_at='2020-01-01T00:00:00Z',
                 switchover_window_end='2020-01-01T02:00:00Z')
    assert result['warnings'] == ['switchover_window_end 2020-01-01T02:00:00Z is in the past: the switchover will '
                                  'not begin until it is given a new time']


def test_manual_cancels_a_schedule_and_its_window(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', LATER_API, window_end=LATER_END_API, missed=True)
    result = run(conn, guest='web01', switchover='manual')
    assert result['operation'] == 'switchover_cancelled'
    assert (result['migration']['switchover_window_end'], result['migration']['switchover_note']) == (None, None)
