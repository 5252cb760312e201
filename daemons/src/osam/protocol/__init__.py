"""The osam wire protocol, sans-IO: hello, frames with size caps and an lz4 flag, messages."""
from .connection import Connection
from .frames import (CHANNEL_CONTROL, CHANNEL_DATA, MAX_PAYLOAD, Frame, FrameDecoder,
                     ProtocolError, decode_hello, encode_frame, encode_hello)
from .messages import *  # noqa: F401,F403  (the message classes are the protocol's vocabulary)
from .messages import MESSAGE_TYPES, Message, decode

__all__ = ["Connection", "CHANNEL_CONTROL", "CHANNEL_DATA", "MAX_PAYLOAD", "Frame", "FrameDecoder",
           "ProtocolError", "decode_hello", "encode_frame", "encode_hello", "MESSAGE_TYPES",
           "Message", "decode"] + [cls.__name__ for cls in MESSAGE_TYPES.values()]
