# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sentinel's two configuration files, read and edited line by line.

The rules are the sentinel's own (osam.sentinel.config), restated here because this code runs
on guests that may not have the osam package:

- ``excluded_paths``: one absolute path per line, ``#`` comments and blank lines allowed,
  blanks around a path ignored, the path normalised (``/var/log/`` is ``/var/log``), ``/``
  refused. Handled as bytes so names that are not UTF-8 survive.
- ``etc/sync.params``: ``key=value`` lines, ``#`` comments; ``quiesce_services`` and
  ``pre_quiesce_hook`` may repeat and add up, other keys may appear once.

Edits keep comments, blank lines and keys nobody asked to change, so an operator's notes in
these files survive. A managed key whose current lines already mean the wanted value is left
as written; otherwise its lines are replaced where the first of them stood.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import posixpath
import re

EXCLUDED_PATHS = 'excluded_paths'
SYNC_PARAMS = 'etc/sync.params'

# What the sentinel uses for a key the file does not set.
DEFAULTS = {
    'max_retry_interval': 8,
    'verify_interval': 600,
    'quiesce_timeout': 120,
    'quiesce_services': [],
    'pre_quiesce_hook': [],
    'final_verify': False,
}
REPEATABLE = frozenset(('quiesce_services', 'pre_quiesce_hook'))

_SERVICE_NAME = re.compile(r'^[A-Za-z0-9:_.@\\-]+$')
_WHOLE_NUMBER = re.compile(r'^[0-9]+$')
_TRUE = ('yes', 'true', '1', 'on')
_FALSE = ('no', 'false', '0', 'off')


class Unusable(object):
    """Marks a key whose current lines the sentinel would refuse (so it always differs)."""

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = None


UNUSABLE = Unusable()


# ------------------------------------------------------------------ values as the file says them

def _hours(text):
    if _WHOLE_NUMBER.match(text) and 1 <= int(text) <= 8:
        return int(text)
    raise ValueError('must be a whole number of hours from 1 to 8')


def _seconds(minimum):
    def parse(text):
        if _WHOLE_NUMBER.match(text) and int(text) >= minimum:
            return int(text)
        raise ValueError('must be a whole number of seconds, at least %d' % minimum)
    return parse


def _services(text):
    names = [n.strip() for n in text.split(',') if n.strip()]
    for name in names:
        if not _SERVICE_NAME.match(name):
            raise ValueError('must be a comma-separated list of service names')
    return names


def _yes_no(text):
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError('must be yes or no')


def _command(text):
    if not text:
        raise ValueError('must be a shell command')
    return [text]


FILE_PARSERS = {
    'max_retry_interval': _hours,
    'verify_interval': _seconds(0),
    'quiesce_timeout': _seconds(1),
    'quiesce_services': _services,
    'pre_quiesce_hook': _command,
    'final_verify': _yes_no,
}
KNOWN_KEYS = tuple(sorted(FILE_PARSERS))


def parse_file_value(key, text):
    """The value of one ``key=value`` line, or ValueError with the sentinel's wording."""
    return FILE_PARSERS[key](text.strip())


# ------------------------------------------------------------------ values as a task gives them

def normalize_param(key, value):
    """A task's value for `key` in the form the file parser returns (lists for the repeatable
    keys); None or an empty list means "not set", so the key's lines go away.

    Raises ValueError naming the key and the rule it breaks."""
    if key not in FILE_PARSERS:
        raise ValueError('unknown sync_params key %r (known: %s)' % (key, ', '.join(KNOWN_KEYS)))
    if value is None:
        return None
    try:
        if key == 'final_verify':
            return _as_bool(value)
        if key == 'quiesce_services':
            return _as_services(value) or None
        if key == 'pre_quiesce_hook':
            return _as_commands(value) or None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError('must be a whole number')
        return parse_file_value(key, str(value))
    except ValueError as error:
        raise ValueError('sync_params %s %s, got %r' % (key, error, value))


def _as_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _yes_no(value.strip())
    raise ValueError('must be yes or no')


def _as_services(value):
    if isinstance(value, str):
        return _services(value)
    if isinstance(value, (list, tuple)):
        names = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError('must be a list of service names')
            names.extend(_services(item))
        return names
    raise ValueError('must be a list of service names or a comma-separated string')


def _as_commands(value):
    commands = [value] if isinstance(value, str) else value
    if not isinstance(commands, (list, tuple)):
        raise ValueError('must be a shell command or a list of them')
    result = []
    for command in commands:
        if not isinstance(command, str) or not command.strip():
            raise ValueError('must be non-empty shell commands')
        if '\n' in command or '\r' in command or '\0' in command:
            raise ValueError('must be one-line shell commands (one list item per command)')
        result.append(command.strip())
    return result


def render_lines(key, value):
    """The ``key=value`` lines that say `value` (already normalised)."""
    if key == 'final_verify':
        return ['%s=%s' % (key, 'yes' if value else 'no')]
    if key == 'quiesce_services':
        return ['%s=%s' % (key, ','.join(value))]
    if key == 'pre_quiesce_hook':
        return ['%s=%s' % (key, command) for command in value]
    return ['%s=%s' % (key, value)]


# ------------------------------------------------------------------ the two files

def _split(data):
    """Lines of a file's bytes without their newlines ([] for an empty file)."""
    if not data:
        return []
    lines = data.split(b'\n')
    if lines[-1] == b'':
        lines.pop()
    return lines


def _join(lines):
    return b''.join(line + b'\n' for line in lines)


def _content(line):
    """The meaningful part of a line, or None for blank lines and comments."""
    stripped = line.strip(b' \t\r')
    if not stripped or stripped.startswith(b'#'):
        return None
    return stripped


class SyncParams(object):
    """``etc/sync.params`` as lines; keys found with their line numbers (0-based)."""

    def __init__(self, data=b''):
        self.lines = _split(data)

    def data(self):
        return _join(self.lines)

    def _entries(self):
        """(index, key or None, value text or None, problem or None) for every setting line."""
        entries = []
        for index, line in enumerate(self.lines):
            content = _content(line)
            if content is None:
                continue
            try:
                text = content.decode('utf-8')
            except UnicodeDecodeError:
                entries.append((index, None, None, 'not valid UTF-8'))
                continue
            key, sep, value = text.partition('=')
            key = key.strip()
            if not sep:
                entries.append((index, None, None, 'expected key=value, got %r' % text))
            elif key not in FILE_PARSERS:
                entries.append((index, None, None, 'unknown key %r (known: %s)' % (key, ', '.join(KNOWN_KEYS))))
            else:
                entries.append((index, key, value.strip(), None))
        return entries

    def current(self, key):
        """What the file sets `key` to: None when unset, UNUSABLE when the sentinel would refuse."""
        values = [value for _index, found, value, _problem in self._entries() if found == key]
        if not values:
            return None
        if len(values) > 1 and key not in REPEATABLE:
            return UNUSABLE
        try:
            parsed = [parse_file_value(key, value) for value in values]
        except ValueError:
            return UNUSABLE
        if key in REPEATABLE:
            return [item for part in parsed for item in part]
        return parsed[0]

    def set(self, key, value):
        """Make the file say `value` for `key` (None: remove its lines). True if lines changed."""
        if self.current(key) == value:
            return False
        indexes = [index for index, found, _value, _problem in self._entries() if found == key]
        if value is None and not indexes:
            return False
        new = [line.encode('utf-8') for line in render_lines(key, value)] if value is not None else []
        at = indexes[0] if indexes else len(self.lines)
        kept = [line for index, line in enumerate(self.lines) if index not in indexes]
        at -= sum(1 for index in indexes if index < at)
        self.lines = kept[:at] + new + kept[at:]
        return True

    def keys(self):
        return sorted(set(key for _index, key, _value, _problem in self._entries() if key))

    def effective(self):
        """The settings the sentinel uses after a restart: defaults, overridden by usable lines."""
        result = dict((key, list(value) if isinstance(value, list) else value) for key, value in DEFAULTS.items())
        for key in self.keys():
            value = self.current(key)
            if value is not UNUSABLE:
                result[key] = value
        return result

    def problems(self):
        """'line N: why' for each line the sentinel would refuse."""
        found = []
        first = {}
        for index, key, value, problem in self._entries():
            if problem:
                found.append('line %d: %s' % (index + 1, problem))
                continue
            if key in first and key not in REPEATABLE:
                found.append('line %d: %s already set on line %d' % (index + 1, key, first[key] + 1))
            first.setdefault(key, index)
            try:
                parse_file_value(key, value)
            except ValueError as error:
                found.append('line %d: %s %s, got %r' % (index + 1, key, error, value))
        return found


def normalize_path(path):
    """An excluded path (bytes) as the sentinel reads it. Raises ValueError if it refuses it."""
    if b'\0' in path:
        raise ValueError('excluded path contains a NUL byte')
    if not path.startswith(b'/'):
        raise ValueError('excluded path must be absolute, got %r' % path.decode('utf-8', 'replace'))
    normal = posixpath.normpath(path)
    if normal.startswith(b'//'):  # POSIX keeps a leading "//"; the sentinel reads it as "/"
        normal = b'/' + normal.lstrip(b'/')
    if normal == b'/':
        raise ValueError('excluding / would exclude everything')
    return normal


class ExcludedPaths(object):
    """``excluded_paths`` as lines."""

    def __init__(self, data=b''):
        self.lines = _split(data)

    def data(self):
        return _join(self.lines)

    def _entries(self):
        """(index, normalised path or None, problem or None) for every path line."""
        entries = []
        for index, line in enumerate(self.lines):
            content = _content(line)
            if content is None:
                continue
            try:
                entries.append((index, normalize_path(content), None))
            except ValueError as error:
                entries.append((index, None, str(error)))
        return entries

    def paths(self):
        """The excluded paths the sentinel will use, sorted and without repeats."""
        return sorted(set(path for _index, path, _problem in self._entries() if path is not None))

    def problems(self):
        """'line N: why' for each line the sentinel would refuse."""
        return ['line %d: %s' % (index + 1, problem)
                for index, _path, problem in self._entries() if problem]

    def apply(self, wanted, state):
        """present: add missing paths; absent: remove them; exact: the file lists these paths
        and nothing else (comments stay). `wanted` holds normalised bytes. True if changed."""
        before = list(self.lines)
        wanted_set = set(wanted)
        if state in ('absent', 'exact'):
            drop = set()
            seen = set()
            for index, path, _problem in self._entries():
                unwanted = path in wanted_set if state == 'absent' else (path not in wanted_set or path in seen)
                if unwanted:
                    drop.add(index)
                seen.add(path)
            self.lines = [line for index, line in enumerate(self.lines) if index not in drop]
        if state in ('present', 'exact'):
            present = set(path for _index, path, _problem in self._entries())
            for path in wanted:
                if path not in present:
                    self.lines.append(path)
                    present.add(path)
        return self.lines != before
