"""Sans-IO connection: the hello, then frames decoded into messages. The transport feeds it
bytes and writes out what it returns; nothing here touches a socket."""
from __future__ import annotations

from typing import List, Optional

from .frames import HELLO, FrameDecoder, ProtocolError, decode_hello, encode_hello
from .messages import Message, decode


class Connection:
    def __init__(self, channel: int):
        self.channel = channel
        self.peer_channel: Optional[int] = None
        self._hello = bytearray()
        self._frames = FrameDecoder()

    def hello(self) -> bytes:
        return encode_hello(self.channel)

    def receive(self, data: bytes) -> List[Message]:
        """Messages completed by these bytes. Raises ProtocolError on anything malformed."""
        if self.peer_channel is None:
            need = HELLO.size - len(self._hello)
            self._hello += data[:need]
            data = data[need:]
            if len(self._hello) < HELLO.size:
                return []
            self.peer_channel = decode_hello(bytes(self._hello))
            if self.peer_channel != self.channel:
                raise ProtocolError(f"peer opened channel {self.peer_channel}, expected {self.channel}")
        return [decode(f) for f in self._frames.feed(data)] if data else []

    @staticmethod
    def send(msg: Message) -> bytes:
        return msg.encode()
