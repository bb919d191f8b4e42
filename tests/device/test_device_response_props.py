"""The device's handling of an issuer answer is total (CPython, hypothesis, derandomized).

ucrumb.client.answer() and tokens() are pure: whatever the bytes, they
return a crumb answer / validated tokens or raise the client's
IssuerUnavailable, nothing else. A Client fed the same bytes as its
issuer's answer ends every token() in a token or one of its own errors, and
adopts only a time inside the documented range. These are the fuzzing entry
points of the device's response handling.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_device_cbor_differential import MUTATION, mutate

from crumb import cbor
from crumb.wire import DEVICE_TIME_MAX, DEVICE_TIME_MIN
from ucrumb import client as C

SETTINGS = settings(derandomize=True, max_examples=1000, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
T = 1_800_000_000
ANSWERS = [
    cbor.dumps({1: b"t" * 40, 2: 60, 34: 1, -65537: T}),
    cbor.dumps({1: b"t" * 40, 2: 60, 34: 1, -65537: T, -65539: 3}),
    cbor.dumps({34: 1, -65537: T, -65538: [[b"t" * 40, 60, 1]] * 4}),
    cbor.dumps({30: 2, 31: "stale", -65537: T, -65540: "stale_time"}),
    cbor.dumps({30: 1, 31: "slow down", -65537: T, -65540: "rate_limited", -65541: 7}),
]
# Values a field may be given instead of the right one.
ODD = st.one_of(st.integers(-(2**64), 2**64 - 1), st.sampled_from([DEVICE_TIME_MIN - 1, DEVICE_TIME_MIN,
                DEVICE_TIME_MAX, DEVICE_TIME_MAX + 1, 0, 86400, 86401]), st.binary(max_size=8), st.text(max_size=4),
                st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=3))
STATUS = st.sampled_from([200, 400, 403, 429, 500, 503, 302, 100])


def check_answer(status: int, data: bytes, n: int) -> None:
    try:
        resp = C.answer(status, data)
    except C.IssuerUnavailable as e:
        assert e.code in ("issuer_unavailable", "bad_time")
        return
    assert type(resp) is dict
    t = resp.get(-65537)
    assert t is None or (type(t) is int and DEVICE_TIME_MIN <= t <= DEVICE_TIME_MAX)
    if -65540 in resp:
        return
    try:
        items = C.tokens(resp, n)
    except C.IssuerUnavailable as e:
        assert e.code == "issuer_unavailable"
        return
    assert len(items) == n
    for tok, life, uses in items:
        assert type(tok) is bytes and type(life) is int and 1 <= life <= 86400 and type(uses) is int and uses >= 1


@SETTINGS
@given(STATUS, st.binary(max_size=64), st.sampled_from([1, 4]))
def test_answer_on_random_bytes(status, data, n):
    check_answer(status, data, n)


@SETTINGS
@given(STATUS, st.sampled_from(ANSWERS), st.lists(MUTATION, min_size=1, max_size=3), st.sampled_from([1, 4]))
def test_answer_on_mutated_answers(status, data, ops, n):
    check_answer(status, mutate(data, ops), n)


@SETTINGS
@given(st.sampled_from([1, 2, -65537, -65538, -65539, -65540]), ODD, st.sampled_from(ANSWERS))
def test_answer_with_one_odd_field(key, value, data):
    m = cbor.loads(data, max_string=4096)
    m[key] = value
    for status in (200, 400):
        check_answer(status, cbor.dumps(m), 4 if -65538 in m else 1)


class Fed(C.Client):
    """A client whose issuer answers with the given bytes."""

    def __init__(self, status: int, data: bytes) -> None:
        super().__init__("http://issuer.test", "dev-0001", bytes(32), batch=1)
        self.reply = (status, {}, data)

    def _post(self, body, max_body):
        return self.reply


@SETTINGS
@given(STATUS, st.one_of(st.binary(max_size=64), st.sampled_from(ANSWERS)), st.lists(MUTATION, max_size=3))
def test_client_on_any_answer(status, data, ops):
    c = Fed(status, mutate(data, ops))
    try:
        tok = c.token("/sensors/temp01", "read")
    except C.CrumbError:
        pass
    else:
        assert type(tok) is bytes
    assert c.now() == 0 or DEVICE_TIME_MIN <= c.now() <= DEVICE_TIME_MAX + 1
    # and the client still builds a request: its time always fits the 4-byte field
    assert len(c._request([("/sensors/temp01", "read")], 1)) > 0
