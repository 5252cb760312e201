# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmware.osam.plugins.module_utils import api
from ansible_collections.vmware.osam.tests.unit.fake_receiver import RW_TOKEN, FakeReceiver


@pytest.fixture
def receiver(monkeypatch):
    """A FakeReceiver in place of the HTTP layer; retries do not sleep."""
    fake = FakeReceiver()
    monkeypatch.setattr(api, 'open_url', fake.open_url)
    monkeypatch.setattr(api.time, 'sleep', lambda seconds: None)
    return fake


@pytest.fixture
def conn(tmp_path):
    """Connection options as a play would pass them (the files exist; the fake ignores them)."""
    for name in ('ca.crt', 'admin.crt', 'admin.key'):
        (tmp_path / name).write_text(u'not read by the fake\n')
    return dict(api_url='https://receiver.example.com:8444', api_token=RW_TOKEN,
                ca_cert=str(tmp_path / 'ca.crt'), client_cert=str(tmp_path / 'admin.crt'),
                client_key=str(tmp_path / 'admin.key'))
