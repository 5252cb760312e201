"""osamctl: the operator's command line for the receiver's REST API.

    osamctl --api https://HOST:PORT --pki DIR guests [--json]
    osamctl ... migrate NAME [--switchover manual|immediate|at=ISO8601 [--window-end ISO8601]]
                             [--wait PHASE]
    osamctl ... status [NAME] [--json] [--follow]
    osamctl ... switchover NAME [--at ISO8601 [--window-end ISO8601] | --cancel]
    osamctl ... abort NAME

A scheduled switchover (at=T, --at T) starts at T; with --window-end END it starts only while
T <= now < END, and a window that closes before it began is shown by `status` as missed: the
migration keeps syncing and waits for a new time (`switchover NAME --at ...`).

The API requires mutual TLS: the receiver's certificate must chain to DIR/ca.crt, and osamctl
presents DIR/admin.crt with DIR/admin.key. The bearer token comes from DIR/api-token unless
--token-file says otherwise. Standard library only, so it runs wherever Python does.

Exit codes: 0 success, 1 the operation failed (API, network, TLS, a failed migration), 2 usage.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

# Mirrors osam.controller.phases without importing it: osamctl only speaks the REST API.
PHASES = ("registered", "full_sync", "continuous_sync", "quiesce", "final_sync", "fixup", "replica_vm",
          "tools", "replica_on", "source_off", "network", "completed", "needs_operator", "failed")
TERMINAL = ("completed", "needs_operator", "failed")
# Ends that are not a success: the reason says what went wrong or what the operator must do.
STOPPED = ("needs_operator", "failed")
SWITCHOVER_HELP = "manual (default), immediate, or at=ISO8601 with a zone, e.g. at=2025-06-01T22:00:00Z"
WINDOW_END_HELP = ("ISO 8601 time with a zone after the switchover time: the scheduled switchover "
                   "does not start from then on, and the migration waits for a new time")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A one-line message for the operator; ends the command with exit code 1."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient  # a network problem that a retry may cure


# -- talking to the API -------------------------------------------------------------------------

class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose certificate check may expect another name than the one dialled."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: Optional[str],
                 timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls = context
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name or self.host)


class _StaleConnection(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class ApiClient:
    def __init__(self, api: str, pki_dir: str, token: str, server_name: Optional[str] = None,
                 timeout: float = 30.0):
        self.host, self.port = _parse_api_url(api)
        self.where = f"{self.host}:{self.port}"
        self.token = token
        self.context = _tls_context(pki_dir)
        self.server_name = server_name
        self.timeout = timeout
        self._connection: Optional[_PinnedHTTPSConnection] = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get(self, path: str) -> Dict[str, Any]:
        return self.request("GET", path)[1]

    def request(self, method: str, path: str,
                body: Optional[Dict[str, Any]] = None) -> Tuple[int, Dict[str, Any]]:
        # A kept-alive connection the receiver has since closed fails on first use: retry once,
        # on a fresh connection. A fresh connection that fails is reported as is.
        reused = self._connection is not None
        try:
            return self._exchange(method, path, body)
        except _StaleConnection as stale:
            if not reused:
                raise self._explain(stale.error) from None
            return self._exchange(method, path, body)

    def _exchange(self, method: str, path: str,
                  body: Optional[Dict[str, Any]]) -> Tuple[int, Dict[str, Any]]:
        if self._connection is None:
            self._connection = _PinnedHTTPSConnection(self.host, self.port, self.context,
                                                      self.server_name, self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            raw = response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
            self.close()
            raise _StaleConnection(error) from None
        except Exception as error:
            self.close()
            raise self._explain(error) from None
        try:
            document = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            raise CommandError(f"{self.where} answered HTTP {response.status} without JSON") from None
        if response.status >= 400:
            message = document.get("error") if isinstance(document, dict) else None
            raise CommandError(f"HTTP {response.status} {response.reason}: {message or 'no detail'}")
        return response.status, document

    def _explain(self, error: Exception) -> CommandError:
        where = self.where
        if isinstance(error, ConnectionRefusedError):
            return CommandError(f"cannot connect to {where}: connection refused", transient=True)
        if isinstance(error, ssl.SSLCertVerificationError):
            return CommandError(f"TLS failure with {where}: the receiver's certificate does not "
                                f"verify against the pinned CA ({error.verify_message})")
        if isinstance(error, ssl.SSLError):
            return CommandError(f"TLS failure with {where}: {error.reason or error}")
        if isinstance(error, (socket.timeout, TimeoutError)):
            return CommandError(f"no answer from {where} within {self.timeout:g} s", transient=True)
        if isinstance(error, socket.gaierror):
            return CommandError(f"cannot resolve {self.host}: {error.strerror}")
        if isinstance(error, OSError):
            return CommandError(f"cannot talk to {where}: {error.strerror or error}", transient=True)
        if isinstance(error, http.client.HTTPException):
            return CommandError(f"{where} broke the HTTP exchange: {error!r}", transient=True)
        return CommandError(f"request to {where} failed: {error}")


def _parse_api_url(api: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(api)
    if parts.scheme != "https" or not parts.hostname:
        raise CommandError(f"--api must look like https://HOST:PORT, not {api!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise CommandError(f"--api takes only https://HOST:PORT, not {api!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise CommandError(f"--api has an invalid port: {api!r}") from None
    return parts.hostname, port


def _tls_context(pki_dir: str) -> ssl.SSLContext:
    ca, cert, key = (os.path.join(pki_dir, name) for name in ("ca.crt", "admin.crt", "admin.key"))
    for path in (ca, cert, key):
        if not os.path.isfile(path):
            raise CommandError(f"missing {path} (expected in --pki {pki_dir})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=ca)  # pinned: the receiver's own CA, nothing else
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise CommandError(f"cannot load the certificates in {pki_dir}: {error}") from None
    return context


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as error:
        raise CommandError(f"cannot read the API token from {path}: {error.strerror}") from None
    if not token or any(character.isspace() for character in token):
        raise CommandError(f"{path} must hold one token on one line")
    return token


def migration_path(name: str, action: str = "") -> str:
    # Quoted so that a stray "/" or "?" in a name reaches the API as an invalid name.
    path = "/v1/migrations/" + urllib.parse.quote(name, safe="")
    return f"{path}/{action}" if action else path


# -- presenting results -------------------------------------------------------------------------

def human_bytes(count: Optional[float]) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def human_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def percent(migration: Dict[str, Any]) -> Optional[float]:
    total = migration.get("bytes_total")
    if not total:
        return 100.0 if migration.get("phase") == "completed" else None
    return min(100.0, 100.0 * (migration.get("bytes_done") or 0) / total)


def _rate(migration: Dict[str, Any]) -> str:
    rate = migration.get("rate")
    return "-" if rate is None else human_bytes(rate) + "/s"


def _lag(migration: Dict[str, Any]) -> str:
    lag = migration.get("lag")
    return "-" if lag is None else f"{lag:.1f}s"


def _switchover(migration: Dict[str, Any]) -> str:
    mode = migration.get("switchover") or "-"
    if mode == "at":
        mode = f"at {migration.get('switchover_at')}"
        if migration.get("switchover_window_end"):
            mode += f" until {migration['switchover_window_end']}"
    if migration.get("switchover_requested"):
        mode += " (requested)"
    if migration.get("switchover_window_missed_at"):
        mode += " (window missed)"
    return mode


def format_table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def guests_table(guests: List[Dict[str, Any]]) -> str:
    rows = [(g["name"], "yes" if g.get("connected") else "no", g.get("agent_version") or "-",
             g.get("migration_phase") or "-", g.get("last_seen") or "-", replication_mode(g.get("inventory")),
             layout_summary((g.get("inventory") or {}).get("layout"))) for g in guests]
    return format_table(("NAME", "CONNECTED", "AGENT", "MIGRATION", "LAST SEEN", "MODE", "LAYOUT"), rows)


def replication_mode(inventory: Optional[Dict[str, Any]]) -> str:
    """file or block (whole disks); "-" for a sentinel that does not say."""
    return str(((inventory or {}).get("replication") or {}).get("mode") or "-")


def layout_summary(layout: Optional[Dict[str, Any]]) -> str:
    """One line from the sentinel's disk layout, e.g.
    `disks: sda 3.0 GiB dos; fs: / ext4, swap; boot: bios grub2`; "-" when there is none."""
    if not layout:
        return "-"
    disks = ", ".join(_disk_summary(d) for d in layout.get("disks", []))
    parts = [f"disks: {disks or '-'}", f"fs: {_file_systems_summary(layout) or '-'}"]
    vgs = layout.get("lvm", {}).get("vgs", [])
    if vgs:
        parts.append("lvm: " + ", ".join(vg["name"] for vg in vgs))
    boot = layout.get("boot") or {}
    parts.append(f"boot: {boot.get('mode') or '-'} {boot.get('bootloader') or '-'}")
    if layout.get("errors"):
        parts.append(f"{len(layout['errors'])} error(s)")
    return "; ".join(parts)


def _disk_summary(disk: Dict[str, Any]) -> str:
    """Name, size and partition table type (dos, gpt; nothing without a table)."""
    label = (disk.get("partition_table") or {}).get("label")
    return " ".join(filter(None, [disk.get("name"), human_bytes(disk.get("size")), label]))


def _file_systems_summary(layout: Dict[str, Any]) -> str:
    """Mounted file systems by mount point, then swap; unmounted ones are left out."""
    filesystems = layout.get("filesystems", [])
    mounted = sorted((f["mountpoint"], f["fstype"]) for f in filesystems if f.get("mountpoint"))
    swaps = [f for f in filesystems if f.get("fstype") == "swap"]
    return ", ".join([f"{target} {fstype}" for target, fstype in mounted] + ["swap"] * len(swaps))


def migrations_table(migrations: List[Dict[str, Any]]) -> str:
    rows = []
    for m in migrations:
        done = percent(m)
        rows.append((m["guest"], m["phase"], "-" if done is None else f"{done:.1f}%", _rate(m),
                     human_duration(m.get("eta")), _lag(m), _switchover(m), m.get("updated") or "-"))
    return format_table(("GUEST", "PHASE", "DONE", "RATE", "ETA", "LAG", "SWITCHOVER", "UPDATED"),
                        rows)


def migration_details(m: Dict[str, Any]) -> str:
    done = percent(m)
    lines = [
        f"guest:       {m['guest']}",
        f"phase:       {m['phase']}" + (f" ({m['reason']})" if m.get("reason") else ""),
        f"switchover:  {_switchover(m)}",
        *([f"note:        {m['switchover_note']}"] if m.get("switchover_note") else []),
        f"progress:    {human_bytes(m.get('bytes_done'))} of {human_bytes(m.get('bytes_total'))}"
        + ("" if done is None else f" ({done:.1f}%)")
        + f", {m.get('files_done') or 0} of {m.get('files_total') or '-'} files",
        f"rate:        {_rate(m)}   eta: {human_duration(m.get('eta'))}   lag: {_lag(m)}",
        f"last sync:   {m.get('last_sync_at') or '-'}",
        *([f"last error:  {m['last_error']} ({m.get('last_error_at')})"] if m.get("last_error") else []),
        "history:",
    ]
    for step in m.get("history", []):
        reason = f"  ({step['reason']})" if step.get("reason") else ""
        lines.append(f"  {step['at']}  {step.get('from') or '-'} -> {step['to']}{reason}")
    return "\n".join(lines)


def progress_line(m: Dict[str, Any], width: Optional[int] = None) -> str:
    """One line: phase, percent, rate, ETA and lag; with `width`, a bar fills the spare room."""
    done = percent(m)
    shown = "  --.-%" if done is None else f"{done:6.1f}%"
    tail = f"{shown}  {_rate(m)}  ETA {human_duration(m.get('eta'))}  lag {_lag(m)}"
    head = f"{m['guest']}  {m['phase']}"
    if width is None:
        return f"{head}  {tail}"
    room = width - len(head) - len(tail) - 6
    if room < 10:
        return f"{head}  {tail}"[: width - 1]
    filled = 0 if done is None else int(room * done / 100)
    return f"{head}  [{'#' * filled}{'-' * (room - filled)}]  {tail}"


# -- commands -----------------------------------------------------------------------------------

def cmd_guests(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    guests = client.get("/v1/guests")["guests"]
    if args.json:
        print(json.dumps(guests, indent=2), file=out)
    elif guests:
        print(guests_table(guests), file=out)
    else:
        print("no guests registered", file=out)
    return EXIT_OK


def cmd_migrate(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    mode, at = args.switchover
    body: Dict[str, Any] = {"guest": args.name, "switchover": mode}
    if at is not None:
        body["at"] = at
    if args.window_end is not None:
        body["window_end"] = args.window_end
    status, migration = client.request("POST", "/v1/migrations", body)
    verb = "started" if status == 201 else "already active"
    print(f"migration of {args.name} {verb}: phase {migration['phase']}, "
          f"switchover {_switchover(migration)}", file=out)
    if args.wait is None:
        return EXIT_OK
    return _wait_for_phase(client, args.name, args.wait, args.interval, out)


def _stopped(phase: str) -> str:
    return "needs the operator" if phase == "needs_operator" else "failed"


def _wait_for_phase(client: ApiClient, name: str, target: str, interval: float, out: TextIO) -> int:
    wanted = PHASES.index(target)
    while True:
        migration = client.get(migration_path(name))
        phase = migration["phase"]
        if phase in STOPPED and target != phase:
            raise CommandError(f"migration of {name} {_stopped(phase)}: {migration.get('reason')}")
        if phase == target or (phase not in STOPPED and PHASES.index(phase) >= wanted):
            print(f"{name} reached {phase}", file=out)
            return EXIT_OK
        time.sleep(interval)


def cmd_status(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.name is None:
        migrations = client.get("/v1/migrations")["migrations"]
        if args.json:
            print(json.dumps(migrations, indent=2), file=out)
        elif migrations:
            print(migrations_table(migrations), file=out)
        else:
            print("no migrations", file=out)
        return EXIT_OK
    if args.follow:
        return _follow(client, args.name, args.interval, args.json, out)
    migration = client.get(migration_path(args.name))
    print(json.dumps(migration) if args.json else migration_details(migration), file=out)
    return EXIT_OK


def _follow(client: ApiClient, name: str, interval: float, as_json: bool, out: TextIO) -> int:
    """Redraw one progress line on a terminal; elsewhere print a line whenever it changes."""
    interactive = not as_json and out.isatty()
    previous = None
    while True:
        try:
            migration = client.get(migration_path(name))
        except CommandError as error:
            if not error.transient:
                raise
            if interactive:
                out.write("\r" + f"{name}: {error} (retrying)"[: _width() - 1].ljust(_width() - 1))
                out.flush()
            time.sleep(interval)
            continue
        if as_json:
            line = json.dumps(migration)
        else:
            line = progress_line(migration, _width() - 1 if interactive else None)
        if interactive:
            out.write("\r" + line.ljust(_width() - 1))
            out.flush()
        elif line != previous:
            print(line, file=out, flush=True)
        previous = line
        if migration["phase"] in TERMINAL:
            if interactive:
                out.write("\n")
            if migration["phase"] in STOPPED:
                raise CommandError(f"migration of {name} {_stopped(migration['phase'])}: {migration.get('reason')}")
            return EXIT_OK
        time.sleep(interval)


def _width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def cmd_switchover(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    path = migration_path(args.name, "switchover")
    if args.cancel:
        migration = client.request("DELETE", path)[1]
        print(f"switchover of {args.name} cancelled: now {_switchover(migration)}", file=out)
        return EXIT_OK
    body = {} if args.at is None else {"at": args.at}
    if args.window_end is not None:
        body["window_end"] = args.window_end
    migration = client.request("POST", path, body)[1]
    print(f"switchover of {args.name}: {_switchover(migration)}, phase {migration['phase']}",
          file=out)
    return EXIT_OK


def cmd_abort(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    migration = client.request("POST", migration_path(args.name, "abort"))[1]
    print(f"migration of {args.name} aborted: phase {migration['phase']}", file=out)
    return EXIT_OK


# -- argument parsing ---------------------------------------------------------------------------

def _switchover_arg(text: str) -> Tuple[str, Optional[str]]:
    if text in ("manual", "immediate"):
        return text, None
    if text.startswith("at=") and len(text) > 3:
        return "at", text[3:]
    raise argparse.ArgumentTypeError(f"expected {SWITCHOVER_HELP}")


def _interval_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected seconds between 0 and 3600")
    return value


def _add_connection_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # Accepted before or after the command; only the top level sets defaults.
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS
    parser.add_argument("--api", default=default(os.environ.get("OSAM_API")),
                        help="receiver API URL, https://HOST:PORT (env OSAM_API)")
    parser.add_argument("--pki", default=default(os.environ.get("OSAM_PKI")),
                        help="directory with ca.crt, admin.crt, admin.key, api-token (env OSAM_PKI)")
    parser.add_argument("--token-file", default=default(None),
                        help="file holding the API token (default: PKI/api-token)")
    parser.add_argument("--server-name", default=default(None),
                        help="name expected in the receiver's certificate (default: the API host)")
    parser.add_argument("--timeout", type=_interval_arg, default=default(30.0),
                        help="seconds to wait for the API (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osamctl", description="Drive OS assisted migrations "
                                     "through the receiver's REST API.")
    _add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_connection_options(sub, top_level=False)
        return sub

    guests = command("guests", "list registered guests")
    guests.add_argument("--json", action="store_true",
                        help="print JSON: every guest's whole inventory and disk layout")
    guests.set_defaults(run=cmd_guests)

    migrate = command("migrate", "start migrating a guest (idempotent)")
    migrate.add_argument("name")
    migrate.add_argument("--switchover", type=_switchover_arg, default=("manual", None),
                         help=SWITCHOVER_HELP)
    migrate.add_argument("--window-end", metavar="ISO8601",
                         help=f"only with --switchover at=...: {WINDOW_END_HELP}")
    migrate.add_argument("--wait", choices=PHASES[1:], metavar="PHASE",
                         help="wait until the migration reaches PHASE (fails if it fails)")
    migrate.add_argument("--interval", type=_interval_arg, default=2.0, help=argparse.SUPPRESS)
    migrate.set_defaults(run=cmd_migrate)

    status = command("status", "show one migration, or a table of all")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--follow", action="store_true",
                        help="keep showing progress until the migration ends")
    status.add_argument("--interval", type=_interval_arg, default=2.0,
                        help="seconds between refreshes with --follow (default 2)")
    status.set_defaults(run=cmd_status)

    switchover = command("switchover", "switch over now, at a time, or cancel")
    switchover.add_argument("name")
    when = switchover.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="ISO8601",
                      help="(re)schedule at this ISO 8601 time with a zone (without --at: switch "
                           "over now); forgets a missed window")
    when.add_argument("--cancel", action="store_true", help="cancel a requested or scheduled switchover")
    switchover.add_argument("--window-end", metavar="ISO8601",
                            help=f"only with --at: {WINDOW_END_HELP}")
    switchover.set_defaults(run=cmd_switchover)

    abort = command("abort", "abort a migration")
    abort.add_argument("name")
    abort.set_defaults(run=cmd_abort)
    return parser


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    if getattr(args, "follow", False) and args.name is None:
        parser.error("status --follow needs a guest NAME")
    if getattr(args, "window_end", None) is not None:
        scheduled = args.switchover[0] == "at" if args.command == "migrate" else args.at is not None
        if not scheduled:
            parser.error("--window-end goes only with a switchover time "
                         f"({'--switchover at=...' if args.command == 'migrate' else '--at'})")
    if not args.api or not args.pki:
        parser.error("--api and --pki are required (or set OSAM_API and OSAM_PKI)")
    client = None
    try:
        token = _read_token(args.token_file or os.path.join(args.pki, "api-token"))
        client = ApiClient(args.api, args.pki, token, args.server_name, args.timeout)
        return args.run(client, args, out)
    except CommandError as error:
        print(f"osamctl: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
