"""The issuer over real HTTP: every answer, every refusal, and what the audit log holds."""

from __future__ import annotations

import json
import os
import random
import socket
import time

import httpx
import pytest

from crumb import cbor
from crumb.errors import ChainIncomplete
from crumb.issuer.codes import CODES
from crumb.issuer.protocol import (
    MAC_BYTES,
    REQ_ACE_PROFILE,
    REQ_AUDIENCE,
    REQ_CLIENT_ID,
    REQ_CRUMB,
    REQ_GRANT_TYPE,
    REQ_SCOPE,
    aif_scope,
    build_json_request,
    build_request,
    crumb_block,
    mac_of,
    parse_cbor_request,
    parse_response,
)
from crumb.keys import b64u
from crumb.replay import MemoryReplayStore
from crumb.services.keyset import parse_json
from crumb.token import attenuate, attest
from crumb.verify import Verifier

from .conftest import crumb_cli
from .policies import NODE_KEYS

CBOR = {"content-type": "application/ace+cbor"}
STARTED = time.time()  # before any request of this module


def issuer_time_now(t: int) -> bool:
    """Whether ``t`` (whole seconds) is a time the issuer read while answering: after this module
    started, not after now. (A bound around the call, not a guess at how long it took.)"""
    return int(STARTED) <= t <= time.time() + 1


def post(fleet, body: bytes, headers=CBOR) -> httpx.Response:
    return httpx.post(f"{fleet.url}/token", content=body, headers=headers, timeout=10)


def refusal(r: httpx.Response, code: str):
    """Assert r is the typed refusal ``code`` with the issuer's time, and return it."""
    resp = parse_response(r.content, r.headers["content-type"])
    assert resp.code == code, (r.status_code, resp)
    assert r.status_code == CODES[code][0] or code == "too_large", r.status_code
    assert resp.message and isinstance(resp.message, str)
    assert resp.ace_error == CODES[code][1]
    assert issuer_time_now(resp.time), resp.time
    assert not resp.tokens
    return resp


def verifier_for(fleet) -> Verifier:
    keys = parse_json(httpx.get(f"{fleet.url}/keys").content)
    return Verifier(list(keys.issuer.values()), node_keys=list(keys.nodes.values()),
                    replay=MemoryReplayStore(fence=False))


# -- issuing ----------------------------------------------------------------------------


def test_single_token_verifies_with_the_published_key(served):
    c = served.client("dev-single")
    r = c.request([("/sensors/temp01", "read")])
    assert r.ok, r
    (token, expires_in, uses), = r.tokens
    assert (expires_in, uses) == (120, 1)
    assert issuer_time_now(r.time), r.time
    v = verifier_for(served).verify(token, "/sensors/temp01", "read")
    assert v.claims.sub == "dev-single" and v.claims.iss == "crumb-test"
    assert v.claims.scope == [["/sensors/temp01", "read"]]  # as narrow as the request
    assert v.claims.exp - v.claims.iat == 120


def test_cbor_response_is_the_documented_map(served):
    c = served.client("dev-map")
    body = build_request("dev-map", c.creds.key, [("/config/sensors", "read")])
    r = post(served, body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/ace+cbor"
    assert r.headers["cache-control"] == "no-store"
    m = cbor.loads(r.content, max_string=4096)
    # access_token, expires_in, token_type (Bearer), and crumb's time and uses (private-use keys)
    assert set(m) == {1, 2, 34, -65537, -65539} and m[2] == 60 and m[34] == 1 and m[-65539] == 3
    assert isinstance(m[1], bytes)


def test_json_clients_get_json(served):
    c = served.client("dev-json")
    r = c.request([("/sensors/x", "publish")], as_json=True)
    assert r.ok and len(r.tokens) == 1
    raw = post(served, build_json_request("dev-json", c.creds.key, [("/sensors/x", "read")]),
               {"content-type": "application/json"})
    doc = raw.json()
    assert raw.status_code == 200 and set(doc) == {"access_token", "expires_in", "token_type", "uses", "time"}
    assert doc["token_type"] == "Bearer"


def test_batch_of_scopes_in_request_order(served):
    c = served.client("dev-batch")
    scopes = [("/sensors/a", "read"), ("/config/sensors", "read"), ("/sensors/b", ["read", "publish"])]
    r = c.request(scopes)
    assert r.ok and len(r.tokens) == 3
    v = verifier_for(served)
    for (resource, perm), (token, expires_in, uses) in zip(scopes, r.tokens):
        op = perm if isinstance(perm, str) else perm[1]
        assert v.verify(token, resource, op).claims.sub == "dev-batch"
    assert [t[2] for t in r.tokens] == [1, 3, 1]


def test_count_gives_n_distinct_single_use_tokens(served):
    c = served.client("dev-count")
    r = c.request([("/sensors/t", "read")], count=5)
    assert r.ok and len(r.tokens) == 5
    v = verifier_for(served)
    ctis = {v.verify(t, "/sensors/t", "read").claims.cti for t, _, _ in r.tokens}
    assert len(ctis) == 5


def test_chain_and_attenuators_come_from_the_policy(served):
    c = served.client("dev-chain")
    r = c.request([("/chained/x", "publish")])
    assert r.ok
    token = r.tokens[0][0]
    v = verifier_for(served)
    with pytest.raises(ChainIncomplete):  # the declared attenuator and hops have not acted yet
        v.verify(token, "/chained/x", "publish", consume=False)
    token = attenuate(token, NODE_KEYS["fleet-gw"], [])
    token = attest(token, NODE_KEYS["gateway"], "gateway")
    token = attest(token, NODE_KEYS["ingest"], "ingest")
    assert v.verify(token, "/chained/x", "publish").attested == ["gateway", "ingest"]


def test_audience_and_method_bitmask(served):
    c = served.client("dev-ota")
    r = c.request([("/ota/image", 1 | 16)], audience="ota")  # GET | FETCH
    assert r.ok
    v = verifier_for(served)
    v.audience = "ota"
    assert v.verify(r.tokens[0][0], "/ota/image", "GET").claims.aud == "ota"
    # the rule's audience goes into the token even when the request names none
    r = c.request([("/ota/image", "GET")])
    assert r.ok


def test_device_named_only_in_the_policy_is_known(served):
    c = served.client("policy-only-1", enroll=False)
    assert c.request([("/sensors/p", "read")]).ok


def test_device_rules_come_before_group_rules(served):
    c = served.client("special-1", enroll=False)
    r = c.request([("/valves/7", "open")])
    assert r.ok and r.tokens[0][1] == 10
    assert c.request([("/sensors/q", "read")]).ok  # and the group's rules still apply


# -- refusals ----------------------------------------------------------------------------


def test_stale_time_carries_issuer_time_and_one_retry_succeeds(served):
    c = served.client("dev-clockless")
    key = c.creds.key
    r = post(served, build_request("dev-clockless", key, [("/sensors/t", "read")], now=0))
    resp = refusal(r, "stale_time")
    # A device without a clock sets it from the refusal and retries once.
    r = post(served, build_request("dev-clockless", key, [("/sensors/t", "read")], now=resp.time))
    assert parse_response(r.content).ok
    future = build_request("dev-clockless", key, [("/sensors/t", "read")], now=int(time.time()) + 3600)
    refusal(post(served, future), "stale_time")


def test_replayed_nonce(served):
    c = served.client("dev-replay")
    body = build_request("dev-replay", c.creds.key, [("/sensors/t", "read")])
    assert post(served, body).status_code == 200
    refusal(post(served, body), "replayed")
    # the same nonce with another time (and so another MAC) is still a replay
    req = parse_cbor_request(body)
    again = build_request("dev-replay", c.creds.key, [("/sensors/t", "read")], nonce=req.nonce, now=req.time + 1)
    refusal(post(served, again), "replayed")


def test_bad_mac_and_foreign_key(served):
    c = served.client("dev-mac")
    body = bytearray(build_request("dev-mac", c.creds.key, [("/sensors/t", "read")]))
    body[-1] ^= 1
    refusal(post(served, bytes(body)), "bad_mac")
    other = served.client("dev-mac-other")
    forged = build_request("dev-mac", other.creds.key, [("/sensors/t", "read")])
    refusal(post(served, forged), "bad_mac")
    # a bad MAC for an id nobody enrolled is bad_mac too: existence is not revealed
    refusal(post(served, build_request("nobody-1", os.urandom(32), [("/sensors/t", "read")])), "bad_mac")


def test_unknown_device_with_a_valid_key(served):
    creds = served.credentials("never-enrolled")  # the right derived key, but no enrollment
    refusal(post(served, build_request(creds.device_id, creds.key, [("/sensors/t", "read")])), "unknown_device")


def test_scope_denied(served):
    c = served.client("dev-deny")
    key = c.creds.key
    for scopes in ([("/valves/1", "open")], [("/sensors/t", "delete")], [("/sens*", "read")],
                   [("/config/sensors", ["read", "write"])], [("/sensors/a", "read"), ("/nope", "read")]):
        refusal(post(served, build_request("dev-deny", key, scopes)), "scope_denied")
    # audience mismatch: the only rule for /ota/image is for audience "ota"
    refusal(post(served, build_request("dev-deny", key, [("/ota/image", "GET")], audience="other")), "scope_denied")


def test_request_pattern_inside_a_rule_pattern_is_allowed(served):
    c = served.client("dev-pattern")
    r = c.request([("/sensors/room1/*", "read")])
    assert r.ok
    assert verifier_for(served).verify(r.tokens[0][0], "/sensors/room1/t", "read")


def test_only_canonical_resources_are_granted(served):
    """Issue 16, defect 12: a /sensors/* rule minted a token for /sensors/../valves/1, which a service that
    normalises paths reads as /valves/1. Resources outside the canonical form (PROTOCOL.md §4.2) are
    malformed, in every form a request can carry them, before the MAC is even checked."""
    c = served.client("dev-canon")
    json_type = {"content-type": "application/json"}
    for resource in ("/sensors/../valves/1", "/sensors/./t", "/sensors//t", "/sensors/t/", "/sensors/%2e%2e/v",
                     "/sensors/..%2fvalves", "/sensors/..\\valves", "/sensors/.\t./v", "/sensors/t\x00",
                     "/sensors/../*", "/sensors/..;/valves/1"):
        for body, headers in ((build_request("dev-canon", c.creds.key, [(resource, "read")]), CBOR),
                              (build_request("dev-canon", c.creds.key, [(resource, "read")], aif=True), CBOR),
                              (build_request("dev-canon", b"\x00" * 32, [(resource, "read")]), CBOR),  # no MAC
                              (json.dumps({"client_id": "dev-canon", "scope": [[resource, "read"]],
                                           "nonce": "AAAAAAAA", "time": int(time.time()),
                                           "mac": b64u(bytes(16))}).encode(), json_type)):
            message = refusal(post(served, body, headers), "malformed").message
            assert "canonical form" in message, message
    # the canonical neighbours are granted, patterns included
    for resource in ("/sensors/t", "/sensors/.hidden", "/sensors/..t", "/sensors/room1/*"):
        assert c.request([(resource, "read")]).ok, resource


def test_batch_over_the_limit(served):
    c = served.client("dev-big")
    r = post(served, build_request("dev-big", c.creds.key, [("/sensors/t", "read")], count=7))
    assert r.status_code == 400
    refusal(r, "too_large")


def test_revoked_device_gets_nothing_from_the_next_request_on(served):
    c = served.client("dev-revoke")
    assert c.request([("/sensors/t", "read")]).ok
    crumb_cli("device", "revoke", "dev-revoke", "--reason", "stolen", "--data", str(served.data), check=True)
    refusal(post(served, build_request("dev-revoke", c.creds.key, [("/sensors/t", "read")])), "revoked")


def test_rate_limited_with_retry_after(served):
    c = served.client("dev-slow", group="slow")
    key = c.creds.key
    assert post(served, build_request("dev-slow", key, [("/slow/a", "read")], count=2)).status_code == 200
    r = post(served, build_request("dev-slow", key, [("/slow/a", "read")]))
    resp = refusal(r, "rate_limited")
    assert resp.retry_after >= 1 and int(r.headers["retry-after"]) == resp.retry_after


@pytest.mark.parametrize("body, why", [
    (b"", "empty"),
    (b"\xff", "break"),
    (b"\xa0", "empty map"),
    (b"[1,2]", "not CBOR"),
    (b"\x84\x01\x02\x03\x04", "array"),
    (b"\xbf\x18\x18\x61a\xff", "indefinite map"),
    (b"\xc0\x00", "tag"),
])
def test_malformed_cbor(served, body, why):
    refusal(post(served, body), "malformed")


def _signed(key: bytes, m: dict) -> bytes:
    """The request map m, encoded, with the MAC (its last bytes) made right for key."""
    body = cbor.dumps(m)
    return body[:-MAC_BYTES] + mac_of(key, body[:-MAC_BYTES])


def test_malformed_structures_even_when_signed(served):
    c = served.client("dev-strict")
    key = c.creds.key
    good = cbor.loads(build_request("dev-strict", key, [("/sensors/t", "read")]))
    req = parse_cbor_request(cbor.dumps(good))
    cases = [
        {**good, 77: 1},                                                  # unknown parameter
        {k: v for k, v in good.items() if k != REQ_CRUMB},               # no crumb block
        {**good, REQ_CRUMB: crumb_block(req.time, 1, b"abc")},            # nonce too short
        {**good, REQ_CRUMB: crumb_block(req.time, 0, req.nonce)},         # count 0
        {**good, REQ_SCOPE: ["/sensors/t", "read"]},                      # a bare array (not text, not bytes)
        {**good, REQ_SCOPE: "/sensors/t read"},                           # no '|'
        {**good, REQ_SCOPE: "/sensors/t|read  /sensors/u|read"},          # two spaces
        {**good, REQ_SCOPE: "/sens*ors|read"},                            # '*' in the middle
        {**good, REQ_SCOPE: aif_scope([("/sensors/t", 0)])},              # empty bitmask
        {**good, REQ_SCOPE: b"\x82\x01"},                                  # not AIF
        {**good, REQ_SCOPE: aif_scope([("/sensors/t", "read")]) + b"\x00"},  # trailing byte in the AIF
        {**good, REQ_CLIENT_ID: "dev strict"},                            # bad id syntax
        {**good, REQ_AUDIENCE: ""},                                       # empty audience
        {**good, REQ_ACE_PROFILE: 5},                                     # ace_profile is null in a request
    ]
    for m in cases:
        refusal(post(served, _signed(key, m)), "malformed")
    refusal(post(served, _signed(key, {**good, REQ_GRANT_TYPE: 1})), "unsupported_grant_type")
    valid = build_request("dev-strict", key, [("/sensors/t", "read")])
    refusal(post(served, valid + b"\x00"), "malformed")          # trailing byte
    # the block's byte string with a non-preferred length head (0x59 + 2 bytes)
    raw = build_request("dev-strict", key, [("/sensors/t", "read")])
    head = raw.rindex(b"\x58\x1b")
    refusal(post(served, raw[:head] + b"\x59\x00\x1b" + raw[head + 2:]), "malformed")


def test_a_request_of_rfc_9200_parameters_gets_a_bearer_token(served):
    # client_id, scope (AIF in a byte string), audience, grant_type client_credentials and
    # ace_profile null: RFC 9200's names and types, plus crumb's authenticated block.
    c = served.client("dev-ace")
    body = build_request("dev-ace", c.creds.key, [("/ota/image", "GET")], audience="ota", aif=True,
                         grant_type=True, ace_profile=True)
    m = cbor.loads(body)
    assert set(m) == {REQ_AUDIENCE, REQ_SCOPE, REQ_CLIENT_ID, REQ_GRANT_TYPE, REQ_ACE_PROFILE, REQ_CRUMB}
    assert isinstance(m[REQ_SCOPE], bytes) and m[REQ_GRANT_TYPE] == 2 and m[REQ_ACE_PROFILE] is None
    r = post(served, body)
    assert r.status_code == 200, r.content
    answer = cbor.loads(r.content)
    assert answer[34] == 1 and isinstance(answer[1], bytes) and answer[2] > 0  # token_type Bearer
    r = post(served, build_json_request("dev-ace", c.creds.key, [("/ota/image", "GET")], audience="ota"),
             {"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"


def test_every_refusal_status_is_one_the_mapping_documents():
    # RFC 9200 §5.8.3: 400 for every error of a request; 413 and 415 are transport-level answers
    # about the body; 500 and 503 the issuer failing (PROTOCOL.md §11.5 declares them).
    assert {r.status for r in CODES.values()} <= {400, 413, 415, 500, 503}
    assert {code for code, r in CODES.items() if r.status != 400} == {
        "too_large", "unsupported_media_type", "store_unavailable", "internal_error"}


def test_malformed_json(served):
    for body in (b"{", b"[]", b'{"client_id": 5}', b'{"time": 1.5}', b'{"nonce": "a+b/"}', b'{"x": 1}'):
        refusal(post(served, body, {"content-type": "application/json"}), "malformed")


def test_unsupported_media_type(served):
    r = post(served, b"x", {"content-type": "text/plain"})
    refusal(r, "unsupported_media_type")
    # a form-encoded OAuth request: still 415, and the answer names the formats that are accepted
    r = post(served, b"grant_type=client_credentials", {"content-type": "application/x-www-form-urlencoded"})
    message = refusal(r, "unsupported_media_type").message
    assert "application/ace+cbor" in message and "application/json" in message
    r = post(served, b"x", {"content-type": "text/plain", "accept": "application/json"})
    assert r.headers["content-type"] == "application/json" and r.json()["code"] == "unsupported_media_type"


def test_body_limit_is_enforced_before_reading(served):
    r = post(served, b"\xa0" * 5000)
    assert r.status_code == 413
    refusal(r, "too_large")


def test_body_limit_without_content_length(served):
    # A chunked body that never declares its size is cut off once it passes the limit.
    def chunks():
        for _ in range(64):
            yield b"\x00" * 100

    r = httpx.post(f"{served.url}/token", content=chunks(), headers=CBOR, timeout=10)
    assert r.status_code == 413
    refusal(r, "too_large")


def test_lying_content_length_does_not_hang_or_crash(served):
    with socket.create_connection(("127.0.0.1", served.issuer.port), timeout=5) as s:
        s.sendall(b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/ace+cbor\r\n"
                  b"content-length: 999999999999\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 413")


def test_fuzzed_requests_never_500(served):
    """Mutations of valid requests: every answer is a typed refusal or a token, never a 500."""
    c = served.client("dev-fuzz")
    rng = random.Random(1234)
    seen = set()
    with httpx.Client(timeout=10) as http:
        for i in range(300):
            body = bytearray(build_request("dev-fuzz", c.creds.key, [("/sensors/t", "read")]))
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                pos = rng.randrange(len(body))
                if op < 0.5:
                    body[pos] = rng.randrange(256)
                elif op < 0.75:
                    del body[pos:pos + rng.randint(1, 8)]
                else:
                    body[pos:pos] = os.urandom(rng.randint(1, 8))
            r = http.post(f"{served.url}/token", content=bytes(body), headers=CBOR)
            assert r.status_code < 500, r.content
            resp = parse_response(r.content)
            assert resp.ok or resp.code in CODES
            seen.add(resp.code)
    assert "malformed" in seen and "bad_mac" in seen


def test_odd_values_are_typed_refusals_never_500(served):
    """Issue 16, defect 4: values a parser accepts but UTF-8 or a token cannot hold. Before the fix each of
    these reached the catch-all (500 internal_error); tests/issuer/test_typed_refusals.py fuzzes for more."""
    c = served.client("dev-odd")
    key = c.creds.key
    json_type = {"content-type": "application/json"}
    good = json.loads(build_json_request("dev-odd", key, [("/sensors/t", "read")]))
    for change in ({"client_id": "\ud800"}, {"audience": "\ud800"}, {"audience": ""},
                   {"scope": "/sensors/\ud800|read"}, {"scope": "/sensors/t|\udfff"},
                   {"scope": [["/sensors/\ud800", "read"]]}, {"scope": [["/sensors/t", ["read", "\ud800"]]]},
                   {"scope": [["/sensors/" + "\ud800" * 100, "read"]]},  # long enough to be measured in bytes
                   {"scope": [["/sensors/t", 2**64 + 1]]}, {"scope": [["/sensors/t", 2**70]]},
                   {"scope": [["/sensors/t", -1]]}):
        refusal(post(served, json.dumps({**good, **change}).encode(), json_type), "malformed")
    # The same in CBOR (application/ace+cbor), with the MAC right: a surrogate's UTF-8 form (ED A0 80, which
    # no UTF-8 decoder accepts) in audience and in a text and an AIF resource, and a full 64-bit bitmask.
    surrogate = b"\xed\xa0\x80"
    for aif in (False, True):
        body = build_request("dev-odd", key, [("/sensors/abc", "read")], audience="abc", aif=aif)
        for old, new in ((b"\x63abc", b"\x63" + surrogate), (b"/sensors/abc", b"/sensors/" + surrogate)):
            assert body.count(old) == 1
            odd = body.replace(old, new)
            refusal(post(served, odd[:-MAC_BYTES] + mac_of(key, odd[:-MAC_BYTES])), "malformed")
    refusal(post(served, build_request("dev-odd", key, [("/sensors/t", 2**64 - 1)])), "malformed")
    # A resource and an operation of up to 255 bytes each, but not together in a token's scope claim
    # (a byte string of at most 255 bytes): refused before minting, with the MAC right, in both formats.
    long = [("/sensors/" + "y" * 200, "x" * 200)]
    refusal(post(served, build_request("dev-odd", key, long)), "malformed")
    nonce, now = os.urandom(8), int(time.time())
    mac = build_request("dev-odd", key, long, nonce=nonce, now=now)[-MAC_BYTES:]  # over the same CBOR (§11.7)
    doc = {"client_id": "dev-odd", "scope": f"{long[0][0]}|{long[0][1]}", "nonce": b64u(nonce), "time": now,
           "mac": b64u(mac)}
    refusal(post(served, json.dumps(doc).encode(), json_type), "malformed")
    refusal(post(served, build_request("dev-odd", key, long, aif=True)), "malformed")
    # More than 8 operations in one permission (§11.1; the text form cannot say more), in AIF and in JSON
    nine = [("/sensors/t", [f"o{i}" for i in range(9)])]
    message = refusal(post(served, build_request("dev-odd", key, nine, aif=True)), "malformed").message
    assert "at most 8 operations" in message, message
    doc = {**good, "scope": [[r, p] for r, p in nine]}  # refused before the MAC is checked
    refusal(post(served, json.dumps(doc).encode(), json_type), "malformed")


# -- the other endpoints ------------------------------------------------------------------


def test_keys_json_and_cose_key_set(served):
    doc = httpx.get(f"{served.url}/keys").json()
    assert [k["status"] for k in doc["keys"]] == ["current"]
    assert {n["name"] for n in doc["nodes"]} == {"gateway", "ingest", "fleet-gw"}
    keys = parse_json(httpx.get(f"{served.url}/keys").content)  # the verifiers' own parser
    assert len(keys.issuer) == 1 and len(keys.nodes) == 3
    r = httpx.get(f"{served.url}/keys", headers={"accept": "application/cose-key-set+cbor"})
    assert r.headers["content-type"] == "application/cose-key-set+cbor"
    (cose_key,) = cbor.loads(r.content)
    kid = next(iter(keys.issuer))
    assert cose_key == {1: 1, 2: kid, 3: -8, 4: [2], -1: 6, -2: keys.issuer[kid].raw}


def test_healthz_and_metrics(served):
    h = httpx.get(f"{served.url}/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["store"] == "memory ok"
    c = served.client("dev-metrics")
    c.request([("/sensors/m", "read")])
    post(served, b"\x00")
    text = httpx.get(f"{served.url}/metrics").text
    assert 'crumb_issuer_refusals_total{code="malformed"}' in text
    assert "crumb_issuer_tokens_issued_total " in text
    assert 'crumb_issuer_token_request_duration_seconds_bucket{le="+Inf"}' in text
    assert 'crumb_issuer_requests_total{endpoint="token",status="200"}' in text
    issued = next(line for line in text.splitlines() if line.startswith("crumb_issuer_tokens_issued_total "))
    assert int(issued.split()[1]) >= 1


def test_unknown_paths_and_methods(served):
    assert httpx.get(f"{served.url}/nope").status_code == 404
    r = httpx.get(f"{served.url}/token")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# -- the audit log, after all of the above ---------------------------------------------------


def test_every_issuance_and_refusal_is_in_the_audit_log(served):
    c = served.client("dev-audited")
    ok = c.request([("/sensors/audit", "read")])
    body = build_request("dev-audited", c.creds.key, [("/nope", "read")])
    post(served, body)
    post(served, body)
    time.sleep(0.2)
    out = crumb_cli("audit", "tail", "-n", "500", "--json", "--data", str(served.data), check=True).stdout
    import json
    records = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in records if r.get("device") == "dev-audited"]
    assert [r["event"] for r in mine] == ["issued", "refused", "refused"]
    assert [r.get("code") for r in mine[1:]] == ["scope_denied", "replayed"]
    cti = verifier_for(served).verify(ok.tokens[0][0], "/sensors/audit", "read").claims.cti
    assert mine[0]["tokens"] == [cti.hex()]
    codes = {r.get("code") for r in records if r["event"] == "refused"}
    assert {"malformed", "bad_mac", "stale_time", "too_large", "unsupported_media_type"} <= codes
    verify = crumb_cli("audit", "verify", "--data", str(served.data))
    assert verify.returncode == 0 and "chain intact" in verify.stdout


def test_a_verifier_fetching_keys_trusts_the_issuer(served):
    from crumb.services.keyfetch import FetchedKeys

    c = served.client("dev-fetch")
    r = c.request([("/sensors/f", "read")])
    keys = FetchedKeys(f"{served.url}/keys")
    v = Verifier([], resolver=keys, replay=MemoryReplayStore(fence=False))
    assert v.verify(r.tokens[0][0], "/sensors/f", "read").claims.sub == "dev-fetch"


def test_metrics_types_as_prometheus_reads_them(served):
    # Parsed with prometheus_client's own text parser: every family has the type its name promises.
    from prometheus_client.parser import text_string_to_metric_families

    served.client("dev-metrics").request([("/sensors/t", "read")])
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "crumb_issuer_requests": "counter", "crumb_issuer_tokens_issued": "counter",
        "crumb_issuer_refusals": "counter", "crumb_issuer_token_request_duration_seconds": "histogram",
        "crumb_issuer_policy_reloads": "counter", "crumb_issuer_policy_reload_errors": "counter",
        "crumb_issuer_audit_records": "counter", "crumb_issuer_audit_commits": "counter",
        "crumb_issuer_audit_failures": "counter", "crumb_issuer_audit_rotations": "counter",
        "crumb_issuer_audit_rotation_errors": "counter", "crumb_issuer_audit_segment": "gauge",
        "crumb_issuer_devices_enrolled": "gauge",
        "crumb_issuer_devices_revoked": "gauge", "crumb_issuer_key_info": "gauge",
    }
    assert {name: f.type for name, f in families.items()} == expected
    for f in families.values():  # a counter's samples are its _total (the parser names the family without it)
        if f.type == "counter":
            assert {s.name for s in f.samples} <= {f.name + "_total", f.name + "_created"}, f.name
    assert families["crumb_issuer_audit_records"].samples[0].value >= 1
