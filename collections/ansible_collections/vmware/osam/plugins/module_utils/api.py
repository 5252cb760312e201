# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one client of the receiver's REST API.

HTTPS through ansible's open_url: the server is checked against the site's CA only (ca_cert),
the client shows the site's admin certificate (mutual TLS) and a bearer token. Reads are
retried with a growing pause when the connection fails or the server errs (5xx); changes are
sent once, since a POST that reached the receiver before the link broke must not run twice.
Every error names the method and URL and carries the receiver's own {"error": ...} text.
The token goes only into the Authorization header, never into a message.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import socket
import ssl
import time
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import SSLValidationError, open_url

RETRIES = 3              # attempts of a read in all
BACKOFF = 1.0            # seconds before the second attempt, doubled each time after


class ApiError(Exception):
    """A request failed. `status` is the HTTP status, or None when no answer came."""

    def __init__(self, message, method=None, url=None, status=None, error=None):
        super(ApiError, self).__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.error = error      # the receiver's {"error": ...} text, if it sent one

    def as_result(self):
        """Fields for fail_json besides msg."""
        return dict(status=self.status, url=self.url, method=self.method)


class _NoAnswer(Exception):
    """The request got no HTTP answer; `retry` says whether trying again can help."""

    def __init__(self, reason, retry):
        super(_NoAnswer, self).__init__(reason)
        self.reason = reason
        self.retry = retry


def guest_path(prefix, name, suffix=''):
    """An API path with a guest's name in it, quoted so a stray '/' cannot change the route."""
    return '%s/%s%s' % (prefix, quote(name, safe=''), suffix)


class OsamClient(object):
    def __init__(self, api_url, api_token, ca_cert=None, client_cert=None, client_key=None,
                 validate_certs=True, timeout=30, retries=RETRIES, backoff=BACKOFF, sleep=None):
        if not api_url or not api_url.startswith(('https://', 'http://')):
            raise ApiError('api_url must be an https:// URL, got %r' % (api_url,))
        for option, path in (('ca_cert', ca_cert), ('client_cert', client_cert), ('client_key', client_key)):
            if path and not os.path.isfile(path):
                raise ApiError('%s %s does not exist or is not a file' % (option, path))
        self.base_url = api_url.rstrip('/')
        self._token = api_token
        self.ca_cert = ca_cert
        self.client_cert = client_cert
        self.client_key = client_key
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff
        self._sleep = sleep or time.sleep

    @classmethod
    def from_params(cls, params, **kwargs):
        return cls(params['api_url'], params['api_token'], ca_cert=params.get('ca_cert'),
                   client_cert=params.get('client_cert'), client_key=params.get('client_key'),
                   validate_certs=params.get('validate_certs', True), timeout=params.get('timeout', 30), **kwargs)

    # -- the verbs the modules use ----------------------------------------------------------
    def get(self, path, missing_ok=False):
        """The JSON answer of a GET; None for a 404 when `missing_ok`."""
        try:
            return self.request('GET', path)
        except ApiError as error:
            if missing_ok and error.status == 404:
                return None
            raise

    def post(self, path, body=None):
        return self.request('POST', path, body)

    def delete(self, path):
        return self.request('DELETE', path)

    # -- one request ------------------------------------------------------------------------
    def request(self, method, path, body=None):
        url = self.base_url + path
        attempts = self.retries if method == 'GET' else 1
        pause = self.backoff
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                status, payload = self._exchange(method, url, body)
            except _NoAnswer as failure:
                if failure.retry and not last:
                    self._sleep(pause)
                    pause *= 2
                    continue
                tried = ' (tried %d times)' % attempt if attempt > 1 else ''
                hint = '' if self.client_cert else _NO_CLIENT_CERT
                raise ApiError('%s %s: %s%s%s' % (method, url, failure.reason, tried, hint), method, url)
            if status >= 500 and not last:
                self._sleep(pause)
                pause *= 2
                continue
            if status >= 400:
                raise self._refusal(method, url, status, payload)
            return payload

    def _exchange(self, method, url, body):
        """(status, parsed JSON) of one HTTP exchange; _NoAnswer when none came."""
        headers = {'Authorization': 'Bearer %s' % self._token, 'Accept': 'application/json'}
        data = None
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        try:
            response = open_url(url, data=data, headers=headers, method=method, timeout=self.timeout,
                                validate_certs=self.validate_certs, ca_path=self.ca_cert,
                                client_cert=self.client_cert, client_key=self.client_key,
                                follow_redirects='none', use_netrc=False)
            return response.getcode(), _parse(response.read())
        except HTTPError as error:
            try:
                raw = error.read()
            except Exception:  # the error body is a courtesy; the status is what matters
                raw = b''
            return error.code, _parse(raw)
        except URLError as error:
            raise _describe_no_answer(error.reason)
        except (SSLValidationError, UrlsConnectionError) as error:
            raise _NoAnswer('TLS or connection failure: %s' % to_native(error), retry=False)
        except (ssl.SSLError, socket.timeout, HTTPException, OSError) as error:
            raise _describe_no_answer(error)

    @staticmethod
    def _refusal(method, url, status, payload):
        error = payload.get('error') if isinstance(payload, dict) else None
        detail = error or _STATUS_HINTS.get(status, 'no error text in the answer')
        hint = _STATUS_ADVICE.get(status, '')
        message = '%s %s: HTTP %d: %s%s' % (method, url, status, detail, hint)
        return ApiError(message, method, url, status, error)


_NO_CLIENT_CERT = ('; no client_cert was given, and the receiver closes connections that do not '
                   'show a certificate of the site (admin.crt and admin.key)')
_STATUS_HINTS = {401: 'unauthorized', 403: 'forbidden', 404: 'not found', 409: 'conflict'}
_STATUS_ADVICE = {
    401: ' (check api_token: it must be the content of the site\'s api-token file)',
    403: ' (a read-only token cannot change migrations: use the api-token file)',
}


def _parse(raw):
    if not raw:
        return {}
    try:
        return json.loads(to_text(raw, errors='surrogate_or_replace'))
    except ValueError:
        return {'error': 'answer is not JSON: %s' % to_text(raw[:200], errors='surrogate_or_replace')}


def _describe_no_answer(reason):
    """Say why no answer came, with what to check, and whether a retry can help."""
    text = to_native(reason)
    if isinstance(reason, ssl.SSLCertVerificationError) or 'certificate verify failed' in text:
        return _NoAnswer('TLS certificate check failed: %s (is ca_cert the site\'s ca.crt, and does '
                         'api_url name a host in the receiver certificate?)' % text, retry=False)
    if isinstance(reason, ssl.SSLError):
        return _NoAnswer('TLS handshake failed: %s (the receiver wants client_cert and client_key '
                         'signed by the site\'s CA)' % text, retry=False)
    if isinstance(reason, socket.timeout):
        return _NoAnswer('no answer within the timeout: %s' % text, retry=True)
    return _NoAnswer('cannot reach the receiver: %s' % text, retry=True)
