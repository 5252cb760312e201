"""Exceptions of the PKI package: each carries a message an operator can act on."""
from __future__ import annotations


class PkiError(Exception):
    """A PKI directory or request is not usable as asked."""


class CertificateRefused(PkiError):
    """A peer certificate failed verification; `reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
