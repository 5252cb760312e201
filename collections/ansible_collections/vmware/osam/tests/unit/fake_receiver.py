# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""An in-memory stand-in for the receiver's REST API, for unit tests only.

It replaces ansible's open_url inside module_utils/api.py, so the real client still builds the
requests, reads the answers and turns errors into messages; only the network and the receiver
are simulated. It follows the receiver's rules (osam.receiver.api and osam.controller): tokens,
404s, the 409 of a differing active migration, switchover changes only before quiesce, a
scheduled switchover's window end and the note of a missed window.
The real receiver is exercised by tests/collection/test_modules_live.py at the repository root.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import io
import json
from urllib.error import HTTPError
from urllib.parse import unquote

from ansible_collections.vmware.osam.plugins.module_utils.lifecycle import api_time, parse_time

RW_TOKEN = 'rw-token-0123456789'
RO_TOKEN = 'ro-token-0123456789'
BEFORE_SWITCHOVER = ('registered', 'full_sync', 'continuous_sync')
TIME = '2026-11-26T08:00:00.000Z'


class _Response(object):
    def __init__(self, status, payload):
        self.status = status
        self._data = json.dumps(payload).encode('utf-8')

    def getcode(self):
        return self.status

    def read(self):
        return self._data


class FakeReceiver(object):
    def __init__(self):
        self.guests = {}
        self.migrations = {}       # guest -> its latest migration (a dict as the API shows it)
        self.requests = []         # (method, path, body) of every request received
        self.calls = []            # keyword arguments of every open_url call
        self.on_get = []           # functions run before each GET of a migration (to move phases)
        self.next_id = 1

    # -- set-up helpers ------------------------------------------------------------------------
    def add_guest(self, name, connected=True):
        self.guests[name] = dict(name=name, inventory=dict(hostname=name, memory=1 << 30, boot='uefi'),
                                 agent_version='0.1.0', connected=connected, first_seen=TIME,
                                 last_seen=TIME, migration_phase=None)
        return self.guests[name]

    def add_migration(self, guest, phase='continuous_sync', switchover='manual', at=None, requested=False,
                      reason=None, window_end=None, missed=False):
        """A migration as the API shows it; `missed=True`: its window closed before it began."""
        if guest not in self.guests:
            self.add_guest(guest)
        migration = dict(
            id=self.next_id, guest=guest, phase=phase, active=phase not in ('completed', 'needs_operator', 'failed'),
            phase_since=TIME, switchover=switchover, switchover_at=at, switchover_window_end=window_end,
            switchover_window_missed_at=None, switchover_note=None, switchover_requested=requested,
            switchover_due=False, reason=reason, bytes_done=300, bytes_total=1200, files_done=3,
            files_total=12, rate=100.0, eta=9.0, last_sync_at=None, lag=0.5, lag_at_switchover=None,
            last_error=None, last_error_at=None, created=TIME, updated=TIME,
            history=[dict(to='registered', at=TIME, reason=None)])
        migration['history'][0]['from'] = None
        if missed:
            migration.update(switchover_window_missed_at=window_end, switchover_note=(
                'switchover window %s to %s missed: waiting for a new time' % (at, window_end)))
        self.next_id += 1
        self.migrations[guest] = migration
        self.guests[guest]['migration_phase'] = phase
        return migration

    def advance(self, guest, phase, reason=None):
        migration = self.migrations[guest]
        migration['history'].append({'from': migration['phase'], 'to': phase, 'at': TIME, 'reason': reason})
        migration.update(phase=phase, active=phase not in ('completed', 'needs_operator', 'failed'), reason=reason)

    def changes(self):
        """The requests that were not GETs."""
        return [r for r in self.requests if r[0] != 'GET']

    # -- the open_url stand-in -----------------------------------------------------------------
    def open_url(self, url, data=None, headers=None, method=None, **kwargs):
        self.calls.append(dict(kwargs, url=url, headers=dict(headers or {}), method=method))
        path = '/' + url.split('://', 1)[1].split('/', 1)[1]
        body = json.loads(data.decode('utf-8')) if data else None
        self.requests.append((method, path, body))
        status, payload = self.route(method, path, body, (headers or {}).get('Authorization', ''))
        if status >= 400:
            raise HTTPError(url, status, 'error', {}, io.BytesIO(json.dumps(payload).encode('utf-8')))
        return _Response(status, payload)

    def route(self, method, path, body, authorization):
        token = authorization[len('Bearer '):] if authorization.startswith('Bearer ') else None
        if token not in (RW_TOKEN, RO_TOKEN):
            return 401, {'error': 'invalid token' if token else 'missing bearer token'}
        parts = [unquote(p) for p in path.split('/')[2:]]
        if method != 'GET' and token != RW_TOKEN:
            return 403, {'error': 'this token is read-only'}
        if parts == ['guests'] and method == 'GET':
            return 200, {'guests': list(self.guests.values())}
        if len(parts) == 2 and parts[0] == 'guests' and method == 'GET':
            if parts[1] not in self.guests:
                return 404, {'error': 'guest %s is not registered' % parts[1]}
            return 200, self.guests[parts[1]]
        if parts == ['migrations'] and method == 'GET':
            return 200, {'migrations': list(self.migrations.values())}
        if parts == ['migrations'] and method == 'POST':
            return self._start(body)
        name = parts[1] if len(parts) > 1 else None
        if name not in self.migrations:
            return 404, {'error': 'no migration for guest %s' % name}
        migration = self.migrations[name]
        if len(parts) == 2 and method == 'GET':
            for step in list(self.on_get):
                step(self, name)
            return 200, migration
        if parts[2:] == ['abort'] and method == 'POST':
            if not migration['active']:
                return 409, {'error': '%s -> failed: %s is terminal' % (migration['phase'], migration['phase'])}
            self.advance(name, 'failed', 'aborted by operator')
            return 200, migration
        if parts[2:] == ['switchover'] and method in ('POST', 'DELETE'):
            if migration['phase'] not in BEFORE_SWITCHOVER:
                return 409, {'error': 'the migration of %s is in %s: the switchover can no longer be changed'
                             % (name, migration['phase'])}
            if body and body.get('window_end') and not body.get('at'):
                return 400, {'error': 'window_end goes only with a switchover time (at): it ends the '
                                      'window a scheduled switchover may start in'}
            # Every change forgets a missed window.
            migration.update(switchover_window_missed_at=None, switchover_note=None)
            if method == 'DELETE':
                migration.update(switchover='manual', switchover_at=None, switchover_window_end=None,
                                 switchover_requested=False)
            elif body and body.get('at'):
                migration.update(switchover='at', switchover_at=api_time(parse_time(body['at'])),
                                 switchover_window_end=_api_time_or_none(body.get('window_end')),
                                 switchover_requested=False)
            else:
                migration.update(switchover_requested=True, switchover_at=None, switchover_window_end=None)
            return 200, migration
        return 404, {'error': 'no such endpoint'}

    def _start(self, body):
        guest = body['guest']
        if guest not in self.guests:
            return 404, {'error': 'guest %s is not registered' % guest}
        current = self.migrations.get(guest)
        at = _api_time_or_none(body.get('at'))
        window_end = _api_time_or_none(body.get('window_end'))
        if current and current['active']:
            wanted = (body['switchover'], at, window_end)
            if (current['switchover'], current['switchover_at'], current['switchover_window_end']) != wanted:
                return 409, {'error': 'guest %s already has an active migration with switchover %s'
                             % (guest, current['switchover'])}
            return 200, current
        return 201, self.add_migration(guest, 'registered', body['switchover'], at, window_end=window_end)


def _api_time_or_none(text):
    return api_time(parse_time(text)) if text else None
