"""Secrets a site holds (API tokens, private keys, passwords) and a search for them in text."""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END", re.S)


def secrets_of(pki_dir, passwords: Iterable[str] = ()) -> Dict[str, str]:
    """label -> secret string: both API tokens, and for every private key under pki_dir its
    PEM body lines and a base64 run long enough to be unmistakable."""
    pki_dir = Path(pki_dir)
    out: Dict[str, str] = {}
    for name in ("api-token", "api-token-ro"):
        p = pki_dir / name
        if p.exists():
            out[name] = p.read_text().strip()
    for key in sorted(pki_dir.rglob("*.key")):
        for m in _PEM.finditer(key.read_bytes()):
            body = b"".join(m.group(1).split())
            out[f"{key.relative_to(pki_dir)} (PEM body)"] = body[20:60].decode()
            out[f"{key.relative_to(pki_dir)} (raw key bytes)"] = base64.b64decode(body)[-24:].hex()
    for i, pw in enumerate(passwords):
        out[f"password {i}"] = pw
    return out


def find_secrets(texts: Dict[str, str], secrets: Dict[str, str]) -> List[Tuple[str, str]]:
    """(where, which secret) for every secret found in any text."""
    return [(where, label) for where, text in texts.items() for label, secret in secrets.items()
            if secret and secret in text]
