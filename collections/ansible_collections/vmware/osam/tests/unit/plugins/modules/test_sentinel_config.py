# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vmware.osam.sentinel_config on real files in a temporary directory (nothing is mocked but the
module's entry: its arguments and its exit)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat

from ansible_collections.vmware.osam.plugins.modules import sentinel_config
from ansible_collections.vmware.osam.tests.unit.utils import fail_module, run_module

SETTINGS = dict(max_retry_interval=4, quiesce_services='postgresql, nginx',
                pre_quiesce_hook=['psql -c checkpoint'], final_verify='yes')


def run(tmp_path, check_mode=False, diff=False, **args):
    return run_module(sentinel_config.main, dict(args, etc_dir=str(tmp_path / 'osam')), check_mode, diff)


def mode_of(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_creates_both_files_with_their_directories(tmp_path):
    result = run(tmp_path, excluded_paths=['/var/log/', '/var/cache/apt'], sync_params=SETTINGS)
    assert result['changed'] and result['restart_needed']
    etc = tmp_path / 'osam'
    assert (etc / 'excluded_paths').read_bytes() == b'/var/log\n/var/cache/apt\n'
    assert (etc / 'etc' / 'sync.params').read_bytes() == (
        b'final_verify=yes\nmax_retry_interval=4\npre_quiesce_hook=psql -c checkpoint\n'
        b'quiesce_services=postgresql,nginx\n')
    assert mode_of(etc / 'excluded_paths') == 0o644 and mode_of(etc / 'etc' / 'sync.params') == 0o644
    assert mode_of(etc) == 0o755 and mode_of(etc / 'etc') == 0o755
    assert result['excluded_paths'] == ['/var/cache/apt', '/var/log']
    assert result['sync_params'] == dict(max_retry_interval=4, verify_interval=600, quiesce_timeout=120,
                                         quiesce_services=['postgresql', 'nginx'],
                                         pre_quiesce_hook=['psql -c checkpoint'], final_verify=True)


def test_second_run_changes_nothing_and_leaves_no_temporary_file(tmp_path):
    run(tmp_path, excluded_paths=['/var/log'], sync_params=SETTINGS)
    before = sorted(os.listdir(str(tmp_path / 'osam' / 'etc')))
    again = run(tmp_path, excluded_paths=['/var/log/'], sync_params=dict(SETTINGS, quiesce_services=['postgresql', 'nginx']))
    assert not again['changed'] and not again['restart_needed']
    assert sorted(os.listdir(str(tmp_path / 'osam' / 'etc'))) == before == ['sync.params']


def test_check_mode_reports_the_change_with_a_diff_and_writes_nothing(tmp_path):
    result = run(tmp_path, check_mode=True, diff=True, excluded_paths=['/srv/scratch'])
    assert result['changed'] and result['restart_needed']
    assert not (tmp_path / 'osam').exists()
    assert result['diff'] == [dict(before_header='%s (absent)' % (tmp_path / 'osam' / 'excluded_paths'),
                                   after_header=str(tmp_path / 'osam' / 'excluded_paths'),
                                   before='', after='/srv/scratch\n')]
    assert result['excluded_paths'] == ['/srv/scratch']


def test_an_operators_notes_survive_and_the_mode_of_an_existing_file_is_kept(tmp_path):
    etc = tmp_path / 'osam' / 'etc'
    etc.mkdir(parents=True)
    params = etc / 'sync.params'
    params.write_bytes(b'# agreed with the DBA team\nverify_interval=60\nmax_retry_interval=8\n')
    os.chmod(str(params), 0o600)
    result = run(tmp_path, diff=True, sync_params=dict(max_retry_interval=2))
    assert params.read_bytes() == b'# agreed with the DBA team\nverify_interval=60\nmax_retry_interval=2\n'
    assert mode_of(params) == 0o600
    assert result['diff'][0]['before'].endswith('max_retry_interval=8\n')
    assert result['sync_params']['verify_interval'] == 60


def test_null_and_exact_remove_keys(tmp_path):
    run(tmp_path, sync_params=SETTINGS)
    run(tmp_path, sync_params=dict(final_verify=None))
    assert b'final_verify' not in (tmp_path / 'osam' / 'etc' / 'sync.params').read_bytes()
    result = run(tmp_path, sync_params=dict(max_retry_interval=4), sync_params_state='exact')
    assert result['changed']
    assert (tmp_path / 'osam' / 'etc' / 'sync.params').read_bytes() == b'max_retry_interval=4\n'


def test_excluded_paths_states(tmp_path):
    run(tmp_path, excluded_paths=['/a', '/b'])
    assert run(tmp_path, excluded_paths=['/a'], excluded_paths_state='absent')['excluded_paths'] == ['/b']
    result = run(tmp_path, excluded_paths=['/c'], excluded_paths_state='exact')
    assert result['excluded_paths'] == ['/c']
    assert (tmp_path / 'osam' / 'excluded_paths').read_bytes() == b'/c\n'


def test_nothing_asked_reads_and_reports(tmp_path):
    result = run(tmp_path)
    assert not result['changed'] and not (tmp_path / 'osam').exists()
    assert result['excluded_paths'] == [] and result['sync_params']['max_retry_interval'] == 8


def test_removing_from_a_missing_file_creates_nothing(tmp_path):
    result = run(tmp_path, excluded_paths=['/a'], excluded_paths_state='absent', sync_params=dict(final_verify=None))
    assert not result['changed'] and not (tmp_path / 'osam').exists()


def test_values_the_sentinel_refuses_fail_the_task_before_any_write(tmp_path):
    result = fail_module(sentinel_config.main, dict(etc_dir=str(tmp_path / 'osam'), excluded_paths=['/ok'],
                                                    sync_params=dict(max_retry_interval=12)))
    assert result['msg'] == 'sync_params max_retry_interval must be a whole number of hours from 1 to 8, got 12'
    assert not (tmp_path / 'osam').exists()
    result = fail_module(sentinel_config.main, dict(etc_dir=str(tmp_path / 'osam'), excluded_paths=['var/log']))
    assert result['msg'] == "excluded_paths: excluded path must be absolute, got 'var/log'"


def test_lines_the_sentinel_will_refuse_are_warned_about(tmp_path):
    etc = tmp_path / 'osam' / 'etc'
    etc.mkdir(parents=True)
    (etc / 'sync.params').write_bytes(b'retries=3\n')
    result = run(tmp_path, sync_params=dict(max_retry_interval=8))
    assert result['warnings'] == ["%s line 1: unknown key 'retries' (known: final_verify, max_retry_interval, "
                                  "pre_quiesce_hook, quiesce_services, quiesce_timeout, verify_interval): "
                                  "the sentinel will refuse this line" % (etc / 'sync.params')]
