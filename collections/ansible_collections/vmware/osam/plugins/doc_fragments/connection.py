# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """How the modules reach the receiver's REST API (argument spec: module_utils/argument_spec.py)."""

    DOCUMENTATION = r'''
options:
  api_url:
    description:
      - Base URL of the receiver's REST API, for example C(https://receiver.example.com:8444).
      - If not set, the value of the E(OSAM_API) environment variable is used.
    type: str
    required: true
  api_token:
    description:
      - Bearer token for the API, the content of the site's C(api-token) file (read-write) or
        C(api-token-ro) (read-only, enough for the C(_info) modules).
      - If not set, the value of the E(OSAM_TOKEN) environment variable is used.
    type: str
    required: true
  ca_cert:
    description:
      - The site's CA certificate (C(ca.crt) of the site PKI). When set, the receiver's
        certificate is checked against this CA only, not against the system's CAs.
      - If not set, the value of the E(OSAM_CA_CERT) environment variable is used.
    type: path
  client_cert:
    description:
      - Client certificate for mutual TLS, the site's C(admin.crt). The receiver refuses
        connections without a certificate signed by the site's CA.
      - If not set, the value of the E(OSAM_CLIENT_CERT) environment variable is used.
    type: path
  client_key:
    description:
      - Private key of O(client_cert), the site's C(admin.key).
      - If not set, the value of the E(OSAM_CLIENT_KEY) environment variable is used.
    type: path
  validate_certs:
    description:
      - Whether to check the receiver's certificate. Turn it off only to diagnose a
        connection, never in production.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the receiver's answer to one request.
      - Reads (GET) that fail to connect or get a server error (5xx) are retried a few times
        with a growing pause; changes are never retried.
    type: int
    default: 30
notes:
  - Set the connection options once for all of the collection's API modules with
    C(module_defaults) and C(group/vmware.osam.osam).
'''
