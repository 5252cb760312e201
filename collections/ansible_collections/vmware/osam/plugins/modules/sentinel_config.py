#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sentinel_config
short_description: Manage the sentinel's excluded paths and sync parameters on a guest
description:
  - Edits the two files the sentinel (service C(vmware-hcx-osam-sentinel)) reads when it starts,
    under O(etc_dir) on the guest, with the same rules the sentinel uses to read them.
  - C(excluded_paths) lists one absolute path per line. Excluded paths are left out of continuous
    sync only; the full sync and the final sync always carry them.
  - C(etc/sync.params) holds C(key=value) lines, see O(sync_params).
  - Comments, blank lines and keys the task does not name are kept as they are. A key whose
    current lines already mean the wanted value is not rewritten.
  - Files are replaced atomically. New files and directories get mode C(0644) and C(0755).
  - The sentinel reads these files only when it starts; restart the service when
    RV(restart_needed) is true (a handler notified by this task does exactly that).
  - Runs on the guest itself and needs nothing but Python there.
version_added: 0.1.0
author:
  - vmware.osam contributors (@vmware-osam)
options:
  etc_dir:
    description:
      - The sentinel's configuration directory (its C(--etc) option).
    type: path
    default: /opt/vmware/hcx/osam
  excluded_paths:
    description:
      - Absolute paths on the guest to leave out of continuous sync. A directory excludes
        everything below it.
      - Paths are normalised as the sentinel does (C(/var/log/) is C(/var/log)); C(/) is refused.
      - When not given, C(excluded_paths) is left alone.
    type: list
    elements: str
  excluded_paths_state:
    description:
      - V(present) adds the paths of O(excluded_paths) the file does not list yet.
      - V(absent) removes them from the file.
      - V(exact) makes the file list these paths and no others (an empty list removes every
        path); comments stay.
    type: str
    choices: [present, absent, exact]
    default: present
  sync_params:
    description:
      - Settings for C(etc/sync.params). A key set to V(null) (or an empty list) is removed
        from the file, so the sentinel's default applies again.
      - V(max_retry_interval) hours a dropped link is retried before the migration fails, a
        whole number from 1 to 8 (default 8).
      - V(verify_interval) seconds between verifying walks, 0 turns them off (default 600).
      - V(quiesce_timeout) seconds allowed for each quiesce hook and for stopping services, at
        least 1 (default 120).
      - V(quiesce_services) extra services to stop at quiesce, a list or a comma-separated string.
      - V(pre_quiesce_hook) shell commands run before services stop, a string or a list (one
        line each, run in order).
      - V(final_verify) whether the final sync also walks the whole tree (default V(false)).
      - Values are checked as the sentinel checks them; anything it would refuse fails the task.
      - When not given, C(etc/sync.params) is left alone.
    type: dict
  sync_params_state:
    description:
      - V(present) sets the keys of O(sync_params) and leaves other keys alone.
      - V(exact) also removes the keys O(sync_params) does not name.
    type: str
    choices: [present, exact]
    default: present
extends_documentation_fragment:
  - vmware.osam.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - Shows each changed file before and after.
notes:
  - Lines the sentinel would refuse and the task does not replace are reported as warnings.
seealso:
  - module: vmware.osam.migration
'''

EXAMPLES = r'''
- name: Keep logs and caches out of continuous sync, retry a dropped link for 4 hours
  vmware.osam.sentinel_config:
    excluded_paths:
      - /var/log
      - /var/cache/apt
    sync_params:
      max_retry_interval: 4
      quiesce_services: [postgresql, nginx]
      pre_quiesce_hook:
        - systemctl reload nginx
  notify: Restart vmware-hcx-osam-sentinel

- name: The file lists exactly these paths, whatever was there before
  vmware.osam.sentinel_config:
    excluded_paths: [/srv/scratch]
    excluded_paths_state: exact

- name: Back to the default retry interval
  vmware.osam.sentinel_config:
    sync_params:
      max_retry_interval: null
'''

RETURN = r'''
excluded_paths:
  description: The paths the sentinel excludes after a restart, normalised and sorted.
  returned: always
  type: list
  elements: str
  sample: [/var/cache/apt, /var/log]
sync_params:
  description:
    - The settings the sentinel uses after a restart, the file's values over the defaults.
  returned: always
  type: dict
  sample:
    max_retry_interval: 4
    verify_interval: 600
    quiesce_timeout: 120
    quiesce_services: [postgresql, nginx]
    pre_quiesce_hook: [systemctl reload nginx]
    final_verify: false
restart_needed:
  description: Whether a file changed (or would change in check mode), so the sentinel must be restarted to load it.
  returned: always
  type: bool
  sample: true
files:
  description: The paths of the two files.
  returned: always
  type: dict
  sample:
    excluded_paths: /opt/vmware/hcx/osam/excluded_paths
    sync_params: /opt/vmware/hcx/osam/etc/sync.params
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.vmware.osam.plugins.module_utils.sentinel_files import (
    EXCLUDED_PATHS, KNOWN_KEYS, SYNC_PARAMS, ExcludedPaths, SyncParams, normalize_param, normalize_path)

FILE_MODE = 0o644
DIR_MODE = 0o755


def read_file(path):
    """The file's bytes, or None when it does not exist (the sentinel then uses defaults)."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_file(module, path, data):
    """Replace `path` with `data` atomically; new files get FILE_MODE."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, DIR_MODE)
    creating = not os.path.exists(path)
    fd, tmp = tempfile.mkstemp(prefix='.osam-', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if creating:
        os.chmod(path, FILE_MODE)


def file_diff(path, before, after):
    return {
        'before_header': path if before is not None else '%s (absent)' % path,
        'after_header': path,
        'before': to_text(before or b'', errors='surrogate_then_replace'),
        'after': to_text(after, errors='surrogate_then_replace'),
    }


def wanted_paths(module):
    wanted = []
    for path in module.params['excluded_paths']:
        try:
            normal = normalize_path(to_bytes(path.strip(' \t'), errors='surrogate_or_strict'))
        except ValueError as error:
            module.fail_json(msg='excluded_paths: %s' % to_native(error))
        if normal not in wanted:
            wanted.append(normal)
    return wanted


def wanted_params(module):
    params = module.params['sync_params']
    wanted = {}
    for key in sorted(params):
        try:
            wanted[key] = normalize_param(key, params[key])
        except ValueError as error:
            module.fail_json(msg=to_native(error))
    if module.params['sync_params_state'] == 'exact':
        for key in KNOWN_KEYS:
            wanted.setdefault(key, None)
    return wanted


def main():
    module = AnsibleModule(
        argument_spec=dict(
            etc_dir=dict(type='path', default='/opt/vmware/hcx/osam'),
            excluded_paths=dict(type='list', elements='str'),
            excluded_paths_state=dict(type='str', choices=['present', 'absent', 'exact'], default='present'),
            sync_params=dict(type='dict'),
            sync_params_state=dict(type='str', choices=['present', 'exact'], default='present'),
        ),
        supports_check_mode=True,
    )
    etc_dir = module.params['etc_dir']
    paths_file = os.path.join(etc_dir, EXCLUDED_PATHS)
    params_file = os.path.join(etc_dir, SYNC_PARAMS)

    try:
        paths_before = read_file(paths_file)
        params_before = read_file(params_file)
    except (IOError, OSError) as error:
        module.fail_json(msg='cannot read the sentinel configuration under %s: %s' % (etc_dir, to_native(error)))

    excluded = ExcludedPaths(paths_before or b'')
    if module.params['excluded_paths'] is not None:
        excluded.apply(wanted_paths(module), module.params['excluded_paths_state'])
    sync_params = SyncParams(params_before or b'')
    if module.params['sync_params'] is not None:
        for key, value in wanted_params(module).items():
            sync_params.set(key, value)

    changes = []
    for path, before, after in ((paths_file, paths_before, excluded.data()),
                                (params_file, params_before, sync_params.data())):
        # An absent file and an empty one mean the same to the sentinel: do not create it for nothing.
        if after != (before or b''):
            changes.append((path, before, after))

    for path, problems in ((paths_file, excluded.problems()), (params_file, sync_params.problems())):
        for problem in problems:
            module.warn('%s %s: the sentinel will refuse this line' % (path, problem))

    if changes and not module.check_mode:
        for path, _before, after in changes:
            try:
                write_file(module, path, after)
            except (IOError, OSError) as error:
                module.fail_json(msg='cannot write %s: %s' % (path, to_native(error)))

    result = dict(
        changed=bool(changes),
        restart_needed=bool(changes),
        excluded_paths=[to_text(p, errors='surrogate_then_replace') for p in excluded.paths()],
        sync_params=sync_params.effective(),
        files=dict(excluded_paths=paths_file, sync_params=params_file),
    )
    if module._diff:
        result['diff'] = [file_diff(path, before, after) for path, before, after in changes]
    module.exit_json(**result)


if __name__ == '__main__':
    main()
