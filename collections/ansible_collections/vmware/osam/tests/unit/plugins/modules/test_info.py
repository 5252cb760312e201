# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vmware.osam.guest_info and migration_info against the FakeReceiver, which stands in for the
HTTP layer because no receiver runs in unit tests."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.vmware.osam.plugins.modules import guest_info, migration_info
from ansible_collections.vmware.osam.tests.unit.fake_receiver import RO_TOKEN
from ansible_collections.vmware.osam.tests.unit.utils import fail_module, run_module


def test_guest_info_lists_guests_with_their_facts(receiver, conn):
    receiver.add_guest('web01')
    receiver.add_guest('db01', connected=False)
    result = run_module(guest_info.main, dict(conn, api_token=RO_TOKEN))
    assert not result['changed']
    assert [(g['name'], g['connected'], g['inventory']['hostname']) for g in result['guests']] == [
        ('web01', True, 'web01'), ('db01', False, 'db01')]


def test_guest_info_returns_the_disk_layout_as_reported(receiver, conn):
    layout = dict(
        root='/', boot=dict(mode='bios', bootloader='grub2', boot_disk='sda', esp='', efi_files=[]),
        disks=[dict(name='sda', path='/dev/sda', size=3 << 30, partitions=[],
                    partition_table=dict(label='dos', id='0x8d3c2a1b', partitions=[]))],
        filesystems=[dict(device='/dev/sda1', fstype='ext4', uuid='6a0d7bb4-2f0e-4c43-8a4f-1f0b1a0b9c11',
                          label='root', size=2 << 30, mountpoint='/', options=dict(features=['has_journal']),
                          parent=dict(kind='partition', disk='sda', number=1))],
        lvm=dict(pvs=[], vgs=[], lvs=[]), mounts=[], errors=[])
    receiver.add_guest('web01')['inventory']['layout'] = layout
    [guest] = run_module(guest_info.main, dict(conn, name='web01'))['guests']
    assert guest['inventory']['layout'] == layout


def test_guest_info_for_one_guest_or_none(receiver, conn):
    receiver.add_guest('web01')
    assert [g['name'] for g in run_module(guest_info.main, dict(conn, name='web01'))['guests']] == ['web01']
    assert run_module(guest_info.main, dict(conn, name='ghost'))['guests'] == []


def test_guest_info_runs_in_check_mode(receiver, conn):
    receiver.add_guest('web01')
    assert len(run_module(guest_info.main, dict(conn), check_mode=True)['guests']) == 1


def test_migration_info_for_all_some_and_missing_guests(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync')
    receiver.add_migration('db01', 'completed')
    receiver.add_guest('idle01')
    everything = run_module(migration_info.main, dict(conn))['migrations']
    assert [(m['guest'], m['phase'], m['progress_percent']) for m in everything] == [
        ('web01', 'continuous_sync', 25.0), ('db01', 'completed', 25.0)]
    some = run_module(migration_info.main, dict(conn, guest=['db01', 'idle01', 'ghost']))['migrations']
    assert [m['guest'] for m in some] == ['db01']
    one = run_module(migration_info.main, dict(conn, guest='web01'))['migrations'][0]
    assert one['history'][0]['to'] == 'registered' and one['lag'] == 0.5 and one['eta'] == 9.0


def test_migration_info_shows_the_window_and_a_missed_one(receiver, conn):
    receiver.add_migration('web01', 'continuous_sync', 'at', '2026-12-06T01:00:00.000Z',
                           window_end='2026-12-06T03:00:00.000Z', missed=True)
    receiver.add_migration('db01', 'continuous_sync', 'at', '2030-12-06T01:00:00.000Z',
                           window_end='2030-12-06T03:00:00.000Z')
    web01, db01 = run_module(migration_info.main, dict(conn, api_token=RO_TOKEN))['migrations']
    assert web01['switchover_window_end'] == '2026-12-06T03:00:00.000Z'
    assert web01['switchover_window_missed_at'] == '2026-12-06T03:00:00.000Z'
    assert web01['switchover_note'] == ('switchover window 2026-12-06T01:00:00.000Z to 2026-12-06T03:00:00.000Z '
                                        'missed: waiting for a new time')
    assert db01['switchover_window_end'] == '2030-12-06T03:00:00.000Z'
    assert db01['switchover_window_missed_at'] is None and db01['switchover_note'] is None


def test_info_failure_names_the_url_and_the_reason(receiver, conn):
    result = fail_module(migration_info.main, dict(conn, api_token='wrong-token'))
    assert result['msg'].startswith('GET https://receiver.example.com:8444/v1/migrations: HTTP 401: invalid token')
    assert 'wrong-token' not in result['msg']
