"""`osam`: site administration from the command line.

    osam pki init DIR [--san NAME ...] [--days N] [--force]
    osam pki issue DIR --sentinel NAME [--days N] [--force]

Subcommands are a table (COMMANDS): each entry adds its parser and sets `run`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .. import pki
from ..pki import layout


class UsageError(Exception):
    """A request that cannot be carried out as given; exit status 2."""


# --- osam pki -------------------------------------------------------------------------------

def _pki_init(args: argparse.Namespace) -> int:
    sans = args.san or list(pki.DEFAULT_SANS)
    pki.init_pki(args.dir, sans=sans, days=args.days, force=args.force)
    root = Path(args.dir)
    written = [layout.CA_CERT, layout.CA_KEY]
    for role in layout.SITE_ROLES:
        written += [p.name for p in pki.cert_and_key(root, role)]
    written += [layout.API_TOKEN, layout.API_TOKEN_RO]
    for name in written:
        print(f"wrote {root / name}")
    print(f"server certificates valid for: {', '.join(sans)}")
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    crt, key = pki.cert_and_key(args.dir, pki.SENTINEL, args.sentinel)
    before = _fingerprint(crt)
    crt, key = pki.issue_sentinel(args.dir, args.sentinel, days=args.days, force=args.force)
    verb = "kept" if before is not None and before == _fingerprint(crt) else "wrote"
    print(f"{verb} {crt}")
    print(f"{verb} {key}")
    if verb == "kept":
        print("the existing certificate is still valid; use --force to re-issue it")
    return 0


def _fingerprint(crt: Path) -> Optional[str]:
    try:
        return pki.fingerprint_of(crt.read_bytes())
    except OSError:
        return None


def _add_pki(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pki", help="create the site pair's CA and certificates")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="create CA, receiver/gateway/admin certificates, API tokens")
    init.add_argument("dir", help="PKI directory (created if missing)")
    init.add_argument("--san", action="append", metavar="NAME",
                      help="host name or IP of the receiver/gateway (repeatable; "
                           f"default: {' '.join(pki.DEFAULT_SANS)})")
    init.add_argument("--days", type=int, default=pki.DEFAULT_DAYS, help="certificate validity")
    init.add_argument("--force", action="store_true", help="replace an existing CA and everything")
    init.set_defaults(run=_pki_init)

    issue = actions.add_parser("issue", help="issue a guest's sentinel certificate")
    issue.add_argument("dir", help="PKI directory made by `osam pki init`")
    issue.add_argument("--sentinel", required=True, metavar="NAME", help="the guest's host name")
    issue.add_argument("--days", type=int, default=pki.DEFAULT_DAYS, help="certificate validity")
    issue.add_argument("--force", action="store_true", help="re-issue even if still valid")
    issue.set_defaults(run=_pki_issue)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(args.workdir)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run a real local migration through the three daemons")
    parser.add_argument("--workdir", default="/var/tmp/osam-demo",
                        help="where the sample guest, PKI, logs and replica go (emptied first)")
    parser.set_defaults(run=_demo)


# --- the table --------------------------------------------------------------------------------

Register = Callable[[argparse._SubParsersAction], None]
COMMANDS: List[Tuple[str, Register]] = [
    ("pki", _add_pki),
    ("demo", _add_demo),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osam", description="vmware.osam site administration")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, register in COMMANDS:
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (pki.PkiError, UsageError, OSError) as exc:
        print(f"osam: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
