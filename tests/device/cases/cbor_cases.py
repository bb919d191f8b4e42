# ucrumb.cbor: deterministic encoding, strict decoding (runs on CPython and MicroPython).
from binascii import hexlify

from cases import h, raises
from ucrumb.cbor import CBORError, dumps, loads

# RFC 8949 Appendix A, every example that is neither a float, a tag nor an
# indefinite-length item (those are rejections below).
RFC_A = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
]


def _hex(b):
    return hexlify(b).decode()


def test_rfc8949_appendix_a_encode():
    for v, enc in RFC_A:
        got = _hex(dumps(v))
        assert got == enc, (v, got, enc)


def test_rfc8949_appendix_a_decode():
    for v, enc in RFC_A:
        got = loads(h(enc))
        assert got == v and type(got) is type(v), (enc, got, v)


def test_int_boundaries():
    for n, enc in (
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (4294967295, "1affffffff"),
        (4294967296, "1b0000000100000000"),
        (-24, "37"),
        (-25, "3818"),
        (-256, "38ff"),
        (-257, "390100"),
        (-4294967297, "3b0000000100000000"),
    ):
        assert _hex(dumps(n)) == enc, (n, _hex(dumps(n)))
        assert loads(h(enc)) == n


def test_length_boundaries():
    for n, head in ((23, "57"), (24, "5818"), (255, "58ff"), (256, "590100"), (1000, "5903e8")):
        b = bytes(n)
        e = dumps(b)
        assert _hex(e[: len(e) - n]) == head, (n, _hex(e[:4]))
        assert loads(e) == b
        s = "x" * n
        assert loads(dumps(s)) == s
        lst = [0] * n
        assert loads(dumps(lst), max_items=n + 1) == lst


def test_roundtrip_values():
    vals = [
        0,
        -1,
        2**63,
        2**64 - 1,
        -(2**64),
        b"\x00\xff" * 40,
        "h\u00e9llo w\u00f6rld \u2603 \U0001f600",
        [1, [2, [3, [4, []]]]],
        {"sub": "device-1", 1: b"kid", -3: [True, False, None], "k": {}},
        {1: {2: {3: {4: "deep"}}}},
        [{"a": [b"", "", 0, -0]}],
    ]
    for v in vals:
        e = dumps(v)
        d = loads(e)
        assert d == v, (v, d)
        assert dumps(d) == e


def _lcg(seed):
    # tiny deterministic PRNG (same sequence on both runtimes)
    while True:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        yield seed


def _rand_value(r, depth):
    k = next(r) % (9 if depth < 4 else 6)
    if k == 0:
        return next(r) - 0x40000000
    if k == 1:
        return (next(r) << 33) | next(r)
    if k == 2:
        return -((next(r) << 33) | next(r)) - 1
    if k == 3:
        return bytes(next(r) & 0xFF for _ in range(next(r) % 30))
    if k == 4:
        return "".join(chr(0x20 + next(r) % 0x2000) for _ in range(next(r) % 12))
    if k == 5:
        return (True, False, None)[next(r) % 3]
    if k == 6:
        return [_rand_value(r, depth + 1) for _ in range(next(r) % 5)]
    d = {}
    for _ in range(next(r) % 5):
        kk = next(r) % 3
        key = next(r) % 100 - 50 if kk == 0 else ("k%d" % (next(r) % 50)) if kk == 1 else chr(0x20 + next(r) % 0x2000)
        d[key] = _rand_value(r, depth + 1)
    return d


def test_roundtrip_pseudorandom():
    r = _lcg(20240601)
    for _ in range(150):
        v = _rand_value(r, 0)
        e = dumps(v)
        d = loads(e)
        assert d == v, (v, d)
        assert dumps(d) == e


def test_encode_accepts_tuple_bytearray_memoryview():
    assert dumps((1, 2)) == dumps([1, 2])
    assert dumps(bytearray(b"ab")) == b"\x42ab"
    assert dumps(memoryview(b"xabx")[1:3]) == b"\x42ab"
    assert type(dumps(1)) is bytes


def test_loads_accepts_bytes_like():
    assert loads(bytearray(b"\x82\x01\x02")) == [1, 2]
    assert loads(memoryview(b"\x00\x82\x01\x02")[1:]) == [1, 2]


def test_decoded_types():
    assert type(loads(b"\x41a")) is bytes
    assert type(loads(b"\x61a")) is str
    assert type(loads(b"\x80")) is list
    assert type(loads(b"\xa0")) is dict


def test_map_keys_sorted_bytewise():
    # bytewise order of encoded keys (RFC 8949 4.2.1), not length-first:
    # 10 -> 0a, 24 -> 1818, -1 -> 20, "" -> 60, "a" -> 6161, "b" -> 6162
    v = {"b": 1, "a": 2, -1: 3, 24: 4, 10: 5, "": 6}
    assert _hex(dumps(v)) == "a6" "0a05" "181804" "2003" "6006" "616102" "616201"
    ins = {}
    for k in (10, "b", "", 24, "a", -1):
        ins[k] = v[k]
    assert dumps(ins) == dumps(v)
    assert loads(dumps(v)) == v
    assert loads(h("a2 1818 00 20 00")) == {24: 0, -1: 0}


def test_encode_rejects_unsupported():
    for v in (1.5, {1, 2}, object(), 2**64, -(2**64) - 1, [2**64], {1.0: 1}, {(1,): 2}, {True: 1}, {None: 1},
              {b"k": 1}):  # map keys are int or text only (PROTOCOL.md §2)
        raises(CBORError, dumps, v)


# --- strict decoder: every rejection ------------------------------------------------


def _bad(*hexes, **kw):
    for x in hexes:
        e = raises(CBORError, loads, h(x), **kw)
        assert isinstance(e, ValueError)


def test_reject_trailing_bytes():
    _bad("0000", "8000", "a0f6", "6161 61", "f5 00")


def test_reject_truncated():
    _bad("", "18", "19 01", "1a 000000", "1b 00000000000000", "38", "42 01", "5818", "62 61", "82 01", "a1 01", "a2 01 02 03", "81", "9a 00 01 00 00")


def test_reject_indefinite_lengths():
    _bad(
        "5f 42 0102 43 030405 ff",
        "7f 65 7374726561 64 6d696e67 ff",
        "9f ff",
        "9f 01 82 0203 9f 0405 ff ff",
        "83 01 82 0203 9f 0405 ff",
        "bf 61 61 01 61 62 9f 02 03 ff ff",
        "bf ff",
        "ff",
        "1f",
        "3f",
    )


def test_reject_reserved_additional_info():
    _bad("1c", "1d", "1e", "3c", "5c", "7d", "9e", "bc", "dc", "fc", "fd", "fe")


def test_reject_non_preferred_ints_and_lengths():
    _bad(
        "18 17",  # 23 in 1 byte
        "18 00",
        "19 00ff",  # 255 in 2 bytes
        "19 0000",
        "1a 0000ffff",
        "1b 00000000ffffffff",
        "38 17",  # -24 long form
        "39 00ff",
        "3b 00000000ffffffff",
        "58 01 00",  # byte-string length 1 in 1 byte
        "59 0001 00",
        "78 01 61",
        "98 00",
        "99 0001 00",
        "b8 00",
        "ba 00000001 00 00",
    )


def test_reject_duplicate_and_unsorted_keys():
    _bad(
        "a2 01 01 01 02",  # duplicate int key
        "a2 6161 01 6161 02",  # duplicate text key
        "a2 03 04 01 02",  # out of order
        "a2 6162 01 6161 02",
        "a2 6161 01 01 02",  # text before int
        "a2 20 00 1818 00",  # length-first order is not bytewise order
        "a2 41 61 01 40 01",
    )


def test_reject_keys_not_int_or_text():
    _bad("a1 80 01", "a1 a0 01", "a1 f5 01", "a1 f4 01", "a1 f6 01", "a1 40 01", "a2 01 00 41 61 00")


def test_reject_tags():
    _bad("c0 74 323031332d30332d32315432303a30343a30305a", "c1 1a 514b67b0", "c2 49 010000000000000000", "c3 49 010000000000000000", "d8 20 60", "d9 d9f7 00", "c6 00")


def test_reject_floats():
    _bad("f9 0000", "f9 3c00", "f9 7c00", "fa 47c35000", "fb 3ff199999999999a", "f9 7e00")


def test_reject_undefined_and_simple_values():
    _bad("f7", "f0", "e0", "f3", "f8 ff", "f8 20", "f8 18", "82 f7 01", "f8 14", "f8 15", "f8 16")


def test_reject_invalid_utf8():
    _bad(
        "61 ff",
        "61 80",  # lone continuation byte
        "62 c0 80",  # overlong NUL
        "62 c1 bf",
        "63 e0 80 af",  # overlong 3-byte
        "63 ed a0 80",  # UTF-16 surrogate D800
        "63 ed bf bf",
        "64 f0 80 80 80",  # overlong 4-byte
        "64 f4 90 80 80",  # > U+10FFFF
        "64 f5 80 80 80",
        "62 e2 82",  # truncated sequence
        "63 61 e2 82",
        "65 f8 88 80 80 80",
        "62 c3 41",
    )
    # valid edge cases are accepted
    assert loads(h("63 ed 9f bf")) == "\ud7ff"
    assert loads(h("64 f4 8f bf bf")) == "\U0010ffff"
    assert loads(h("63 ee 80 80")) == "\ue000"


def test_bounds_depth():
    nested = b"\x81" * 16 + b"\x00"
    v = loads(nested)
    for _ in range(16):
        v = v[0]
    assert v == 0
    _bad("81" * 17 + "00")
    _bad("818100", max_depth=1)
    assert loads(h("8100"), max_depth=1) == [0]
    _bad("a1 01 a1 01 a1 01 00", max_depth=2)
    # deep garbage fails on depth, without recursing further
    _bad("81" * 5000)


def test_bounds_items():
    assert loads(h("83 01 02 03"), max_items=4) == [1, 2, 3]
    _bad("83 01 02 03", max_items=3)
    _bad("a2 01 02 03 04", max_items=4)
    assert loads(h("a2 01 02 03 04"), max_items=5) == {1: 2, 3: 4}
    _bad("82 82 01 02 82 03 04", max_items=6)


def test_bounds_string_length():
    assert loads(h("43 010203"), max_len=3) == b"\x01\x02\x03"
    _bad("44 01020304", max_len=3)
    _bad("64 61626364", max_len=3)


def test_huge_declared_lengths_rejected_before_allocation():
    _bad(
        "5b ffffffffffffffff",
        "7b ffffffffffffffff",
        "9b ffffffffffffffff",
        "bb ffffffffffffffff",
        "5a 7fffffff 00",
        "9a 7fffffff 00",
        "ba 7fffffff 00 00",
        "99 ffff",  # 65535 items declared, none present
        "b9 ffff 00",
    )
    _bad("59 1000" + "00" * 10, max_len=100000)  # longer than the input


def test_loads_rejects_non_bytes():
    for v in ("00", None, 5, [0], 1.0):
        raises(CBORError, loads, v)


def test_error_is_valueerror_with_message():
    e = raises(CBORError, loads, b"\x00\x00")
    assert isinstance(e, ValueError)
    assert str(e)
