"""The receiver's REST API: the JSON interface of osamctl and the Ansible collection.

Two layers. `route()` is pure: method, path, headers and body in, (status, JSON object) out,
with authentication, validation and the controller call; tests drive it directly.
`handle_api_connection()` serves one HTTP/1.1 connection with h11 (sans-IO) on asyncio streams:
keep-alive, limits and timeouts. Mutual TLS is done before it, by the transport layer.

Authentication: `Authorization: Bearer <token>` on every endpoint but GET /v1/health, with
`tokens = {"<token>": "rw" | "ro"}`. Tokens are compared in constant time and never logged.

Endpoints (ROUTES below; bodies are JSON objects, times ISO 8601 with a zone):

    GET    /v1/health                              no token; {"status": "ok", "version"}
    GET    /v1/guests, /v1/guests/NAME             registered guests and their inventory
    GET    /v1/migrations, /v1/migrations/NAME     each guest's active (else latest) migration
    POST   /v1/migrations                          {guest, switchover: manual|immediate|at,
                                                    at, window_end}: 201 started, 200 the same
                                                    one is active, 409 another one is
    POST   /v1/migrations/NAME/switchover          {} switch over now; {at, window_end}
                                                    (re)schedule, a missed window forgotten
    DELETE /v1/migrations/NAME/switchover          back to manual: no request, no schedule
    POST   /v1/migrations/NAME/abort               ends it failed, "aborted by operator"

A scheduled switchover starts when `at <= now < window_end` (`window_end` is optional and must
be after `at`). When the window closes before it began, the migration keeps syncing, its
`switchover_due` stays false, and it shows `switchover_window_missed_at` (the window's end) and
`switchover_note` ("switchover window A to B missed: waiting for a new time") until a new time,
a cancel or a request to switch over now. A migration also shows `switchover_at`,
`switchover_window_end`, `switchover_requested` and `lag_at_switchover`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import http
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import h11

from osam import __version__
from osam.controller import Controller, Conflict, InvalidInput, NotFound
from osam.controller.names import check_guest_name

MAX_BODY = 64 * 1024            # bytes; requests are small JSON objects
MAX_HEADER_BYTES = 16 * 1024    # request line + headers
MAX_TIME_FIELD = 64
IDLE_TIMEOUT = 60.0             # seconds a kept-alive connection may wait for its next request
REQUEST_TIMEOUT = 30.0          # seconds for a started request's body to arrive
READ_SIZE = 16 * 1024

READ, WRITE = "ro", "rw"

Response = Tuple[int, Dict[str, Any]]
Headers = Union[Mapping[str, str], Iterable[Tuple[Union[str, bytes], Union[str, bytes]]]]

_log = logging.getLogger(__name__)


class _Refusal(Exception):
    """Ends routing early with an HTTP status and an error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- endpoint handlers: (controller, name from the path or None, parsed body) -> response ---------

def _list_guests(controller: Controller, _name: Optional[str], _body: Dict[str, Any]) -> Response:
    return 200, {"guests": controller.guests()}


def _get_guest(controller: Controller, name: Optional[str], _body: Dict[str, Any]) -> Response:
    guest = controller.guest(name)
    if guest is None:
        raise NotFound(f"guest {name} is not registered")
    return 200, guest


def _list_migrations(controller: Controller, _name: Optional[str], _body: Dict[str, Any]) -> Response:
    return 200, {"migrations": controller.migrations()}


def _get_migration(controller: Controller, name: Optional[str], _body: Dict[str, Any]) -> Response:
    migration = controller.migration(name)
    if migration is None:
        raise NotFound(f"no migration for guest {name}")
    return 200, migration


def _start_migration(controller: Controller, _name: Optional[str], body: Dict[str, Any]) -> Response:
    guest = check_guest_name(body.get("guest"))
    switchover = body.get("switchover", "manual")
    if not isinstance(switchover, str):
        raise InvalidInput("switchover must be a string")
    migration, created = controller.ensure_migration(guest, switchover, _time_field(body, "at"),
                                                     _time_field(body, "window_end"))
    return (201 if created else 200), migration


def _request_switchover(controller: Controller, name: Optional[str], body: Dict[str, Any]) -> Response:
    return 200, controller.request_switchover(name, _time_field(body, "at"),
                                              _time_field(body, "window_end"))


def _cancel_switchover(controller: Controller, name: Optional[str], _body: Dict[str, Any]) -> Response:
    return 200, controller.cancel_switchover(name)


def _abort(controller: Controller, name: Optional[str], _body: Dict[str, Any]) -> Response:
    return 200, controller.abort(name)


Handler = Callable[[Controller, Optional[str], Dict[str, Any]], Response]

# (method, path template, access, JSON body fields accepted, handler). "{name}" is a guest name.
ROUTES: List[Tuple[str, str, str, Tuple[str, ...], Handler]] = [
    ("GET", "/v1/guests", READ, (), _list_guests),
    ("GET", "/v1/guests/{name}", READ, (), _get_guest),
    ("GET", "/v1/migrations", READ, (), _list_migrations),
    ("POST", "/v1/migrations", WRITE, ("guest", "switchover", "at", "window_end"), _start_migration),
    ("GET", "/v1/migrations/{name}", READ, (), _get_migration),
    ("POST", "/v1/migrations/{name}/switchover", WRITE, ("at", "window_end"), _request_switchover),
    ("DELETE", "/v1/migrations/{name}/switchover", WRITE, (), _cancel_switchover),
    ("POST", "/v1/migrations/{name}/abort", WRITE, (), _abort),
]
HEALTH_PATH = "/v1/health"


def route(method: Union[str, bytes], path: Union[str, bytes], headers: Headers,
          body: bytes, controller: Controller, tokens: Mapping[str, str]) -> Response:
    """Answer one request. Never raises for anything a client can send."""
    try:
        method = _text(method).upper()
        target, _, query = _text(path).partition("?")
        fields = _header_dict(headers)
        if target == HEALTH_PATH:
            if method != "GET":
                raise _Refusal(405, "method not allowed")
            return 200, {"status": "ok", "version": __version__}
        role = _authenticate(fields, tokens)
        access, accepted, handler, name = _match(method, target)
        if access == WRITE and role != WRITE:
            raise _Refusal(403, "this token is read-only")
        if access == READ and role not in (READ, WRITE):
            raise _Refusal(403, "this token grants no access")
        if query:
            raise _Refusal(400, "query parameters are not accepted")
        if name is not None:
            check_guest_name(name)
        return handler(controller, name, _json_body(fields, body, accepted))
    except _Refusal as refusal:
        return refusal.status, {"error": refusal.message}
    except InvalidInput as error:
        return 400, {"error": str(error)}
    except NotFound as error:
        return 404, {"error": str(error)}
    except Conflict as error:  # IllegalTransition included
        return 409, {"error": str(error)}


def _text(value: Union[str, bytes]) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise _Refusal(400, "request line must be ASCII") from None
    return value


def _header_dict(headers: Headers) -> Dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result: Dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = _text(raw_name).lower()
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if name in result and name in ("authorization", "content-type"):
            raise _Refusal(400, f"more than one {name} header")
        result[name] = value
    return result


def _digest(token: str) -> bytes:
    # Fixed-length digests so the comparison takes the same time whatever the token's length.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _authenticate(headers: Mapping[str, str], tokens: Mapping[str, str]) -> Optional[str]:
    value = headers.get("authorization")
    if not value:
        raise _Refusal(401, "missing bearer token")
    scheme, _, presented = value.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _Refusal(401, "expected 'Authorization: Bearer <token>'")
    presented_digest = _digest(presented)
    role = None
    for token, token_role in tokens.items():  # no early exit: every token is compared
        if hmac.compare_digest(_digest(token), presented_digest):
            role = token_role
    if role is None:
        raise _Refusal(401, "invalid token")
    return role


def _match(method: str, target: str) -> Tuple[str, Tuple[str, ...], Handler, Optional[str]]:
    segments = target.split("/")
    path_known = False
    for route_method, template, access, accepted, handler in ROUTES:
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        name = None
        for part, segment in zip(parts, segments):
            if part == "{name}" and segment:
                name = segment
            elif part != segment:
                break
        else:
            if route_method == method:
                return access, accepted, handler, name
            path_known = True
    if path_known:
        raise _Refusal(405, "method not allowed")
    raise _Refusal(404, "no such endpoint")


def _json_body(headers: Mapping[str, str], body: bytes, accepted: Tuple[str, ...]) -> Dict[str, Any]:
    if not body:
        return {}
    if not accepted:
        raise _Refusal(400, "this endpoint takes no request body")
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _Refusal(415, "request body must be application/json")
    if len(body) > MAX_BODY:
        raise _Refusal(413, "request body too large")
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Refusal(400, "request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _Refusal(400, "request body must be a JSON object")
    unknown = sorted(set(parsed) - set(accepted))
    if unknown:
        raise _Refusal(400, f"unknown field(s): {', '.join(unknown)}")
    return parsed


def _time_field(body: Dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIME_FIELD:
        raise InvalidInput(f"{key} must be an ISO 8601 time string with a zone")
    return value


# -- HTTP/1.1 over asyncio streams -----------------------------------------------------------

class _Closed(Exception):
    """The peer went away or was too slow; nothing more can be said on this connection."""


async def handle_api_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                                controller: Controller, tokens: Mapping[str, str],
                                log: Optional[logging.Logger] = None,
                                idle_timeout: float = IDLE_TIMEOUT,
                                request_timeout: float = REQUEST_TIMEOUT) -> None:
    """Serve API requests on one connection until the client closes it, idles or errs."""
    connection = _HttpConnection(reader, writer, controller, tokens, log or _log,
                                 idle_timeout, request_timeout)
    try:
        await connection.serve()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass


class _HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 controller: Controller, tokens: Mapping[str, str], log: logging.Logger,
                 idle_timeout: float, request_timeout: float):
        self.reader = reader
        self.writer = writer
        self.controller = controller
        self.tokens = tokens
        self.log = log
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.peer = writer.get_extra_info("peername")
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def serve(self) -> None:
        try:
            while await self._one_exchange():
                self.h11.start_next_cycle()
        except h11.RemoteProtocolError as error:
            await self._refuse(error.error_status_hint, "malformed HTTP request")
        except _Closed:
            pass
        except (ConnectionError, OSError) as error:
            self.log.debug("API connection from %s ended: %s", self.peer, error)

    async def _one_exchange(self) -> bool:
        """Read one request, answer it; True if the connection can carry another."""
        loop = asyncio.get_running_loop()
        event = await self._next_event(loop.time() + self.idle_timeout)
        if isinstance(event, h11.ConnectionClosed):
            return False
        assert isinstance(event, h11.Request)
        request = event
        # h11 bounds only an incomplete head; one that arrives whole in a read is checked here.
        if _head_size(request) > MAX_HEADER_BYTES:
            await self._refuse(431, "request headers too large")
            return False
        if _declared_length(request.headers) > MAX_BODY:
            await self._refuse(413, "request body too large")
            return False
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        deadline = loop.time() + self.request_timeout
        while True:
            event = await self._next_event(deadline)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    await self._refuse(413, "request body too large")
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        method, target = request.method.decode("ascii"), request.target.decode("ascii", "replace")
        try:
            status, payload = route(method, target, request.headers, bytes(body),
                                    self.controller, self.tokens)
        except Exception:  # a bug, not the client's fault: keep serving others
            self.log.exception("API %s %s failed", method, target.partition("?")[0])
            status, payload = 500, {"error": "internal error"}
        # The path only: never headers, which carry the token.
        self.log.info("API %s %s %s -> %d", self.peer, method, target.partition("?")[0], status)
        await self._respond(status, payload)
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _next_event(self, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _Closed()
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
            except asyncio.TimeoutError:
                raise _Closed() from None
            self.h11.receive_data(data)  # b"" tells h11 the peer closed

    async def _respond(self, status: int, payload: Dict[str, Any], close: bool = False) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        headers = [("content-type", "application/json"), ("content-length", str(len(data))),
                   ("cache-control", "no-store")]
        if status == 401:
            headers.append(("www-authenticate", 'Bearer realm="osam"'))
        if close:
            headers.append(("connection", "close"))
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        await self._send(h11.Response(status_code=status, headers=headers, reason=reason))
        await self._send(h11.Data(data=data))
        await self._send(h11.EndOfMessage())

    async def _refuse(self, status: int, message: str) -> None:
        """Answer an unusable request if the protocol state still allows an answer."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.log.info("API %s refused: %d %s", self.peer, status, message)
            try:
                await self._respond(status, {"error": message}, close=True)
            except (ConnectionError, OSError, h11.LocalProtocolError):
                pass

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _declared_length(headers: Iterable[Tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)  # h11 has already checked it is a number
    return 0
