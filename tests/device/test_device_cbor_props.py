"""Property tests (CPython): ucrumb.cbor agrees with cbor2, and the strict
decoder only ever raises CBORError."""

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ucrumb.cbor import CBORError, dumps, loads

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
keys = st.one_of(ints, st.text(max_size=8))  # int or text only (PROTOCOL.md §2)
scalars = st.one_of(ints, st.binary(max_size=40), st.text(max_size=20), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)
# keys whose encodings all have the same length, so RFC 7049 length-first
# order (cbor2 canonical=True) and RFC 8949 bytewise order coincide
uniform_keys = st.one_of(st.integers(0, 23), st.text(min_size=1, max_size=1, alphabet="abcdefghij"))
uniform_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.integers(0, 23), inner, max_size=6),
        st.dictionaries(st.text(min_size=1, max_size=1, alphabet="abcdefghij"), inner, max_size=6),
    ),
    max_leaves=25,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = {"max_depth": 64, "max_items": 100000, "max_len": 100000}


@SETTINGS
@given(values)
def test_device_encoding_decodes_with_cbor2(v):
    e = dumps(v)
    assert cbor2.loads(e) == v
    assert loads(e, **LIMITS) == v


@SETTINGS
@given(values)
def test_device_decoder_on_cbor2_canonical(v):
    # cbor2 sorts map keys length-first (RFC 7049); ucrumb requires bytewise
    # order (RFC 8949 4.2.1). Where they coincide ucrumb must decode cbor2's
    # bytes to the same value; where they differ it must reject them.
    e = cbor2.dumps(v, canonical=True)
    if e == dumps(v):
        assert loads(e, **LIMITS) == v
    else:
        try:
            loads(e, **LIMITS)
        except CBORError as err:
            assert "key" in str(err)
        else:
            raise AssertionError("accepted a map not in bytewise key order")


@SETTINGS
@given(uniform_values)
def test_same_bytes_as_cbor2_canonical_when_orders_agree(v):
    e = cbor2.dumps(v, canonical=True)
    assert dumps(v) == e
    assert loads(e, **LIMITS) == v


@SETTINGS
@given(st.binary(max_size=64))
def test_decoder_on_random_bytes(data):
    # only CBORError; anything accepted is well-formed and canonical
    try:
        v = loads(data)
    except CBORError:
        return
    assert cbor2.loads(data) == v
    assert dumps(v) == data


@SETTINGS
@given(values, st.data())
def test_decoder_on_mutated_encodings(v, data):
    e = bytearray(dumps(v))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.integers(0, 2))
        i = data.draw(st.integers(0, max(0, len(e) - 1)))
        if op == 0 and e:
            e[i] = data.draw(st.integers(0, 255))
        elif op == 1:
            e.insert(i, data.draw(st.integers(0, 255)))
        elif e:
            del e[i]
    try:
        w = loads(bytes(e), **LIMITS)
    except CBORError:
        return
    assert cbor2.loads(bytes(e)) == w
    assert dumps(w) == bytes(e)
