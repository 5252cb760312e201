"""Turning TLS handshake failures into the few words an operator needs in one log line."""
from __future__ import annotations

import asyncio
import ssl

# OpenSSL X509_V_ERR_* codes worth a hint of their own.
_EXPIRED, _NOT_YET_VALID = 10, 9
_UNKNOWN_ISSUER = {18, 19, 20, 21}   # self-signed, self-signed in chain, no local issuer, unverifiable
_WRONG_PURPOSE = 26

_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate and we sent none",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not know our CA (foreign CA?)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "UNSUPPORTED_PROTOCOL": "not TLS 1.3",
    "TLSV1_ALERT_PROTOCOL_VERSION": "not TLS 1.3",
    "WRONG_VERSION_NUMBER": "not a TLS client (wrong version number)",
    "HTTP_REQUEST": "plain HTTP sent to a TLS port",
}


_HANGUPS = (ssl.SSLEOFError, asyncio.IncompleteReadError, EOFError, ConnectionResetError,
            BrokenPipeError)


def is_hangup(exc: BaseException) -> bool:
    """The peer just went away (a port probe, a client giving up): no certificate was judged."""
    return isinstance(exc, _HANGUPS) and not isinstance(exc, ssl.SSLCertVerificationError)


def describe_handshake_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _describe_verification(exc)
    if is_hangup(exc):
        return "connection closed during the TLS handshake"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if reason in _REASONS:
            return _REASONS[reason]
        return f"TLS handshake failed: {reason.lower().replace('_', ' ') or exc}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "TLS handshake timed out"
    return f"TLS handshake failed: {exc}"


def _describe_verification(exc: ssl.SSLCertVerificationError) -> str:
    code = getattr(exc, "verify_code", None)
    message = getattr(exc, "verify_message", None) or str(exc)
    if code == _EXPIRED:
        return "certificate has expired"
    if code == _NOT_YET_VALID:
        return "certificate is not yet valid (clock skew?)"
    hint = ""
    if code in _UNKNOWN_ISSUER:
        hint = " (foreign CA?)"
    elif code == _WRONG_PURPOSE:
        hint = " (certificate not issued for this side of the link)"
    return f"certificate verify failed: {message}{hint}"
