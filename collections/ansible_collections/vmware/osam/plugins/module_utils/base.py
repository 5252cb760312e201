# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What every REST API module starts with: the shared connection options and a client."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError, OsamClient
from ansible_collections.vmware.osam.plugins.module_utils.argument_spec import api_argument_spec


class OsamApiModule(AnsibleModule):
    """An AnsibleModule with the connection options and `client`, an OsamClient."""

    def __init__(self, argument_spec, **kwargs):
        super(OsamApiModule, self).__init__(argument_spec=api_argument_spec(**argument_spec), **kwargs)
        try:
            self.client = OsamClient.from_params(self.params)
        except ApiError as error:
            self.fail_json(msg=error.message)

    def fail_api(self, error, **result):
        """Fail with the message of an ApiError and where it happened."""
        result.update(error.as_result())
        self.fail_json(msg=error.message, **result)
