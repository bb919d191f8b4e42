"""Strict, bounded CBOR for crumb: one value, one encoding.

The decoder accepts only RFC 8949 §4.2.1 core deterministic encoding of the
types crumb uses (integers, byte and text strings, arrays, maps, false, true,
null). Everything else is ``Malformed``: tags, floats, indefinite lengths,
non-shortest heads, duplicate or unsorted map keys, trailing bytes. Every
declared length is checked against the bytes that remain before anything is
sliced, so a hostile header cannot make us allocate.
"""

from __future__ import annotations

from typing import Any

from .errors import Malformed
from .wire import MAX_DEPTH, MAX_ITEMS, MAX_STRING

_FALSE, _TRUE, _NULL = 20, 21, 22


def loads(
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    max_string: int = MAX_STRING,
) -> Any:
    """Decode exactly one CBOR value that fills ``data``."""
    if not isinstance(data, bytes):
        data = bytes(data)
    value, end = _item(data, 0, len(data), max_depth, max_items, max_string)
    if end != len(data):
        raise Malformed(f"{len(data) - end} trailing bytes after the CBOR value")
    return value


def decode_item(data: bytes, i: int, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
                max_string: int = MAX_STRING) -> tuple[Any, int]:
    """One CBOR value starting at offset ``i`` of ``data`` (strict, as ``loads``): (value, offset after it)."""
    return _item(data, i, len(data), max_depth, max_items, max_string)


def _item(data: bytes, i: int, n: int, depth: int, max_items: int, max_string: int) -> tuple[Any, int]:
    # The head is decoded inline: this is the verifier's hot path.
    if i >= n:
        raise Malformed(f"truncated at offset {i}")
    ib = data[i]
    mt = ib >> 5
    ai = ib & 31
    i += 1
    if ai < 24:
        arg = ai
    elif ai == 24:
        if i >= n:
            raise Malformed(f"truncated at offset {i}")
        arg = data[i]
        i += 1
        if mt == 7:
            # RFC 8949 §3.3: 0xf8 with a value below 32 is not well-formed, and
            # crumb uses no simple value above 31 (false/true/null have one byte).
            raise Malformed(f"two-byte simple value at offset {i - 2}")
        if arg < 24:
            raise Malformed(f"non-preferred encoding at offset {i - 2}")
    elif ai < 28:
        width = 1 << (ai - 24)
        if i + width > n:
            raise Malformed(f"truncated at offset {i}")
        arg = int.from_bytes(data[i:i + width], "big")
        i += width
        if mt == 7:
            raise Malformed(f"floating-point value at offset {i - width - 1}")
        if arg < (1 << (4 * width)):
            raise Malformed(f"non-preferred encoding at offset {i - width - 1}")
    elif ai == 31:
        raise Malformed(f"indefinite length at offset {i - 1}")
    else:
        raise Malformed(f"reserved additional information at offset {i - 1}")

    if mt == 0:
        return arg, i
    if mt == 1:
        return -1 - arg, i
    if mt == 2 or mt == 3:
        if arg > max_string:
            raise Malformed(f"string of {arg} bytes exceeds the limit of {max_string}")
        end = i + arg
        if end > n:
            raise Malformed(f"truncated string at offset {i}")
        raw = data[i:end]
        if mt == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise Malformed(f"invalid UTF-8 in text at offset {i}") from None
    if mt == 4 or mt == 5:
        if depth <= 0:
            raise Malformed(f"nesting too deep at offset {i - 1}")
        if arg > max_items:
            raise Malformed(f"container of {arg} items exceeds the limit of {max_items}")
        # Each item needs at least one byte (two per map entry).
        if arg * (mt - 3) > n - i:
            raise Malformed(f"truncated container at offset {i}")
        depth -= 1
        if mt == 4:
            out: list[Any] = []
            append = out.append
            for _ in range(arg):
                # Small unsigned ints and short strings inline: the common case.
                b = data[i] if i < n else 0xFF
                if b < 0x18:
                    append(b)
                    i += 1
                elif 0x40 <= b < 0x58:
                    end = i + 1 + (b & 31)
                    if end > n:
                        raise Malformed(f"truncated string at offset {i + 1}")
                    append(data[i + 1:end])
                    i = end
                elif 0x60 <= b < 0x78:
                    end = i + 1 + (b & 31)
                    if end > n:
                        raise Malformed(f"truncated string at offset {i + 1}")
                    append(_text(data, i + 1, end))
                    i = end
                else:
                    v, i = _item(data, i, n, depth, max_items, max_string)
                    append(v)
            return out, i
        m: dict = {}
        prev = b""
        for _ in range(arg):
            start = i
            b = data[i] if i < n else 0xFF
            if b < 0x18:
                k = b
                i += 1
            elif 0x20 <= b < 0x38:
                k = 0x1F - b
                i += 1
            else:
                k, i = _item(data, i, n, depth, max_items, max_string)
                if not isinstance(k, (int, str)) or isinstance(k, bool):
                    raise Malformed(f"map key at offset {start} is not an integer or text")
            key_bytes = data[start:i]
            if key_bytes <= prev:
                raise Malformed(f"map key at offset {start} is duplicate or out of order")
            prev = key_bytes
            # Values: small ints, 32-bit uints (times) and short strings inline.
            b = data[i] if i < n else 0xFF
            if b < 0x18:
                m[k] = b
                i += 1
            elif b == 0x1A and i + 5 <= n:
                v = int.from_bytes(data[i + 1:i + 5], "big")
                if v < 0x10000:
                    raise Malformed(f"non-preferred encoding at offset {i}")
                m[k] = v
                i += 5
            elif 0x40 <= b < 0x58:
                end = i + 1 + (b & 31)
                if end > n:
                    raise Malformed(f"truncated string at offset {i + 1}")
                m[k] = data[i + 1:end]
                i = end
            elif 0x60 <= b < 0x78:
                end = i + 1 + (b & 31)
                if end > n:
                    raise Malformed(f"truncated string at offset {i + 1}")
                m[k] = _text(data, i + 1, end)
                i = end
            else:
                m[k], i = _item(data, i, n, depth, max_items, max_string)
        return m, i
    if mt == 7:
        if arg == _FALSE:
            return False, i
        if arg == _TRUE:
            return True, i
        if arg == _NULL:
            return None, i
        raise Malformed(f"unsupported simple value {arg} at offset {i - 1}")
    raise Malformed(f"tag at offset {i - 1} (crumb uses no tags)")


def head(data: bytes, i: int) -> tuple[int, int, int]:
    """Read one strict head at ``i``: (major type, argument, next offset).

    Indefinite/reserved forms and non-preferred arguments are refused; callers
    check the major type (7 included: it is returned, not refused) and, for a
    container or string, the length against what remains.
    """
    n = len(data)
    if i >= n:
        raise Malformed(f"truncated at offset {i}")
    ib = data[i]
    mt, ai = ib >> 5, ib & 31
    if ai < 24:
        return mt, ai, i + 1
    if ai > 27:
        raise Malformed(f"indefinite length or reserved head at offset {i}")
    width = 1 << (ai - 24)
    end = i + 1 + width
    if end > n:
        raise Malformed(f"truncated at offset {i}")
    arg = int.from_bytes(data[i + 1:end], "big")
    if arg < (24 if width == 1 else 1 << (4 * width)):
        raise Malformed(f"non-preferred encoding at offset {i}")
    return mt, arg, end


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"invalid UTF-8 in text at offset {start}") from None


def _head(mt: int, arg: int) -> bytes:
    mt <<= 5
    if arg < 24:
        return bytes((mt | arg,))
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return bytes((mt | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes((mt | 26,)) + arg.to_bytes(4, "big")
    if arg < 0x10000000000000000:
        return bytes((mt | 27,)) + arg.to_bytes(8, "big")
    raise ValueError("integer out of CBOR range")


def dumps(value: Any) -> bytes:
    """Encode ``value`` deterministically (RFC 8949 §4.2.1)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(v: Any, out: bytearray) -> None:
    if v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif v is None:
        out.append(0xF6)
    elif isinstance(v, int):
        out += _head(0, v) if v >= 0 else _head(1, -1 - v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        out += _head(2, len(v))
        out += v
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        out += _head(3, len(raw))
        out += raw
    elif isinstance(v, (list, tuple)):
        out += _head(4, len(v))
        for item in v:
            _encode(item, out)
    elif isinstance(v, dict):
        out += _head(5, len(v))
        for kb, val in sorted((dumps(k), val) for k, val in v.items()):
            out += kb
            _encode(val, out)
    else:
        raise TypeError(f"crumb CBOR cannot encode {type(v).__name__}")


_SHORT_BSTR_HEADS = [_head(2, n) for n in range(256)]  # signing inputs are built per verification


def bstr_head(length: int) -> bytes:
    """The head of a byte string of ``length`` bytes (for building signing inputs)."""
    return _SHORT_BSTR_HEADS[length] if length < 256 else _head(2, length)
