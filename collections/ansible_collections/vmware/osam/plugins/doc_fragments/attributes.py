# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """Attribute descriptions shared by the collection's modules; each module states its support."""

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Runs in check mode and reports whether it would change something, without changing it.
  diff_mode:
    description: In diff mode, returns what changed (or would change, in check mode) as before and after.
'''

    # For modules that only read.
    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it runs the same way in check mode.
  diff_mode:
    support: N/A
    details:
      - The module only reads.
'''

    # For the modules that talk to the receiver's REST API.
    ACTION_GROUP = r'''
options: {}
attributes:
  action_group:
    description: Set the connection options once for all modules of the group with C(group/vmware.osam.osam) in C(module_defaults).
    support: full
    membership:
      - vmware.osam.osam
'''
