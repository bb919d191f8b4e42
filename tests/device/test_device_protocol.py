"""The device's token request is exactly what the issuer's protocol module
builds and parses (host/crumb/issuer/protocol.py), MAC included."""

import os

import pytest

from crumb.issuer.protocol import build_request, derive_device_key, mac_of, parse_cbor_request, parse_response
from ucrumb import client

KEY = derive_device_key(b"m" * 32, "dev-0001")


@pytest.mark.parametrize("scopes,count,audience", [
    ([("/sensors/temp01", "read")], 1, None),
    ([("/sensors/temp01", "read")], 4, None),
    ([("/sensors/temp01", "publish")], 32, "ingest"),
    ([("/a", "read"), ("/b", "write"), ("/a", "read")], 1, None),
    ([("/a b", "x|y")], 1, None),  # a name the text form cannot carry: AIF in a byte string
])
def test_device_request_matches_the_issuer(scopes, count, audience):
    c = client.Client("http://issuer.test", "dev-0001", KEY, audience=audience)
    c._t0, c._at = 1_800_000_000, client.ticks_ms()
    body = bytes(c._request([tuple(s) for s in scopes], count))
    req = parse_cbor_request(body)
    assert req.client_id == "dev-0001" and req.scopes == scopes and req.count == count
    assert req.audience == audience and abs(req.time - 1_800_000_000) <= 1
    assert mac_of(KEY, req.mac_input) == req.mac
    assert body == build_request("dev-0001", KEY, scopes, count=count, audience=audience, nonce=req.nonce,
                                 now=req.time)
    assert len(req.nonce) == 6


def test_typical_request_size():
    c = client.Client("http://issuer.test", "dev-0001", KEY)
    c._t0, c._at = 1_800_000_000, client.ticks_ms()
    assert len(c._request([("/sensors/temp01", "read")], 1)) == 68


def test_unsynced_request_is_well_formed():
    body = bytes(client.Client("http://issuer.test", "dev-0001", KEY)._request([("/x", "read")], 1))
    assert parse_cbor_request(body).time == 0


def test_nonces_differ():
    c = client.Client("http://issuer.test", "dev-0001", KEY)
    nonces = {parse_cbor_request(bytes(c._request([("/x", "read")], 1))).nonce for _ in range(200)}
    assert len(nonces) == 200


def test_device_decodes_what_the_issuer_encodes():
    from crumb.issuer.protocol import Issued, token_response_cbor
    from ucrumb import cbor

    issued = [Issued(os.urandom(139), 60, u, b"c" * 8, ("/x", "read")) for u in (1, 3)]
    for batch in (False, True):
        body = token_response_cbor(issued[:1] if not batch else issued, 1_800_000_000, batch)
        assert cbor.loads(body) == {k: v for k, v in _as_device(parse_response(body), batch).items()}


def _as_device(resp, batch):
    if batch:
        return {34: 1, -65537: resp.time, -65538: [list(t) for t in resp.tokens]}
    tok, life, uses = resp.tokens[0]
    return {1: tok, 2: life, 34: 1, -65537: resp.time, **({-65539: uses} if uses != 1 else {})}
