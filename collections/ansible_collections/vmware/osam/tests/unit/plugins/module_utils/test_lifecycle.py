# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Phase order, switchover times and waiting. Waiting polls the FakeReceiver (no receiver runs in
unit tests) with a fake clock, so no test sleeps."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmware.osam.plugins.module_utils.api import OsamClient
from ansible_collections.vmware.osam.plugins.module_utils.lifecycle import (
    WaitFailed, api_time, missed_window, parse_time, phase_reached, same_time, schedule_warnings, wait_for_phase,
    window_end_time, with_percent)


EPOCH = 1796090400.0  # 2026-12-01T02:00:00Z


@pytest.mark.parametrize('text', [
    '2026-12-01T02:00:00Z', '2026-12-01T02:00:00z', '2026-12-01T04:00:00+02:00', '2026-12-01T04:00:00+0200',
    '2026-12-01T04:00+02', '2026-11-30T21:00:00-05:00', '2026-12-01 02:00:00.000Z', ' 2026-12-01T02:00Z ',
])
def test_times_with_a_zone_are_one_instant(text):
    assert parse_time(text) == EPOCH
    assert api_time(parse_time(text)) == '2026-12-01T02:00:00.000Z'


@pytest.mark.parametrize('text', ['2026-12-01T02:00:00', '2026-12-01', 'tomorrow', '2026-13-01T02:00Z',
                                  '2026-02-30T02:00Z', '', None, 1796090400])
def test_times_without_a_zone_or_invalid_are_refused(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_fractions_survive_to_the_millisecond():
    assert api_time(parse_time('2026-12-01T02:00:00.123456Z')) == '2026-12-01T02:00:00.123Z'
    assert same_time('2026-12-01T02:00:00.123Z', parse_time('2026-12-01T03:00:00.1234+01:00'))
    assert not same_time('2026-12-01T02:00:01.000Z', parse_time('2026-12-01T02:00:00Z'))
    assert same_time(None, None) and not same_time(None, 0.0)


@pytest.mark.parametrize('phase, wanted, reached', [
    ('registered', 'registered', True), ('full_sync', 'continuous_sync', False),
    ('final_sync', 'continuous_sync', True), ('completed', 'quiesce', True),
    ('failed', 'registered', False), ('continuous_sync', 'completed', False),
])
def test_phase_order(phase, wanted, reached):
    assert phase_reached(phase, wanted) is reached


def test_progress_percent():
    assert with_percent(dict(bytes_done=300, bytes_total=1200))['progress_percent'] == 25.0
    assert with_percent(dict(bytes_done=0, bytes_total=0))['progress_percent'] is None
    assert with_percent(None) is None


class Clock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_returns_once_the_phase_is_reached(receiver, conn):
    receiver.add_migration('web01', 'registered')
    phases = iter(['full_sync', 'full_sync', 'continuous_sync'])
    receiver.on_get.append(lambda fake, guest: fake.advance(guest, next(phases)))
    clock = Clock()
    migration = wait_for_phase(OsamClient.from_params(conn), 'web01', 'continuous_sync', 60, 5, clock, clock.sleep)
    assert migration['phase'] == 'continuous_sync'
    assert clock.sleeps == [5, 5]


def test_wait_is_satisfied_by_a_later_phase(receiver, conn):
    receiver.add_migration('web01', 'final_sync')
    assert wait_for_phase(OsamClient.from_params(conn), 'web01', 'continuous_sync', 60, 5)['phase'] == 'final_sync'


def test_wait_fails_with_the_reason_of_a_failed_migration(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    receiver.on_get.append(lambda fake, guest: fake.advance(guest, 'failed', 'replica disk full'))
    with pytest.raises(WaitFailed) as raised:
        wait_for_phase(OsamClient.from_params(conn), 'web01', 'completed', 60, 5)
    assert raised.value.message == 'the migration of web01 failed while waiting for completed: replica disk full'
    assert raised.value.migration['phase'] == 'failed'


def test_wait_times_out_with_the_last_phase_seen(receiver, conn):
    receiver.add_migration('web01', 'full_sync')
    clock = Clock()
    with pytest.raises(WaitFailed) as raised:
        wait_for_phase(OsamClient.from_params(conn), 'web01', 'continuous_sync', 12, 5, clock, clock.sleep)
    assert raised.value.message == ('timed out after 12s waiting for the migration of web01 to reach continuous_sync; '
                                    'last phase seen: full_sync (300 of 1200 bytes)')
    assert clock.sleeps == [5, 5, 2]


def test_a_window_end_is_after_the_switchover_time():
    assert window_end_time(None, EPOCH) is None
    assert window_end_time('2026-12-01T05:00:00+02:00', EPOCH) == EPOCH + 3600
    for same_or_earlier in ('2026-12-01T02:00:00Z', '2026-12-01T03:00:00+02:00'):
        with pytest.raises(ValueError, match='is not after switchover_at'):
            window_end_time(same_or_earlier, EPOCH)
    with pytest.raises(ValueError, match='not an ISO 8601 time with a zone'):
        window_end_time('2026-12-01T05:00:00', EPOCH)


@pytest.mark.parametrize('now, end, warned', [
    (EPOCH - 60, None, None),
    (EPOCH + 60, None, 'switchover_at X is in the past: the switchover begins as soon as continuous sync allows'),
    (EPOCH + 60, EPOCH + 3600, 'switchover_at X is in the past: the switchover begins as soon as continuous sync allows'),
    (EPOCH + 3600, EPOCH + 3600, 'switchover_window_end Y is in the past: the switchover will not begin until it '
                                 'is given a new time'),
])
def test_schedules_in_the_past_are_warned_about(now, end, warned):
    assert schedule_warnings('X', EPOCH, 'Y', end, now) == ([warned] if warned else [])


def test_a_missed_window_in_words():
    assert missed_window(None) is None
    assert missed_window(dict(guest='web01', switchover_window_missed_at=None)) is None
    assert missed_window(dict(guest='web01', switchover_window_missed_at='2026-12-01T03:00:00.000Z',
                              switchover_note='switchover window A to B missed: waiting for a new time')) == (
        'the migration of web01: switchover window A to B missed: waiting for a new time')
