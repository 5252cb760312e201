"""Errors the controller raises; the REST API maps each class to one HTTP status."""
from __future__ import annotations


class ControllerError(Exception):
    """Base of every error an operator can cause; the message is safe to show them."""


class InvalidInput(ControllerError, ValueError):
    """A name, mode, time or number the controller will not accept (HTTP 400)."""


class NotFound(ControllerError, LookupError):
    """No such guest, or no migration for it (HTTP 404)."""


class Conflict(ControllerError):
    """The request contradicts the current state (HTTP 409)."""
