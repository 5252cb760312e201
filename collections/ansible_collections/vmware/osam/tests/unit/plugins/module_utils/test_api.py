# -*- coding: utf-8 -*-
# Copyright: vmware.osam contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The REST API client. The HTTP layer (ansible's open_url) is replaced by the FakeReceiver or
by scripted failures: no receiver runs in unit tests (the live tests at the repository root,
tests/collection/test_modules_live.py, use a real one)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import io
import ssl
from urllib.error import HTTPError, URLError

import pytest

from ansible_collections.vmware.osam.plugins.module_utils import api
from ansible_collections.vmware.osam.plugins.module_utils.api import ApiError, OsamClient, guest_path
from ansible_collections.vmware.osam.tests.unit.fake_receiver import RO_TOKEN, RW_TOKEN


def client(conn, **kwargs):
    params = dict(conn, **kwargs)
    sleeps = []
    return OsamClient.from_params(params, sleep=sleeps.append), sleeps


def scripted(monkeypatch, outcomes):
    """open_url answers with these outcomes in turn: exceptions are raised, dicts returned as 200."""
    calls = []

    class Answer(object):
        def __init__(self, payload):
            self.payload = payload

        def getcode(self):
            return 200

        def read(self):
            return api.json.dumps(self.payload).encode('utf-8')

    def fake_open_url(url, **kwargs):
        calls.append((kwargs.get('method'), url))
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return Answer(outcome)

    monkeypatch.setattr(api, 'open_url', fake_open_url)
    return calls


def http_error(status, body):
    return HTTPError('https://x', status, 'error', {}, io.BytesIO(body))


def test_get_presents_token_client_certificate_and_pinned_ca(receiver, conn):
    receiver.add_guest('web01')
    guests = client(conn)[0].get('/v1/guests')
    assert [g['name'] for g in guests['guests']] == ['web01']
    call = receiver.calls[0]
    assert call['url'] == 'https://receiver.example.com:8444/v1/guests'
    assert call['headers']['Authorization'] == 'Bearer ' + RW_TOKEN
    assert call['ca_path'] == conn['ca_cert']
    assert (call['client_cert'], call['client_key']) == (conn['client_cert'], conn['client_key'])
    assert call['validate_certs'] is True and call['timeout'] == 30
    # The token must not travel anywhere else, and redirects must not carry it to another host.
    assert call['follow_redirects'] == 'none' and call['use_netrc'] is False


def test_post_sends_json(receiver, conn):
    receiver.add_guest('web01')
    answer = client(conn)[0].post('/v1/migrations', dict(guest='web01', switchover='manual'))
    assert answer['phase'] == 'registered'
    assert receiver.calls[0]['headers']['Content-Type'] == 'application/json'
    assert receiver.requests == [('POST', '/v1/migrations', dict(guest='web01', switchover='manual'))]


def test_missing_ok_turns_404_into_none(receiver, conn):
    assert client(conn)[0].get('/v1/migrations/web01', missing_ok=True) is None


def test_error_names_method_url_status_and_the_receivers_text(receiver, conn):
    with pytest.raises(ApiError) as raised:
        client(conn)[0].get('/v1/migrations/web01')
    error = raised.value
    assert error.message == 'GET https://receiver.example.com:8444/v1/migrations/web01: HTTP 404: no migration for guest web01'
    assert (error.status, error.error) == (404, 'no migration for guest web01')


def test_wrong_token_says_which_option_and_never_shows_a_token(receiver, conn):
    with pytest.raises(ApiError) as raised:
        client(conn, api_token='not-the-token')[0].get('/v1/guests')
    assert 'HTTP 401: invalid token' in raised.value.message
    assert 'api_token' in raised.value.message
    assert 'not-the-token' not in raised.value.message


def test_read_only_token_cannot_change(receiver, conn):
    receiver.add_guest('web01')
    with pytest.raises(ApiError) as raised:
        client(conn, api_token=RO_TOKEN)[0].post('/v1/migrations', dict(guest='web01', switchover='manual'))
    assert 'HTTP 403: this token is read-only' in raised.value.message
    assert RO_TOKEN not in raised.value.message


def test_reads_are_retried_with_growing_pauses_after_connection_failures(monkeypatch, conn):
    refused = URLError(ConnectionRefusedError(111, 'Connection refused'))
    calls = scripted(monkeypatch, [refused, refused, {'guests': []}])
    osam, sleeps = client(conn)
    assert osam.get('/v1/guests') == {'guests': []}
    assert len(calls) == 3 and sleeps == [1.0, 2.0]


def test_reads_give_up_after_three_attempts_and_say_so(monkeypatch, conn):
    calls = scripted(monkeypatch, [http_error(503, b'{"error": "internal error"}') for attempt in range(3)])
    with pytest.raises(ApiError) as raised:
        client(conn)[0].get('/v1/guests')
    assert len(calls) == 3
    assert raised.value.status == 503 and 'HTTP 503: internal error' in raised.value.message


def test_connection_failure_message_counts_the_attempts(monkeypatch, conn):
    refused = URLError(ConnectionRefusedError(111, 'Connection refused'))
    scripted(monkeypatch, [refused, refused, refused])
    with pytest.raises(ApiError) as raised:
        client(conn)[0].get('/v1/guests')
    assert raised.value.message == ('GET https://receiver.example.com:8444/v1/guests: cannot reach the receiver: '
                                    '[Errno 111] Connection refused (tried 3 times)')
    assert raised.value.status is None


@pytest.mark.parametrize('failure', [URLError(ConnectionResetError(104, 'reset')), None])
def test_changes_are_never_retried(monkeypatch, conn, failure):
    failure = failure or http_error(500, b'{"error": "internal error"}')
    calls = scripted(monkeypatch, [failure, {'phase': 'registered'}])
    with pytest.raises(ApiError):
        client(conn)[0].post('/v1/migrations', dict(guest='web01', switchover='manual'))
    assert calls == [('POST', 'https://receiver.example.com:8444/v1/migrations')]


def test_certificate_check_failure_is_not_retried_and_points_at_ca_cert(monkeypatch, conn):
    bad_ca = URLError(ssl.SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed'))
    calls = scripted(monkeypatch, [bad_ca, {}])
    with pytest.raises(ApiError) as raised:
        client(conn)[0].get('/v1/guests')
    assert len(calls) == 1
    assert 'TLS certificate check failed' in raised.value.message and 'ca_cert' in raised.value.message


def test_a_closed_connection_without_client_certificate_says_what_is_missing(monkeypatch, conn):
    closed = ConnectionResetError(104, 'Connection reset by peer')
    scripted(monkeypatch, [closed, closed, closed])
    with pytest.raises(ApiError) as raised:
        client(conn, client_cert=None, client_key=None)[0].get('/v1/guests')
    assert 'no client_cert was given' in raised.value.message


def test_an_answer_that_is_not_json_is_reported(monkeypatch, conn):
    scripted(monkeypatch, [http_error(502, b'<html>bad gateway</html>') for attempt in range(3)])
    with pytest.raises(ApiError) as raised:
        client(conn)[0].get('/v1/guests')
    assert 'answer is not JSON: <html>bad gateway</html>' in raised.value.message


@pytest.mark.parametrize('url', ['receiver:8444', 'ftp://receiver', ''])
def test_api_url_must_be_http(conn, url):
    with pytest.raises(ApiError, match='api_url must be an https:// URL'):
        client(conn, api_url=url)


def test_missing_certificate_files_are_named(conn, tmp_path):
    missing = str(tmp_path / 'nope.crt')
    with pytest.raises(ApiError) as raised:
        client(conn, ca_cert=missing)
    assert raised.value.message == 'ca_cert %s does not exist or is not a file' % missing


def test_guest_names_are_quoted_into_one_path_segment():
    assert guest_path('/v1/guests', 'web01') == '/v1/guests/web01'
    assert guest_path('/v1/migrations', 'a/../b', '/abort') == '/v1/migrations/a%2F..%2Fb/abort'


def test_trailing_slash_of_api_url_is_ignored(receiver, conn):
    client(conn, api_url='https://receiver.example.com:8444/')[0].get('/v1/guests')
    assert receiver.calls[0]['url'] == 'https://receiver.example.com:8444/v1/guests'
