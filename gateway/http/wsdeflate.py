"""WebSocket compression only where it pays: messages under a threshold go out uncompressed."""

from __future__ import annotations

from typing import Any

import hypercorn.protocol.ws_stream as ws_stream
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode, RsvBits

# Below this many bytes a message is sent as it is. A `/ws` frame is NaCl ciphertext in base64 (a streamed word is
# ~80 bytes): deflate saves a quarter at best and costs a zlib call and a sync flush per frame.
THRESHOLD = 1024


class ThresholdDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) that leaves small whole messages uncompressed.

    The RFC lets a sender leave any message uncompressed (RSV1 clear); the receiver inflates only the ones
    marked. Only whole messages are left as they are (hypercorn sends each ASGI message as one frame): a
    fragment's first frame decides for the rest, and only the compressor's state is shared between messages.
    """

    def frame_outbound(self, proto: Any, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool) -> tuple[RsvBits, bytes]:
        if fin and opcode in (Opcode.TEXT, Opcode.BINARY) and len(data) < THRESHOLD:
            return rsv, data
        return super().frame_outbound(proto, opcode, rsv, data, fin)


_installed = False


def install() -> None:
    """Make hypercorn's WebSocket handshake offer `ThresholdDeflate` in place of wsproto's `PerMessageDeflate`
    (hypercorn 0.18 always accepts the client's permessage-deflate offer and has no setting for it). Calling this
    again does nothing."""
    global _installed
    if _installed:
        return
    setattr(ws_stream, "PerMessageDeflate", ThresholdDeflate)  # noqa: B010  (not re-exported: mypy would refuse it)
    _installed = True
