"""Protobuf's wire format, the one piece written by hand: the base-128 varint (the
converter's Examples, TensorFlow's string `tensor_content`)."""

from __future__ import annotations

_SMALL = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """`value` as a varint; a negative one as protobuf writes an int64, in 10 bytes."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
