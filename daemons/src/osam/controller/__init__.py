"""The receiver's migration controller: the lifecycle table and its durable store."""
from .controller import Controller
from .errors import Conflict, ControllerError, InvalidInput, NotFound
from .phases import IllegalTransition

__all__ = ["Controller", "Conflict", "ControllerError", "IllegalTransition", "InvalidInput",
           "NotFound"]
