# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The connection options every REST API module shares (documented by the
vmware.osam.connection doc fragment; keep the two in step)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.module_utils.basic import env_fallback


def connection_argument_spec():
    return dict(
        api_url=dict(type='str', required=True, fallback=(env_fallback, ['OSAM_API'])),
        api_token=dict(type='str', required=True, no_log=True, fallback=(env_fallback, ['OSAM_TOKEN'])),
        ca_cert=dict(type='path', fallback=(env_fallback, ['OSAM_CA_CERT'])),
        client_cert=dict(type='path', fallback=(env_fallback, ['OSAM_CLIENT_CERT'])),
        # A path to the key, not the key itself.
        client_key=dict(type='path', no_log=False, fallback=(env_fallback, ['OSAM_CLIENT_KEY'])),
        validate_certs=dict(type='bool', default=True),
        timeout=dict(type='int', default=30),
    )


def api_argument_spec(**module_options):
    """The connection options plus a module's own."""
    spec = connection_argument_spec()
    spec.update(module_options)
    return spec
