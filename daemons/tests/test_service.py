"""sd_notify datagrams on a socket the test binds, and where log lines go."""
from __future__ import annotations

import io
import logging
import os
import re
import socket

import pytest

from osam.common import service


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def without_systemd_python(monkeypatch):
    """A guest whose Python lacks systemd-python: the datagram is written by hand."""
    monkeypatch.setattr(service, "_sd_daemon", None)


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("library", ["systemd-python", "fallback"])
def test_notifications_arrive_as_datagrams(notify_socket, monkeypatch, library):
    if library == "fallback":
        monkeypatch.setattr(service, "_sd_daemon", None)
    elif service._sd_daemon is None:
        pytest.skip("systemd-python is not installed")
    assert service.notify_ready()
    assert notify_socket.recv(4096) == b"READY=1"
    assert service.notify_status("syncing web01\n42% done")
    assert notify_socket.recv(4096) == b"STATUS=syncing web01 42% done"
    assert service.notify_stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_notify_socket(monkeypatch, without_systemd_python):
    name = f"osam-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert service.notify_ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_notify_socket_is_a_quiet_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify_ready() is False


def test_vanished_notify_socket_does_not_raise(tmp_path, monkeypatch, without_systemd_python):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert service.notify_ready() is False


def test_stderr_lines_carry_time_level_logger_message(monkeypatch, root_logging):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    out = io.StringIO()
    log = service.setup_logging("osam-test", "debug", stream=out)
    service.setup_logging("osam-test", logging.DEBUG, stream=out)   # replaces, never doubles
    log.debug("hello %s", "world")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG osam-test: hello world", lines[0])


def test_secrets_are_redacted(monkeypatch, root_logging):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    out = io.StringIO()
    log = service.setup_logging("osam-test", "INFO", stream=out)
    log.info("header Authorization: Bearer %s", "s3cr3tT0kenValue-_abc")
    log.info("api_token=%s", "AbCdEfGhIjKlMnOp")
    log.info("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----")
    text = out.getvalue()
    assert "s3cr3t" not in text and "AbCdEf" not in text and "MIGHAgEA" not in text
    assert "Bearer ***" in text and "api_token=***" in text and "[private key redacted]" in text


def test_journal_under_systemd(monkeypatch, root_logging):
    if service._sd_journal is None:
        pytest.skip("systemd-python is not installed")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    service.setup_logging("osam-test", "INFO")
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_osam_service", False)]
    assert len(handlers) == 1 and isinstance(handlers[0], service._sd_journal.JournalHandler)


def test_unknown_level_is_refused(root_logging):
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        service.setup_logging("osam-test", "LOUD", stream=io.StringIO())
