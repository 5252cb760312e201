# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a module's main() in-process and get its result back as a dict."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19
    import contextlib

    @contextlib.contextmanager
    def patch_module_args(args=None):
        data = to_bytes(json.dumps(dict(ANSIBLE_MODULE_ARGS=args or {})))
        with mock.patch.object(basic, '_ANSIBLE_ARGS', data):
            yield


class ModuleExit(Exception):
    def __init__(self, result):
        super(ModuleExit, self).__init__(result)
        self.result = result


class ModuleFail(Exception):
    def __init__(self, result):
        super(ModuleFail, self).__init__(result.get('msg'))
        self.result = result


def _exit_json(self, **result):
    result.setdefault('changed', False)
    result['warnings'] = list(getattr(self, '_osam_warnings', []))
    raise ModuleExit(result)


def _fail_json(self, msg, **result):
    result['msg'] = msg
    result['failed'] = True
    raise ModuleFail(result)


def _warn(self, warning):
    self.__dict__.setdefault('_osam_warnings', []).append(warning)


def _call(main, args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, 'exit_json', _exit_json), \
            mock.patch.object(basic.AnsibleModule, 'fail_json', _fail_json), \
            mock.patch.object(basic.AnsibleModule, 'warn', _warn):
        main()


def run_module(main, args, check_mode=False, diff=False):
    """The result of a module run that must succeed (with its warnings under 'warnings')."""
    with pytest.raises(ModuleExit) as exited:
        _call(main, args, check_mode, diff)
    return exited.value.result


def fail_module(main, args, check_mode=False, diff=False):
    """The result of a module run that must fail."""
    with pytest.raises(ModuleFail) as failed:
        _call(main, args, check_mode, diff)
    return failed.value.result
