# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Editing the sentinel's files line by line with the sentinel's own rules. (That the sentinel
reads the result as meant is checked against its real parser in tests/collection at the
repository root, where the osam package is installed.)"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmware.osam.plugins.module_utils.sentinel_files import (
    DEFAULTS, UNUSABLE, ExcludedPaths, SyncParams, normalize_param, normalize_path)

NOTES = b'# tuned for the billing database\nmax_retry_interval = 4\n\nverify_interval=30\n'


def test_setting_a_key_keeps_comments_blank_lines_and_other_keys():
    params = SyncParams(NOTES)
    assert params.set('max_retry_interval', 2)
    assert params.data() == b'# tuned for the billing database\nmax_retry_interval=2\n\nverify_interval=30\n'


def test_a_key_that_already_means_the_value_is_not_rewritten():
    params = SyncParams(NOTES)
    assert not params.set('max_retry_interval', 4)   # written " = 4", same meaning
    assert not params.set('final_verify', None)      # absent and asked absent
    assert params.data() == NOTES


def test_new_keys_go_to_the_end_and_lists_become_lines():
    params = SyncParams(NOTES)
    params.set('pre_quiesce_hook', ['pg_ctl stop -m fast', 'sync'])
    params.set('quiesce_services', ['nginx', 'postgresql'])
    params.set('final_verify', True)
    assert params.data().splitlines()[-4:] == [
        b'pre_quiesce_hook=pg_ctl stop -m fast', b'pre_quiesce_hook=sync',
        b'quiesce_services=nginx,postgresql', b'final_verify=yes']


def test_repeated_lines_are_replaced_where_the_first_stood():
    params = SyncParams(b'pre_quiesce_hook=a\nverify_interval=5\npre_quiesce_hook=b\n')
    assert params.current('pre_quiesce_hook') == ['a', 'b']
    assert params.set('pre_quiesce_hook', ['c'])
    assert params.data() == b'pre_quiesce_hook=c\nverify_interval=5\n'


def test_services_on_several_lines_add_up_like_the_sentinel_reads_them():
    params = SyncParams(b'quiesce_services=nginx\nquiesce_services= postgresql , redis\n')
    assert not params.set('quiesce_services', ['nginx', 'postgresql', 'redis'])


def test_none_removes_every_line_of_the_key():
    params = SyncParams(NOTES)
    assert params.set('verify_interval', None)
    assert params.data() == b'# tuned for the billing database\nmax_retry_interval = 4\n\n'


def test_lines_the_sentinel_would_refuse_are_reported_and_replaced_when_managed():
    params = SyncParams(b'max_retry_interval=12\nmax_retry_interval=3\nbogus=1\nno equals sign\n')
    assert params.current('max_retry_interval') is UNUSABLE
    assert params.problems() == [
        'line 1: max_retry_interval must be a whole number of hours from 1 to 8, got \'12\'',
        'line 2: max_retry_interval already set on line 1',
        'line 3: unknown key \'bogus\' (known: final_verify, max_retry_interval, pre_quiesce_hook, '
        'quiesce_services, quiesce_timeout, verify_interval)',
        "line 4: expected key=value, got 'no equals sign'",
    ]
    assert params.set('max_retry_interval', 3)
    assert params.data() == b'max_retry_interval=3\nbogus=1\nno equals sign\n'


def test_effective_settings_are_defaults_overridden_by_the_file():
    effective = SyncParams(NOTES + b'final_verify=on\n').effective()
    assert effective == dict(DEFAULTS, max_retry_interval=4, verify_interval=30, final_verify=True)
    assert SyncParams().effective() == DEFAULTS


@pytest.mark.parametrize('key, value, expected', [
    ('max_retry_interval', 8, 8), ('max_retry_interval', '1', 1), ('verify_interval', 0, 0),
    ('quiesce_timeout', '90', 90), ('final_verify', 'yes', True), ('final_verify', False, False),
    ('final_verify', 'off', False), ('quiesce_services', 'a, b', ['a', 'b']),
    ('quiesce_services', ['a', 'b@c.service'], ['a', 'b@c.service']), ('quiesce_services', [], None),
    ('pre_quiesce_hook', ' systemctl stop app ', ['systemctl stop app']),
    ('pre_quiesce_hook', ['a', 'b'], ['a', 'b']), ('max_retry_interval', None, None),
])
def test_task_values_are_normalised(key, value, expected):
    assert normalize_param(key, value) == expected


@pytest.mark.parametrize('key, value, message', [
    ('max_retry_interval', 9, 'max_retry_interval must be a whole number of hours from 1 to 8, got 9'),
    ('max_retry_interval', 0, 'from 1 to 8'),
    ('max_retry_interval', True, 'must be a whole number'),
    ('max_retry_interval', 2.5, 'must be a whole number'),
    ('verify_interval', -1, 'whole number of seconds, at least 0'),
    ('quiesce_timeout', 0, 'whole number of seconds, at least 1'),
    ('quiesce_services', 'nginx; rm -rf /', 'comma-separated list of service names'),
    ('final_verify', 'maybe', 'must be yes or no'),
    ('pre_quiesce_hook', ['ok', ''], 'non-empty shell commands'),
    ('pre_quiesce_hook', 'a\nb', 'one-line shell commands'),
    ('max_retries', 3, "unknown sync_params key 'max_retries'"),
])
def test_values_the_sentinel_would_refuse_are_refused(key, value, message):
    with pytest.raises(ValueError) as raised:
        normalize_param(key, value)
    assert message in str(raised.value)


@pytest.mark.parametrize('path, normal', [
    (b'/var/log/', b'/var/log'), (b'//srv//data/.', b'/srv/data'), (b'/a/b/../c', b'/a/c'),
    (b'/opt/caf\xe9', b'/opt/caf\xe9'),
])
def test_paths_are_normalised_like_the_sentinel(path, normal):
    assert normalize_path(path) == normal


@pytest.mark.parametrize('path, message', [
    (b'var/log', 'must be absolute'), (b'/', 'exclude everything'), (b'//', 'exclude everything'),
    (b'/a\0b', 'NUL byte'),
])
def test_paths_the_sentinel_refuses(path, message):
    with pytest.raises(ValueError, match=message):
        normalize_path(path)


EXCLUDED = b'# churns all day\n/var/log\n\n  /var/cache/apt/  \n/tmp/caf\xe9\n'


def test_present_adds_only_what_is_missing():
    excluded = ExcludedPaths(EXCLUDED)
    assert not excluded.apply([b'/var/log', b'/var/cache/apt'], 'present')
    assert excluded.apply([b'/srv/scratch', b'/var/log'], 'present')
    assert excluded.data() == EXCLUDED + b'/srv/scratch\n'


def test_absent_removes_every_spelling_of_a_path():
    excluded = ExcludedPaths(EXCLUDED + b'/var/log/\n')
    assert excluded.apply([b'/var/log'], 'absent')
    assert excluded.data() == b'# churns all day\n\n  /var/cache/apt/  \n/tmp/caf\xe9\n'
    assert not excluded.apply([b'/var/log'], 'absent')


def test_exact_keeps_comments_drops_others_duplicates_and_unusable_lines():
    excluded = ExcludedPaths(EXCLUDED + b'relative/path\n/var/log/\n')
    assert excluded.apply([b'/var/cache/apt', b'/home'], 'exact')
    assert excluded.data() == b'# churns all day\n\n  /var/cache/apt/  \n/home\n'
    assert excluded.paths() == [b'/home', b'/var/cache/apt']
    assert not excluded.apply([b'/home', b'/var/cache/apt'], 'exact')


def test_exact_with_nothing_empties_the_list_but_keeps_the_notes():
    excluded = ExcludedPaths(EXCLUDED)
    assert excluded.apply([], 'exact')
    assert excluded.data() == b'# churns all day\n\n'


def test_a_file_without_final_newline_gets_one_when_a_path_is_added():
    excluded = ExcludedPaths(b'/var/log')
    excluded.apply([b'/srv'], 'present')
    assert excluded.data() == b'/var/log\n/srv\n'


def test_unusable_path_lines_are_reported():
    assert ExcludedPaths(b'# ok\nrelative\n/\n').problems() == [
        "line 2: excluded path must be absolute, got 'relative'", 'line 3: excluding / would exclude everything']
