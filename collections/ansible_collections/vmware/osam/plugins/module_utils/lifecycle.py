# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the modules know of the migration lifecycle: phase order, switchover times, waiting.

The receiver owns the state machine; this only reads it (phase order as osam.controller.phases
defines it) so the modules can decide whether a wanted state is already reached.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import re
import time

from ansible_collections.vmware.osam.plugins.module_utils.api import guest_path

# In lifecycle order; "failed" ends a migration from any phase and is outside the order.
PHASES = ('registered', 'full_sync', 'continuous_sync', 'quiesce', 'final_sync', 'fixup', 'replica_vm',
          'tools', 'replica_on', 'source_off', 'network', 'completed')
COMPLETED = 'completed'
FAILED = 'failed'
# The cutover stopped half-way: the reason says what the operator must do. Outside the order too.
NEEDS_OPERATOR = 'needs_operator'
# Phases in which the switchover can still be requested, rescheduled or cancelled.
BEFORE_SWITCHOVER = ('registered', 'full_sync', 'continuous_sync')

# The receiver's API speaks "at" for a scheduled switchover.
API_MODE = {'manual': 'manual', 'immediate': 'immediate', 'scheduled': 'at'}

_ISO8601 = re.compile(
    r'^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hour>\d{2}):(?P<minute>\d{2})'
    r'(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?'
    r'\s*(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)$')


def migration_path(guest, suffix=''):
    return guest_path('/v1/migrations', guest, suffix)


def phase_reached(phase, wanted):
    """Whether a migration in `phase` has got to `wanted` (or further) on its way to completed."""
    if phase not in PHASES or wanted not in PHASES:
        return False
    return PHASES.index(phase) >= PHASES.index(wanted)


def parse_time(text):
    """ISO 8601 date and time with a zone -> seconds since the epoch. A time without a zone is
    refused: it would mean the controller's clock to one reader and the receiver's to another."""
    match = _ISO8601.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError('%r is not an ISO 8601 time with a zone, e.g. 2026-12-01T02:00:00Z or '
                         '2026-12-01T04:00:00+02:00' % (text,))
    zone = match.group('zone')
    if zone in ('Z', 'z'):
        offset = datetime.timedelta(0)
    else:
        digits = zone[1:].replace(':', '')
        offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if zone[0] == '-':
            offset = -offset
    fraction = (match.group('fraction') or '0')[:6].ljust(6, '0')
    try:
        when = datetime.datetime.strptime(match.group('date'), '%Y-%m-%d').replace(
            hour=int(match.group('hour')), minute=int(match.group('minute')),
            second=int(match.group('second') or 0), microsecond=int(fraction),
            tzinfo=datetime.timezone(offset))
    except ValueError as error:
        raise ValueError('%r is not a valid time: %s' % (text, error))
    return (when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()


def api_time(epoch):
    """Epoch seconds as the API writes times: UTC, milliseconds, "Z"."""
    if epoch is None:
        return None
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return when.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (when.microsecond // 1000)


def same_time(api_time, epoch):
    """Whether the API's time string (milliseconds, UTC) is the same instant as `epoch`."""
    if api_time is None or epoch is None:
        return api_time is None and epoch is None
    return abs(parse_time(api_time) - epoch) < 0.001


def window_end_time(window_end, at_epoch):
    """Epoch seconds of a scheduled switchover's window end, None without one; ValueError unless
    it is an ISO 8601 time with a zone after the switchover time `at_epoch`."""
    if window_end is None:
        return None
    end = parse_time(window_end)
    if end <= at_epoch:
        raise ValueError('%s is not after switchover_at: the window must end after it begins' % window_end)
    return end


def schedule_warnings(at, when, window_end, end, now=None):
    """Warnings for a schedule given in the past: without a window (or one still open) the
    switchover begins as soon as continuous sync allows; after its window it will not begin."""
    now = time.time() if now is None else now
    if end is not None and end <= now:
        return ['switchover_window_end %s is in the past: the switchover will not begin until it is '
                'given a new time' % window_end]
    if when < now:
        return ['switchover_at %s is in the past: the switchover begins as soon as continuous sync allows' % at]
    return []


def missed_window(migration):
    """What to tell the operator when a scheduled switchover's window closed before it began."""
    if not migration or not migration.get('switchover_window_missed_at'):
        return None
    return 'the migration of %s: %s' % (migration.get('guest'), migration.get('switchover_note')
                                        or 'its switchover window was missed: waiting for a new time')


def switchover_settings(migration):
    """The switchover part of a migration, as diffs show it."""
    if migration is None:
        return None
    return dict(switchover=migration.get('switchover'), switchover_at=migration.get('switchover_at'),
                switchover_window_end=migration.get('switchover_window_end'),
                switchover_requested=migration.get('switchover_requested'))


def with_percent(migration):
    """The API's migration plus progress_percent (bytes done of bytes total), None if unknown."""
    if migration is None:
        return None
    result = dict(migration)
    done, total = migration.get('bytes_done'), migration.get('bytes_total')
    result['progress_percent'] = round(100.0 * done / total, 1) if done is not None and total else None
    return result


class WaitFailed(Exception):
    """Waiting ended without the wanted phase; `migration` is the last one seen."""

    def __init__(self, message, migration):
        super(WaitFailed, self).__init__(message)
        self.message = message
        self.migration = migration


def wait_for_phase(client, guest, wanted, timeout, interval, clock=None, sleep=None):
    """Poll the guest's migration until it reaches `wanted`; WaitFailed when it fails or time runs out."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + timeout
    while True:
        migration = client.get(migration_path(guest))
        phase = migration.get('phase')
        if phase in (FAILED, NEEDS_OPERATOR) and wanted != phase:
            raise WaitFailed('the migration of %s %s while waiting for %s: %s'
                             % (guest, 'failed' if phase == FAILED else 'needs the operator', wanted,
                                migration.get('reason') or 'no reason given'), migration)
        if phase == wanted or phase_reached(phase, wanted):
            return migration
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitFailed('timed out after %ss waiting for the migration of %s to reach %s; last phase seen: %s%s'
                             % (timeout, guest, wanted, phase, _progress_note(migration)), migration)
        sleep(min(interval, remaining))


def _progress_note(migration):
    done, total = migration.get('bytes_done'), migration.get('bytes_total')
    if done is None or not total:
        return ''
    return ' (%d of %d bytes)' % (done, total)
