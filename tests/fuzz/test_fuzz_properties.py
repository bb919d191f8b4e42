"""The fuzz targets under hypothesis: structured inputs that byte mutation seldom spells.

Each property feeds one target (crumb.tooling.fuzz) and holds it to the same
rule as the fuzzer: only the code's typed errors, the target's invariants,
and its work bound. The suite's hypothesis profile (tests/conftest.py) is
derandomized and the example counts are fixed, so every run tries the same
inputs. A property that finds a defect not fixed yet is a strict xfail
naming the defect; the corpus holds the minimal case.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crumb import cbor
from crumb.keys import b64u
from crumb.tooling.fuzz import TARGETS, fixtures, run_guarded
from crumb.tooling.fuzz.device_targets import _http
from crumb.tooling.fuzz.issuer_targets import HEADER_END
from crumb.wire import (
    ERR_CODE,
    ERR_DESCRIPTION,
    ERR_ERROR,
    ERR_RETRY_AFTER,
    RESP_ACCESS_TOKEN,
    RESP_EXPIRES_IN,
    RESP_TIME,
    RESP_TOKEN_TYPE,
    RESP_TOKENS,
    RESP_USES,
)


@pytest.fixture(scope="module", autouse=True)
def _close_targets():
    yield
    for target in TARGETS.values():
        close = getattr(target._run, "close", None)
        if close is not None:
            close()
            target._run = None


def feed(name: str, data: bytes) -> None:
    run_guarded(TARGETS[name], data)


@st.composite
def mutated(draw, seeds: dict[str, bytes], max_edits: int = 4) -> bytes:
    """A seed with a few byte edits: flip, insert, delete, duplicate a slice, or truncate."""
    data = bytearray(draw(st.sampled_from(sorted(seeds.items())))[1])
    for _ in range(draw(st.integers(0, max_edits))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "dup", "cut"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x1B, 0x1F, 0x3A, 0x40, 0x5F, 0x7F, 0x9F, 0xBF, 0xF6,
                                            0xFF]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 32))]
        else:
            del data[i:]
    return bytes(data)


# CBOR values of the types crumb speaks, nested a little.
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 64), 2 ** 64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-70000, 70000) | st.text(max_size=6),
                                                                  inner, max_size=5),
    max_leaves=20,
)


# -- CBOR -----------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=64) | cbor_values.map(cbor.dumps) | mutated(TARGETS["cbor"].seeds()))
def test_host_cbor(data):
    feed("cbor", data)


@settings(max_examples=300)
@given(st.binary(max_size=64) | cbor_values.map(cbor.dumps) | mutated(TARGETS["cbor"].seeds()))
def test_device_cbor(data):
    feed("device_cbor", data)


@settings(max_examples=300)
@given(cbor_values.map(cbor.dumps), st.integers(0, 64))
def test_host_and_device_decoders_agree_on_values_and_their_prefixes(data, cut):
    feed("cbor_diff", data)
    feed("cbor_diff", data[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=64) | cbor_values.map(cbor.dumps) | mutated(TARGETS["cbor"].seeds()))
def test_host_and_device_decoders_agree_on_any_bytes(data):
    feed("cbor_diff", data)


@settings(max_examples=200)
@given(st.dictionaries(st.binary(max_size=4), st.integers(0, 23), min_size=1, max_size=3).map(
    lambda m: b"".join([bytes((0xA0 | len(m),))] + [b"".join(kv) for kv in sorted(
        (cbor.dumps(k), cbor.dumps(v)) for k, v in m.items())])))
def test_host_and_device_decoders_agree_on_byte_string_keys(data):
    feed("cbor_diff", data)


# -- the verifier ---------------------------------------------------------------------


@settings(max_examples=400)
@given(st.integers(0, 15), mutated({k: v[1:] for k, v in TARGETS["verify"].seeds().items()}, max_edits=3))
def test_verifier_on_mutated_tokens(flags, token):
    feed("verify", bytes((flags,)) + token)


# -- the issuer -----------------------------------------------------------------------

# Text without lone surrogates (hypothesis leaves category Cs out by default):
# JSON cannot spell them by accident, and defect 4 has its own corpus cases.
names = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | names,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4), max_leaves=12)
resources = st.sampled_from(["/sensors/temp01", "/config/a", "/api/v1", "/sensors/*", "/", "a", "/x y", "/a|b"]) | names
permissions = (st.sampled_from(["read", "publish", "write", "GET"]) | names
               | st.lists(st.sampled_from(["read", "publish", "x", ""]), max_size=3) | st.integers(-2, 2 ** 66))


@st.composite
def json_requests(draw) -> bytes:
    doc = {"client_id": draw(st.sampled_from([fixtures.DEVICE_ID, "fuzz-dev-02", "nobody", ""]) | json_values),
           "scope": draw(st.lists(st.tuples(resources, permissions).map(list), min_size=1, max_size=4)
                         | st.builds(lambda r, o: f"{r}|{o}", resources, names) | json_values),
           "nonce": draw(st.just(b64u(b"\1" * 6)) | json_values),
           "time": draw(st.just(fixtures.NOW) | json_values),
           "mac": draw(st.just(b64u(bytes(16))) | json_values)}
    for name in ("audience", "count", "grant_type", "ace_profile"):
        if draw(st.booleans()):
            doc[name] = draw(st.sampled_from(["svc", "", 2, "client_credentials"]) | json_values)
    if draw(st.booleans()):
        doc[draw(names)] = draw(json_values)
    return json.dumps(doc).encode()


@settings(max_examples=400)
@given(json_requests() | mutated(TARGETS["request_json"].seeds()))
def test_json_request_parser(data):
    feed("request_json", data)


@st.composite
def cbor_requests(draw) -> bytes:
    from crumb.issuer.protocol import build_request

    scopes = draw(st.lists(st.tuples(st.sampled_from(["/sensors/temp01", "/config/a", "/api/v1", "/a b", "/é"]),
                                     st.sampled_from(["read", "publish", 3, ["read", "publish"], "a,b"])),
                           min_size=1, max_size=3))
    try:
        return build_request(fixtures.DEVICE_ID, bytes(32), scopes, count=draw(st.integers(1, 3)),
                             audience=draw(st.none() | st.sampled_from(["svc", "x" * 255])),
                             nonce=draw(st.binary(min_size=6, max_size=16)), now=fixtures.NOW,
                             aif=draw(st.booleans()), grant_type=draw(st.booleans()), ace_profile=draw(st.booleans()))
    except (ValueError, TypeError):  # a shape the client-side builder itself refuses: send the seed
        return TARGETS["request_cbor"].seeds()["common"]


@settings(max_examples=300)
@given(cbor_requests() | mutated(TARGETS["request_cbor"].seeds()))
def test_cbor_request_parser(data):
    feed("request_cbor", data)


headers = st.lists(st.sampled_from([b"content-type: application/ace+cbor", b"content-type: application/json",
                                    b"content-type: Application/ACE+CBOR; x=y", b"content-type: text/plain",
                                    b"content-length: 12", b"content-length: -1", b"content-length: 1e3",
                                    b"content-length: 99999999999999999", b"accept: application/json"]),
                   max_size=4)


@settings(max_examples=120)
@given(headers, cbor_requests() | json_requests())
def test_token_endpoint_never_answers_500(head, body):
    feed("token_endpoint", b"\n".join(head) + HEADER_END + body if head else body)


# -- keys -----------------------------------------------------------------------------

jwk_fields = st.fixed_dictionaries(
    {"kty": st.just("OKP") | json_values, "crv": st.just("Ed25519") | json_values},
    optional={"x": st.just(b64u(fixtures.ISSUER.public.raw)) | st.just(b64u(bytes(31))) | names,
              "kid": st.just(fixtures.ISSUER.kid.hex()) | names, "status": st.sampled_from(["current", "retired"]),
              "d": st.just(b64u(fixtures.ATTENUATOR.seed)) | names})


@st.composite
def key_documents(draw) -> bytes:
    keys = draw(st.lists(jwk_fields, max_size=3))
    doc: object = {"keys": keys, "nodes": draw(st.lists(jwk_fields, max_size=2))}
    if draw(st.booleans()):
        doc = keys[0] if keys else {}
    return json.dumps(doc).encode()


@settings(max_examples=150)
@given(key_documents() | mutated(TARGETS["keyset"].seeds()))
def test_key_sets_and_key_files_with_text_fields(data):
    feed("keyset", data)


@settings(max_examples=100)  # was issue 16 defect 1: AttributeError from the base64 decoder
@given(st.builds(lambda x: json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}).encode(),
                 json_values.filter(lambda v: not isinstance(v, str))))
def test_key_sets_whose_x_is_not_text(data):
    feed("keyset", data)


@settings(max_examples=30)
@given(key_documents())
def test_fetched_keys_keep_the_last_good_set(data):
    feed("keyfetch", data)


# -- the device -----------------------------------------------------------------------


@st.composite
def issuer_answers(draw, times: st.SearchStrategy[int]) -> bytes:
    token = fixtures.valid_tokens()["plain"]
    kind = draw(st.sampled_from(["token", "batch", "refusal"]))
    t = draw(times)
    if kind == "token":
        m: dict = {RESP_ACCESS_TOKEN: draw(st.just(token) | st.binary(max_size=8) | names),
                   RESP_EXPIRES_IN: draw(st.integers(-1, 2 ** 32)), RESP_TOKEN_TYPE: 1, RESP_TIME: t}
        if draw(st.booleans()):
            m[RESP_USES] = draw(st.integers(-1, 2 ** 33))
    elif kind == "batch":
        m = {RESP_TOKEN_TYPE: 1, RESP_TIME: t,
             RESP_TOKENS: draw(st.lists(st.lists(st.just(token) | st.integers(0, 100), min_size=0, max_size=4),
                                        max_size=3))}
    else:
        m = {ERR_ERROR: draw(st.integers(0, 6)), ERR_DESCRIPTION: draw(names), RESP_TIME: t,
             ERR_CODE: draw(st.sampled_from(["stale_time", "rate_limited", "scope_denied", "too_large", "x"]))}
        if draw(st.booleans()):
            m[ERR_RETRY_AFTER] = draw(st.integers(0, 2 ** 33))
    status = draw(st.sampled_from(["200 OK", "400 Bad Request", "429 Too Many", "503 Busy", "100 Continue"]))
    extra = draw(st.sampled_from([b"", b"Retry-After: 3\r\n", "Retry-After: \u00b2\r\n".encode(),
                                  b"Retry-After: 99999999999\r\n"]))
    return _http(status, cbor.dumps(m), extra)


@settings(max_examples=150)
@given(issuer_answers(st.integers(0, 2 ** 32 - 1)) | mutated(TARGETS["device_response"].seeds()))
def test_device_handles_issuer_answers(data):
    feed("device_response", data)


@settings(max_examples=60)
@given(issuer_answers(st.integers(2 ** 32, 2 ** 64 - 1)))
def test_device_refuses_absurd_issuer_times(data):
    feed("device_response", data)
