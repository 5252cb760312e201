"""The REST API: route() directly for auth, routing and validation; then real HTTP/1.1 on loopback."""
import asyncio
import json
import logging

import h11
import pytest

from osam.controller import Controller
from osam.receiver import api
from osam.receiver.api import handle_api_connection, route

RW, RO = "rw-token-0123456789", "ro-token-9876543210"
TOKENS = {RW: "rw", RO: "ro"}


@pytest.fixture
def ctl(tmp_path):
    controller = Controller(str(tmp_path / "controller.sqlite"))
    controller.register_guest("web01", {"os": "debian"}, "0.1.0")
    yield controller
    controller.close()


def call(ctl, method, path, body=None, token=RW, headers=None):
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return route(method, path, all_headers, raw, ctl, TOKENS)


# -- authentication ---------------------------------------------------------------------------

def test_health_needs_no_token(ctl):
    status, body = call(ctl, "GET", "/v1/health", token=None)
    assert status == 200 and body["status"] == "ok"


def test_missing_token_is_401(ctl):
    assert call(ctl, "GET", "/v1/guests", token=None)[0] == 401


@pytest.mark.parametrize("value", ["Bearer nope", "Bearer " + RW + "x", "Basic " + RW, "Bearer",
                                   RW])
def test_wrong_or_malformed_token_is_401(ctl, value):
    status, body = route("GET", "/v1/guests", {"Authorization": value}, b"", ctl, TOKENS)
    assert status == 401 and "error" in body
    assert RW not in json.dumps(body)


def test_unknown_paths_need_a_token_before_404(ctl):
    assert call(ctl, "GET", "/v1/secrets", token=None)[0] == 401
    assert call(ctl, "GET", "/v1/secrets")[0] == 404


def test_read_only_token_reads_but_cannot_write(ctl):
    assert call(ctl, "GET", "/v1/guests", token=RO)[0] == 200
    assert call(ctl, "GET", "/v1/migrations", token=RO)[0] == 200
    status, body = call(ctl, "POST", "/v1/migrations", {"guest": "web01"}, token=RO)
    assert status == 403 and "read-only" in body["error"]
    assert call(ctl, "POST", "/v1/migrations/web01/abort", token=RO)[0] == 403
    assert call(ctl, "DELETE", "/v1/migrations/web01/switchover", token=RO)[0] == 403
    assert ctl.migration("web01") is None


WRITE_ROUTES = [(method, template.replace("{name}", "web01")) for method, template, access, _, _ in api.ROUTES
                if access == api.WRITE]


@pytest.mark.parametrize("method,path", WRITE_ROUTES)
def test_every_write_endpoint_refuses_a_read_only_a_wrong_and_no_token(ctl, method, path):
    ctl.start_migration("web01")
    before = ctl.migration("web01")
    assert call(ctl, method, path, {"guest": "web01"}, token=RO)[0] == 403
    assert call(ctl, method, path, {"guest": "web01"}, token="not-a-token")[0] == 401
    assert call(ctl, method, path, {"guest": "web01"}, token=None)[0] == 401
    assert ctl.migration("web01") == before       # nothing changed


def test_headers_may_be_raw_h11_pairs(ctl):
    status, _ = route(b"GET", b"/v1/guests", [(b"authorization", f"Bearer {RO}".encode())], b"",
                      ctl, TOKENS)
    assert status == 200


def test_the_token_is_never_logged(ctl, caplog):
    async def exchange():
        return await http_exchange(ctl, [("GET", "/v1/guests", None, RW),
                                         ("GET", "/v1/guests", None, "bad-" + RW)])
    with caplog.at_level(logging.DEBUG):
        asyncio.run(exchange())
    assert caplog.records and RW not in caplog.text


# -- endpoints --------------------------------------------------------------------------------

def test_guests(ctl):
    status, body = call(ctl, "GET", "/v1/guests")
    assert status == 200 and [g["name"] for g in body["guests"]] == ["web01"]
    status, body = call(ctl, "GET", "/v1/guests/web01")
    assert status == 200 and body["inventory"] == {"os": "debian"}
    assert call(ctl, "GET", "/v1/guests/db01")[0] == 404


def test_start_migration_201_then_200_then_409(ctl):
    status, body = call(ctl, "POST", "/v1/migrations", {"guest": "web01"})
    assert status == 201 and body["phase"] == "registered" and body["switchover"] == "manual"
    status, again = call(ctl, "POST", "/v1/migrations", {"guest": "web01", "switchover": "manual"})
    assert status == 200 and again["id"] == body["id"]
    status, conflict = call(ctl, "POST", "/v1/migrations", {"guest": "web01", "switchover": "immediate"})
    assert status == 409 and "active migration" in conflict["error"]
    assert call(ctl, "POST", "/v1/migrations", {"guest": "db01"})[0] == 404


def test_migration_queries(ctl):
    assert call(ctl, "GET", "/v1/migrations/web01")[0] == 404
    call(ctl, "POST", "/v1/migrations", {"guest": "web01", "switchover": "at",
                                         "at": "2030-01-01T00:00:00Z"})
    status, body = call(ctl, "GET", "/v1/migrations/web01")
    assert status == 200 and body["switchover_at"] == "2030-01-01T00:00:00.000Z"
    assert {"guest", "phase", "bytes_done", "bytes_total", "rate", "eta", "lag",
            "history"} <= set(body)
    status, listing = call(ctl, "GET", "/v1/migrations")
    assert status == 200 and [m["guest"] for m in listing["migrations"]] == ["web01"]


def test_switchover_request_reschedule_cancel(ctl):
    assert call(ctl, "POST", "/v1/migrations/web01/switchover")[0] == 404
    call(ctl, "POST", "/v1/migrations", {"guest": "web01"})
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover", {})
    assert status == 200 and body["switchover_requested"] is True
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover",
                        {"at": "2030-01-01T01:00:00+01:00"})
    assert status == 200 and body["switchover"] == "at"
    assert body["switchover_at"] == "2030-01-01T00:00:00.000Z"
    status, body = call(ctl, "DELETE", "/v1/migrations/web01/switchover")
    assert status == 200 and body["switchover"] == "manual" and body["switchover_at"] is None


def test_a_window_end_in_the_bodies(ctl):
    window = {"guest": "web01", "switchover": "at", "at": "2030-01-01T02:00:00Z",
              "window_end": "2030-01-01T06:00:00+02:00"}
    status, body = call(ctl, "POST", "/v1/migrations", window)
    assert status == 201 and body["switchover_window_end"] == "2030-01-01T04:00:00.000Z"
    assert body["switchover_window_missed_at"] is None and body["switchover_note"] is None
    assert call(ctl, "POST", "/v1/migrations", window)[0] == 200
    status, conflict = call(ctl, "POST", "/v1/migrations", dict(window, window_end=None))
    assert status == 409 and "until 2030-01-01T04:00:00.000Z" in conflict["error"]
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover",
                        {"at": "2030-02-01T02:00:00Z", "window_end": "2030-02-01T03:00:00Z"})
    assert status == 200 and (body["switchover_at"], body["switchover_window_end"]) == (
        "2030-02-01T02:00:00.000Z", "2030-02-01T03:00:00.000Z")
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover", {"at": "2030-02-01T02:00:00Z"})
    assert status == 200 and body["switchover_window_end"] is None
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover",
                        {"window_end": "2030-02-01T03:00:00Z"})
    assert status == 400 and "window_end goes only with a switchover time (at)" in body["error"]


def test_a_missed_window_shows_on_the_migration_until_a_new_time(ctl):
    call(ctl, "POST", "/v1/migrations", {"guest": "web01", "switchover": "at",
                                         "at": "2020-01-01T02:00:00Z",
                                         "window_end": "2020-01-01T04:00:00Z"})
    ctl.advance("web01", "full_sync")
    ctl.advance("web01", "continuous_sync")
    status, body = call(ctl, "GET", "/v1/migrations/web01", token=RO)
    assert status == 200 and body["switchover_due"] is False
    assert body["switchover_window_missed_at"] == "2020-01-01T04:00:00.000Z"
    assert body["switchover_note"] == ("switchover window 2020-01-01T02:00:00.000Z to "
                                       "2020-01-01T04:00:00.000Z missed: waiting for a new time")
    assert call(ctl, "GET", "/v1/migrations")[1]["migrations"][0]["switchover_note"] == body["switchover_note"]
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover",
                        {"at": "2020-01-02T00:00:00Z", "window_end": "2099-01-01T00:00:00Z"})
    assert status == 200 and body["switchover_note"] is None and body["switchover_due"] is True


def test_abort(ctl):
    assert call(ctl, "POST", "/v1/migrations/web01/abort")[0] == 404
    call(ctl, "POST", "/v1/migrations", {"guest": "web01"})
    status, body = call(ctl, "POST", "/v1/migrations/web01/abort")
    assert status == 200 and body["phase"] == "failed" and body["reason"] == "aborted by operator"
    status, body = call(ctl, "POST", "/v1/migrations/web01/abort")
    assert status == 409 and "failed" in body["error"]
    status, body = call(ctl, "POST", "/v1/migrations/web01/switchover")
    assert status == 409


# -- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    ({"guest": "web01", "extra": 1}, "unknown field"),
    ({}, "guest name"),
    ({"guest": "../etc"}, "guest name"),
    ({"guest": 7}, "guest name"),
    ({"guest": "web01", "switchover": "later"}, "switchover must be one of"),
    ({"guest": "web01", "switchover": 1}, "switchover must be a string"),
    ({"guest": "web01", "switchover": "at"}, "needs a time"),
    ({"guest": "web01", "switchover": "at", "at": "2030-01-01T00:00:00"}, "zone"),
    ({"guest": "web01", "switchover": "at", "at": 1893456000}, "ISO 8601"),
    ({"guest": "web01", "switchover": "manual", "at": "2030-01-01T00:00:00Z"}, "only with"),
    ({"guest": "web01", "switchover": "at", "at": "2030-01-01T00:00:00Z",
      "window_end": "2030-01-01T00:00:00Z"}, "window_end 2030-01-01T00:00:00.000Z must be after at"),
    ({"guest": "web01", "switchover": "at", "at": "2030-01-01T00:00:00Z",
      "window_end": "2030-01-01T01:00:00"}, "window_end: time needs a zone"),
    ({"guest": "web01", "switchover": "at", "at": "2030-01-01T00:00:00Z",
      "window_end": 1893459600}, "window_end must be an ISO 8601 time string"),
    ({"guest": "web01", "switchover": "manual", "window_end": "2030-01-01T01:00:00Z"},
     "window_end goes only with a switchover time (at)"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_migration_requests_are_400(ctl, body, fragment):
    status, answer = call(ctl, "POST", "/v1/migrations", body)
    assert status == 400 and fragment in answer["error"]
    assert ctl.migration("web01") is None


def test_other_validation(ctl):
    assert call(ctl, "GET", "/v1/guests/bad%2Fname")[0] == 400
    assert call(ctl, "GET", "/v1/migrations/-web")[0] == 400
    assert call(ctl, "GET", "/v1/guests?verbose=1")[0] == 400
    assert call(ctl, "GET", "/v1/guests", body={"x": 1})[0] == 400  # reads take no body
    assert call(ctl, "DELETE", "/v1/guests/web01")[0] == 405
    assert call(ctl, "POST", "/v1/health")[0] == 405
    assert call(ctl, "GET", "/v1/migrations/web01/")[0] == 404
    assert call(ctl, "POST", "/v1/migrations", {"guest": "web01"},
                headers={"Content-Type": "text/plain"})[0] == 415
    duplicated = [("Authorization", f"Bearer {RW}"), ("authorization", f"Bearer {RO}")]
    assert route("GET", "/v1/guests", duplicated, b"", ctl, TOKENS)[0] == 400


# -- HTTP/1.1 on a loopback server ------------------------------------------------------------

async def start_server(ctl, **options):
    async def serve(reader, writer):
        await handle_api_connection(reader, writer, controller=ctl, tokens=TOKENS,
                                    log=logging.getLogger("test.api"), **options)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_response(reader, client):
    """Read one response with h11's client side; returns (status, headers, JSON body)."""
    response, body = None, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await asyncio.wait_for(reader.read(65536), 5))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return response.status_code, dict(response.headers), json.loads(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before a full response")


async def http_exchange(ctl, requests):
    """Send several requests over ONE kept-alive connection; returns their responses."""
    server, port = await start_server(ctl)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h11.Connection(h11.CLIENT)
    answers = []
    try:
        for method, path, body, token in requests:
            data = b"" if body is None else json.dumps(body).encode()
            headers = [("Host", "receiver"), ("Content-Length", str(len(data)))]
            if token:
                headers.append(("Authorization", f"Bearer {token}"))
            if data:
                headers.append(("Content-Type", "application/json"))
            writer.write(client.send(h11.Request(method=method, target=path, headers=headers)))
            writer.write(client.send(h11.Data(data=data)) if data else b"")
            writer.write(client.send(h11.EndOfMessage()))
            answers.append(await read_response(reader, client))
            client.start_next_cycle()
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    return answers


def test_http_round_trip_with_keep_alive(ctl):
    answers = asyncio.run(http_exchange(ctl, [
        ("GET", "/v1/health", None, None),
        ("POST", "/v1/migrations", {"guest": "web01", "switchover": "immediate"}, RW),
        ("GET", "/v1/migrations/web01", None, RO),
        ("GET", "/v1/guests", None, None),
    ]))
    assert [status for status, _, _ in answers] == [200, 201, 200, 401]
    assert answers[1][1][b"content-type"] == b"application/json"
    assert answers[2][2]["switchover"] == "immediate"
    assert answers[3][1][b"www-authenticate"].startswith(b"Bearer")


async def raw_exchange(ctl, payload, **options):
    """Write raw bytes, return everything the server sends before closing."""
    server, port = await start_server(ctl, **options)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def test_oversized_body_is_413_and_closes(ctl):
    head = (b"POST /v1/migrations HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer " + RW.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (api.MAX_BODY + 1))
    reply = asyncio.run(raw_exchange(ctl, head))
    assert reply.startswith(b"HTTP/1.1 413 ") and b"connection: close" in reply.lower()


def test_chunked_body_over_the_limit_is_413(ctl):
    chunk = b"x" * 40_000
    payload = (b"POST /v1/migrations HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer " + RW.encode()
               + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
    assert asyncio.run(raw_exchange(ctl, payload)).startswith(b"HTTP/1.1 413 ")


def test_oversized_headers_are_refused(ctl):
    payload = b"GET /v1/health HTTP/1.1\r\nHost: r\r\nX-Padding: " + b"a" * 20_000 + b"\r\n\r\n"
    assert asyncio.run(raw_exchange(ctl, payload)).startswith(b"HTTP/1.1 431 ")


def test_garbage_is_400(ctl):
    assert asyncio.run(raw_exchange(ctl, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400 ")


def test_idle_connection_is_closed(ctl):
    # Nothing sent: the server closes after the idle timeout and reading returns EOF.
    assert asyncio.run(raw_exchange(ctl, b"", idle_timeout=0.2)) == b""


def test_slow_body_is_cut_off(ctl):
    head = (b"POST /v1/migrations HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer " + RW.encode()
            + b"\r\nContent-Length: 10\r\n\r\n{")
    assert asyncio.run(raw_exchange(ctl, head, request_timeout=0.2)) == b""
