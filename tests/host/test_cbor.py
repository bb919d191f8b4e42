import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crumb import cbor
from crumb.errors import Malformed

# RFC 8949 Appendix A (the non-float, non-tag examples).
APPENDIX_A = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"), (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"), (False, "f4"), (True, "f5"),
    (None, "f6"), (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"), ("", "60"), ("a", "6161"),
    ("IETF", "6449455446"), ("\"\\", "62225c"), ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
]


@pytest.mark.parametrize("value,hexed", APPENDIX_A)
def test_rfc8949_examples(value, hexed):
    assert cbor.dumps(value).hex() == hexed
    assert cbor.loads(bytes.fromhex(hexed), max_items=32) == value


@pytest.mark.parametrize("hexed,why", [
    ("", "truncated"), ("18", "truncated"), ("1900", "truncated"), ("62c3", "truncated string"),
    ("8201", "truncated container"), ("a101", "truncated container"),
    ("0102", "trailing"), ("1817", "non-preferred"), ("190017", "non-preferred"),
    ("1a0000ffff", "non-preferred"), ("1b00000000ffffffff", "non-preferred"),
    ("3817", "non-preferred"), ("5801ff", "non-preferred"), (("9801" "00"), "non-preferred"),
    ("5f4100ff", "indefinite"), ("9fff", "indefinite"), ("bfff", "indefinite"), ("7f6161ff", "indefinite"),
    ("a201020103", "duplicate"), ("a203040102", "out of order"), ("a2616202616101", "out of order"),
    ("c11a514b67b0", "tag"), ("d8184100", "tag"), ("f93c00", "floating"), ("fb3ff0000000000000", "floating"),
    ("f7", "simple"), ("f820", "simple"), ("f814", "simple"), ("f815", "simple"), ("f816", "simple"),
    ("ff", "reserved|indefinite"), ("1c", "reserved"),
    ("62c328", "UTF-8"), ("a1f400", "key"), ("a14100f6", "key"), ("a1800102", "key|container"),
])
def test_strict_rejections(hexed, why):
    with pytest.raises(Malformed) as e:
        cbor.loads(bytes.fromhex(hexed))
    assert any(w.lower() in str(e.value).lower() for w in why.split("|")), str(e.value)


def test_depth_bomb_is_bounded():
    bomb = b"\x81" * 10_000 + b"\x00"
    with pytest.raises(Malformed, match="deep"):
        cbor.loads(bomb)


def test_declared_lengths_checked_before_allocation():
    # Huge declared sizes fail on the limit or the remaining bytes, not by allocating.
    for hexed in ("5b7fffffffffffffff", "9b7fffffffffffffff", "bb7fffffffffffffff", "9a000fffff"):
        with pytest.raises(Malformed):
            cbor.loads(bytes.fromhex(hexed), max_items=2**63, max_string=2**63)


def test_limits():
    with pytest.raises(Malformed, match="limit"):
        cbor.loads(cbor.dumps("x" * 300))
    with pytest.raises(Malformed, match="limit"):
        cbor.loads(cbor.dumps(list(range(40))))
    assert cbor.loads(cbor.dumps("x" * 300), max_string=300) == "x" * 300


values = st.recursive(
    st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20)
    | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.integers(min_value=-1000, max_value=1000) | st.text(max_size=5), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_and_agreement_with_cbor2(value):
    encoded = cbor.dumps(value)
    assert cbor.loads(encoded, max_depth=16) == value
    assert cbor2.loads(encoded) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_gives_only_malformed(data):
    try:
        value = cbor.loads(data, max_depth=16)
    except Malformed:
        return
    assert cbor.dumps(value) == data  # whatever is accepted is the one encoding of its value
