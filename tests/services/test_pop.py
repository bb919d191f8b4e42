"""Proof of possession on the host (PROTOCOL.md §4.4, §11.9, §12.1): the cnf claim, the
Verifier's one check, the HTTP middlewares, the MQTT consumer, the issuer's encrypted answers.

Each refusal test first shows the same request accepted by a verifier whose proof check
is switched off (``_check_pop`` replaced by a no-op): the refusal comes from that check
and from nothing else.
"""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from crumb import pop
from crumb.errors import CrumbError
from crumb.issuer.protocol import build_request, parse_response
from crumb.keys import SigningKey, b64u
from crumb.replay import MemoryReplayStore
from crumb.token import mint, to_text
from crumb.verify import Verifier

ISSUER = SigningKey(bytes([1]) * 32)
HOP = SigningKey(bytes([2]) * 32)
OTHER_HOP = SigningKey(bytes([3]) * 32)
KEY = bytes(range(16))
NOW = int(time.time())
RES = "/sensors/temp01"


def pop_token(key: bytes = KEY, hop: SigningKey = HOP, uses: int = 1) -> bytes:
    cnf = pop.CnfSealer(pop.x25519_public(hop.public)).cnf(key)
    return mint(ISSUER, scope=[(RES, "publish")], sub="dev-1", cnf=cnf, now=NOW, uses=uses)


def verifier(hop: SigningKey | None = HOP, checked: bool = True) -> Verifier:
    v = Verifier([ISSUER.public], pop_key=hop, replay=MemoryReplayStore(fence=False), clock=lambda: NOW)
    if not checked:
        v._check_pop = lambda *a: None  # type: ignore[method-assign]
    return v


def proof(token: bytes, body: bytes = b"21.5", *, key: bytes = KEY, t: int = NOW, method: str = "POST",
          target: str = RES) -> bytes:
    return pop.make_proof(key, token, t, method, target, body)


def request(prf: bytes | None, body: bytes = b"21.5", method: str = "POST", target: str = RES) -> pop.PopRequest:
    return pop.PopRequest(prf, method, target, body)


def test_cnf_is_a_cose_encrypt_that_another_cose_library_opens():
    # python-cwt (an independent COSE implementation) decrypts the cnf claim with the hop's
    # X25519 key: the structure, the KDF context and the AEAD inputs are RFC 9052/9053's.
    # (pycose 1.1 cannot: its ECDH-ES takes EC2 keys only.)
    import cbor2
    import nacl.bindings
    from cwt import COSE, COSEKey

    cnf = pop.CnfSealer(pop.x25519_public(HOP.public)).cnf(KEY)
    d = pop.x25519_secret(HOP)
    key = COSEKey.from_jwk({"kty": "OKP", "crv": "X25519", "d": b64u(d), "alg": "ECDH-ES+HKDF-256",
                            "x": b64u(nacl.bindings.crypto_scalarmult_base(d))})
    data = cbor2.dumps(cbor2.CBORTag(96, cnf[2]))  # COSE_Encrypt, tagged for the library
    plain = COSE.new().decode(data, keys=[key], context={"alg": "AES-CCM-16-64-128"})
    assert cbor2.loads(plain) == {1: 4, -1: KEY}
    other = pop.x25519_secret(OTHER_HOP)
    wrong = COSEKey.from_jwk({"kty": "OKP", "crv": "X25519", "d": b64u(other), "alg": "ECDH-ES+HKDF-256",
                              "x": b64u(nacl.bindings.crypto_scalarmult_base(other))})
    with pytest.raises(Exception):  # noqa: B017 - the library's own decryption error
        COSE.new().decode(data, keys=[wrong], context={"alg": "AES-CCM-16-64-128"})


def test_a_pop_token_with_its_proof_is_accepted():
    tok = pop_token()
    v = verifier()
    assert v.verify(tok, RES, "publish", pop=request(proof(tok))).claims.cnf is not None


@pytest.mark.parametrize("case", ["no proof", "another body", "another path", "another method", "stale",
                                  "future", "wrong key", "another token's proof", "short proof"])
def test_refused_with_pop_failed(case):
    tok = pop_token()
    other_tok = pop_token()
    req = {
        "no proof": request(None),
        "another body": request(proof(tok, b"21.5"), b"99.9"),
        "another path": request(proof(tok, target="/sensors/temp02"), target=RES),
        "another method": request(proof(tok, method="PUT")),
        "stale": request(proof(tok, t=NOW - 31)),
        "future": request(proof(tok, t=NOW + 31)),
        "wrong key": request(proof(tok, key=bytes(16))),
        "another token's proof": request(proof(other_tok)),
        "short proof": request(proof(tok)[:19]),
    }[case]
    verifier(checked=False).verify(tok, RES, "publish", pop=req)  # without the check: accepted
    with pytest.raises(CrumbError) as e:
        verifier().verify(tok, RES, "publish", pop=req)
    assert e.value.code == "pop_failed"


@pytest.mark.parametrize("hop", [None, OTHER_HOP], ids=["no key", "another hop's key"])
def test_a_hop_that_cannot_read_cnf_refuses(hop):
    tok = pop_token()
    req = request(proof(tok))
    verifier(hop, checked=False).verify(tok, RES, "publish", pop=req)
    with pytest.raises(CrumbError) as e:
        verifier(hop).verify(tok, RES, "publish", pop=req)
    assert e.value.code == "pop_failed"


def test_the_request_independent_check_also_refuses():
    # check_token (crumb.services.pg's path) sees no proof: a PoP token fails there too.
    with pytest.raises(CrumbError) as e:
        verifier().check_token(pop_token())
    assert e.value.code == "pop_failed"


def test_a_proof_is_good_once_on_a_multi_use_token():
    tok = pop_token(uses=3)
    v = verifier()
    req = request(proof(tok))
    v.verify(tok, RES, "publish", pop=req)
    with pytest.raises(CrumbError) as e:
        v.verify(tok, RES, "publish", pop=req)
    assert e.value.code == "pop_failed"
    v.verify(tok, RES, "publish", pop=request(proof(tok, t=NOW - 1)))  # a new proof: the next use


def test_later_hops_rely_on_the_first_hops_attestation():
    from crumb.token import attest
    gw, ingest = SigningKey(bytes([4]) * 32), SigningKey(bytes([5]) * 32)
    cnf = pop.CnfSealer(pop.x25519_public(gw.public)).cnf(KEY)
    tok = mint(ISSUER, scope=[(RES, "publish")], cnf=cnf, now=NOW, chain=[("gw", gw.public), ("ingest", ingest.public)])
    first = Verifier([ISSUER.public], pop_key=gw, hop="gw", replay=MemoryReplayStore(fence=False), clock=lambda: NOW)
    with pytest.raises(CrumbError):
        first.verify(tok, RES, "publish")
    first.verify(tok, RES, "publish", pop=request(proof(tok)))
    second = Verifier([ISSUER.public], hop="ingest", replay=MemoryReplayStore(fence=False), clock=lambda: NOW)
    second.verify(attest(tok, gw, "gw"), RES, "publish")  # no key, no proof: the attestation stands for them


def test_cnf_shape_is_checked():
    from crumb.claims import Claims, loads_claims
    good = pop.CnfSealer(pop.x25519_public(HOP.public)).cnf(KEY)
    bad = {2: [good[2][0], good[2][1], good[2][2], []]}
    from crumb import cbor
    for cnf, code in ((bad, "malformed"), ({1: {1: 4, -1: KEY}}, "unknown_caveat")):
        payload = cbor.dumps({4: NOW + 60, 6: NOW, 7: b"12345678", 8: cnf, 9: cbor.dumps([[RES, "read"]])})
        with pytest.raises(CrumbError) as e:
            Claims.parse(loads_claims(payload))
        assert e.value.code == code


# -- the middlewares and the MQTT consumer --------------------------------------------


def _asgi_call(app, method: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    import httpx

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.request(method, path, headers=headers, content=body)
            return r.status_code, r.content
    return asyncio.run(go())


def _echo_asgi():
    async def app(scope, receive, send):
        msg = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": msg.get("body", b"")})
    return app


def test_asgi_middleware_checks_the_proof_and_hands_the_app_the_body():
    from crumb.services.middleware.asgi import CrumbMiddleware
    from crumb.services.middleware.rules import Route, Routes

    app = CrumbMiddleware(_echo_asgi(), verifier(), Routes(Route(RES, operation="publish")), offload=False)
    tok = pop_token()
    auth = {"authorization": "Bearer " + to_text(tok)}
    status, body = _asgi_call(app, "POST", RES, {**auth, "crumb-pop": b64u(proof(tok, b"99.9"))}, b"21.5")
    assert status == 401 and b"pop_failed" in body
    status, body = _asgi_call(app, "POST", RES, auth, b"21.5")
    assert status == 401 and b"pop_failed" in body
    status, body = _asgi_call(app, "POST", RES, {**auth, "crumb-pop": b64u(proof(tok))}, b"21.5")
    assert status == 200 and body == b"21.5"


def test_wsgi_middleware_checks_the_proof_and_hands_the_app_the_body():
    from crumb.services.middleware.rules import Route, Routes
    from crumb.services.middleware.wsgi import CrumbWSGIMiddleware

    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    mw = CrumbWSGIMiddleware(app, verifier(), Routes(Route(RES, operation="publish")))
    tok = pop_token()

    def call(prf: bytes | None, body: bytes) -> tuple[str, bytes]:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": RES, "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_AUTHORIZATION": "Bearer " + to_text(tok)}
        if prf is not None:
            environ["HTTP_CRUMB_POP"] = b64u(prf)
        got = []
        out = b"".join(mw(environ, lambda status, headers, *a: got.append(status)))
        return got[0], out

    status, out = call(proof(tok, b"x"), b"21.5")
    assert status.startswith("401") and b"pop_failed" in out
    status, out = call(proof(tok), b"21.5")
    assert status.startswith("200") and out == b"21.5"


def test_mqtt_consumer_checks_the_envelope_proof():
    from crumb.services import envelope
    from crumb.services.mqtt import MqttConsumer

    got = []
    c = MqttConsumer(verifier(), lambda topic, payload, grant: got.append(payload), "sensors/#",
                     resource=lambda t: "/" + t)
    topic = RES[1:]
    tok = pop_token()
    good = pop.make_proof(KEY, tok, NOW, "PUBLISH", topic, b"21.5")
    assert c.process(topic, envelope.pack(tok, b"21.5")) is None  # no proof
    assert c.process(topic, envelope.pack(tok, b"99.9", good)) is None  # another payload
    assert c.rejected == {"pop_failed": 2}
    assert c.process(topic, envelope.pack(tok, b"21.5", good)) is not None and got == [b"21.5"]


# -- the issuer ---------------------------------------------------------------------


POLICY = f"""
[defaults]
ttl = 60
batch = 8
rate = 1000.0
burst = 1000
[nodes]
ingest = "{b64u(HOP.public.raw)}"
[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read", "publish"]
pop = "batch"
pop_node = "ingest"
[[groups.sensors.allow]]
resource = "/config/*"
operations = ["read"]
"""


def test_issuer_batch_mode_one_key_and_one_ecdh_per_answer(tmp_path):
    import httpx

    from crumb.tooling.bench.device import DeviceIssuer

    with DeviceIssuer(POLICY, data_dir=tmp_path / "d") as iss:
        cred = iss.creds["dev-0001"]
        key = bytes.fromhex(cred["key"])
        keys = httpx.get(iss.url + "/keys").json()["keys"]
        from crumb.keys import PublicKey, unb64u
        issuer_keys = [PublicKey(unb64u(k["x"])) for k in keys]

        def ask(scopes, count=1):
            body = build_request("dev-0001", key, scopes, count=count, now=int(time.time()))
            r = httpx.post(iss.url + "/token", content=body, headers={"content-type": "application/ace+cbor"})
            return body, r

        body, r = ask([(RES, "read")], count=3)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/cose")
        with pytest.raises(ValueError):
            pop.open_response(bytes(32), body[-16:], r.content)  # another device's key
        resp = parse_response(pop.open_response(key, body[-16:], r.content))
        assert len({t[3] for t in resp.tokens}) == 1  # one key for the batch
        v = Verifier(issuer_keys, pop_key=HOP, replay=MemoryReplayStore(fence=False))
        for tok, _, _, k in resp.tokens:
            v.verify(tok, RES, "read", pop=pop.PopRequest(pop.make_proof(k, tok, int(time.time()), "GET", RES, b""),
                                                         "GET", RES, b""))
        assert len(v._cnf._cache) == 1  # one ECDH for the three tokens

        # a rule without pop: a bearer token, in clear, as before
        body, r = ask([("/config/net", "read")])
        assert r.headers["content-type"] == "application/ace+cbor" and parse_response(r.content).tokens[0][0]

        # PoP tokens only over CBOR: the answer is a COSE_Encrypt0
        from crumb.issuer.protocol import build_json_request
        r = httpx.post(iss.url + "/token", content=build_json_request("dev-0001", key, [(RES, "read")],
                                                                      now=int(time.time())),
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "malformed" and "CBOR only" in r.json()["error_description"]


def test_policy_pop_needs_a_first_hop():
    from crumb.issuer.policy import PolicyError, parse

    base = "[groups.g]\n[[groups.g.allow]]\nresource = \"/a\"\noperations = [\"read\"]\n"
    with pytest.raises(PolicyError, match="pop_node"):
        parse(base + "pop = true\n")
    with pytest.raises(PolicyError, match="pop"):
        parse(base + "pop = \"sometimes\"\n")
    rule = parse(f"[nodes]\ningest = \"{b64u(HOP.public.raw)}\"\n" + base + "pop = true\npop_node = \"ingest\"\n")
    assert rule.groups["g"].rules[0].pop == "batch"


def test_claims_fast_path_reads_cnf_as_the_general_path_does():
    # Claims.decode's fast path decodes cnf in place; held to the general path on a real PoP
    # token's claims and on every one-byte change of them (three values per position).
    from crumb.claims import Claims, _decode_common, loads_claims
    from crumb.token import split

    cnf = pop.CnfSealer(pop.x25519_public(HOP.public)).cnf(KEY)
    payload = split(mint(ISSUER, scope=[("/s/t1", "read")], sub="dev-1", cnf=cnf, now=NOW)).authority.payload
    assert _decode_common(payload) is not None  # the fast path takes it

    def outcome(fn):
        try:
            return ("ok", fn().to_map())
        except CrumbError as e:
            return (e.code,)

    assert outcome(lambda: Claims.decode(payload))[0] == "ok"
    for pos in range(len(payload)):
        for value in {payload[pos] ^ 1, (payload[pos] + 24) & 255, 0xFF}:
            bad = payload[:pos] + bytes((value,)) + payload[pos + 1:]
            assert outcome(lambda b=bad: Claims.decode(b)) == outcome(lambda b=bad: Claims.parse(loads_claims(b))), pos
