# End to end with proof of possession (PROTOCOL.md §4.4, §11.9, §12.1): the
# real issuer with a `pop` rule, a service holding the first hop's key
# (crumb.Verifier with pop_key, in the service test_device_pop.py starts), and
# the device client on CPython and inside MicroPython. Every refusal is the
# verifier's pop_failed: a captured token is worth nothing without its key.
import json
from binascii import unhexlify

from cases import raises

from ucrumb import client as C
from ucrumb import coap, pop
from ucrumb.http import request

SERVICE = COAP_ISSUER = COAP_SERVICE = CRED = OTHER_KEY = None
RES = "/sensors/temp01"
CRES = "/sensors/t1"  # the CoAP service's resources (tests/device/coappeers.py)


def setup(arg):
    # "SERVICE_URL|COAP_ISSUER_URL|COAP_SERVICE_URL|OTHER_DEVICE_KEY_HEX|PATH|CREDENTIALS_JSON"
    global SERVICE, COAP_ISSUER, COAP_SERVICE, CRED, OTHER_KEY
    SERVICE, COAP_ISSUER, COAP_SERVICE, other, CRED, text = arg.split("|", 5)
    OTHER_KEY = unhexlify(other)
    try:
        open(CRED).close()
    except OSError:
        with open(CRED, "w") as f:
            f.write(text)


def device(**kw):
    return C.from_file(CRED, **kw)


def _code(body):
    return json.loads(body)["code"]


def test_pop_token_works_over_http():
    c = device(batch=2)
    for i in range(3):
        status, _h, body = c.request("POST", SERVICE + RES, RES, "publish", body=b"21.%d" % i)
        assert status == 200, (status, body)
        assert json.loads(body)["body"] == "21.%d" % i
    status, _h, body = c.request("GET", SERVICE + RES, RES, "read")
    assert status == 200, (status, body)


def test_pop_token_works_in_an_envelope():
    c = device()
    status, _h, body = request("POST", SERVICE + "/envelope" + RES, c.envelope(RES, "publish", b"22.5"), {})
    assert status == 200, (status, body)


def test_captured_token_without_proof_is_refused():
    # What a sniffer of the call gets: the token (the Authorization header), no key.
    c = device()
    h = c.header(RES, "publish")
    status, _h, body = request("POST", SERVICE + RES, b"21.0", {"Authorization": h})
    assert status == 401 and _code(body) == "pop_failed", (status, body)


def test_proof_for_another_body_is_refused():
    # The token and proof of one call, raced to the service with another body.
    c = device()
    t = c._take(RES, "publish")
    proof = pop.proof(t[3], t[0], c.now(), "POST", RES, b"21.0")
    hdrs = {"Authorization": C.b64url(t[0], b"Bearer "), "Crumb-PoP": C.b64url(proof)}
    status, _h, body = request("POST", SERVICE + RES, b"99.9", hdrs)
    assert status == 401 and _code(body) == "pop_failed", (status, body)
    # the same token with its proof for this body is still good: the refusal spent nothing
    status, _h, body = request("POST", SERVICE + RES, b"21.0", hdrs)
    assert status == 200, (status, body)


def test_envelope_without_its_proof_is_refused():
    c = device()
    tok, payload, _proof = C.cbor.loads(c.envelope(RES, "publish", b"23.0"))
    status, _h, body = request("POST", SERVICE + "/envelope" + RES, C.cbor.dumps([tok, payload]), {})
    assert status == 401 and _code(body) == "pop_failed", (status, body)


def test_captured_response_does_not_decrypt_with_another_device_key():
    # A raw exchange, as a sniffer records it: the encrypted answer opens with
    # this device's key for this request, and with nothing else.
    c = device()
    c._exchange(((RES, "read"),), 1)  # sync the clock (the first answer is a stale_time refusal)
    req = c._request(((RES, "read"),), 1)
    status, _h, data = c._post(req, 2048)
    assert status == 200 and data[:1] == b"\x83", (status, data[:16])
    assert b"dev-" not in data  # nothing of the token in clear (its sub is the device id)
    raises(ValueError, pop.open_response, OTHER_KEY, req[-16:], data)
    raises(ValueError, pop.open_response, c.key, b"\x00" * 16, data)  # nor for another request
    plain = pop.open_response(c.key, req[-16:], data)
    assert C.tokens(C.answer(200, plain), 1)[0][3]  # the PoP key is inside


# -- over CoAP (PROTOCOL.md §12.1, §13): tokens from the issuer over CoAP, the proof in option 65007


def coap_device(**kw):
    with open(CRED) as f:
        c = json.load(f)
    return C.Client(COAP_ISSUER, c["device_id"], unhexlify(c["key"]), timeout=30, **kw)


def test_pop_token_works_over_coap():
    c = coap_device(batch=2)
    for i in range(3):
        st, _o, body = c.request("POST", COAP_SERVICE + CRES, CRES, "publish", body=b"21.%d" % i)
        assert st == 204 and json.loads(body)["body"] == "21.%d" % i, (st, body)
    # the query is proven as its Uri-Query options say; an empty path segment is no option
    st, _o, body = c.request("GET", COAP_SERVICE + "/sensors//t1?a=1&&b", CRES, "read")
    assert st == 205, (st, body)


def test_pop_envelope_over_coap():
    c = coap_device()
    st, _o, body = c.publish(COAP_SERVICE, "/sensors/t2", "22.5")
    assert st == 204 and json.loads(body)["body"] == "22.5", (st, body)
    tok, payload, _proof = C.cbor.loads(c.envelope("/sensors/t2", "publish", b"23.0", "/sensors/t2", b"POST"))
    st, _o, body = coap.request("POST", COAP_SERVICE + "/sensors/t2", C.cbor.dumps([tok, payload]), {12: 60}, 30)
    assert st == 401 and body.startswith(b"pop_failed: "), (st, body)


def test_coap_token_answer_is_cose_encrypt0():
    # The issuer's answer over CoAP: 2.01, Content-Format 16 (application/cose;
    # cose-type="cose-encrypt0"), and it opens for this request only.
    c = coap_device()
    c._exchange(((CRES, "read"),), 1)  # sync the clock (the first answer is a stale_time refusal)
    req = c._request(((CRES, "read"),), 1)
    st, opts, data = coap.request("POST", COAP_ISSUER + "/token", req, {12: 19}, 30, 2048)
    assert st == 201 and coap.option(opts, 12) == b"\x10" and data[:1] == b"\x83", (st, opts, data[:16])
    raises(ValueError, pop.open_response, OTHER_KEY, req[-16:], data)
    assert C.tokens(C.answer(200, pop.open_response(c.key, req[-16:], data)), 1)[0][3]


def test_captured_token_without_proof_option_is_refused_over_coap():
    c = coap_device()
    t = c._take(CRES, "publish")
    st, _o, body = coap.request("POST", COAP_SERVICE + CRES, b"21.0", {coap.TOKEN_OPTION: t[0]}, 30)
    assert st == 401 and body.startswith(b"pop_failed: "), (st, body)


def test_proof_for_another_payload_or_path_is_refused_over_coap():
    c = coap_device()
    t = c._take(CRES, "publish")

    def call(proven_path, proven_body, body):
        o = {coap.TOKEN_OPTION: t[0], coap.POP_OPTION: pop.proof(t[3], t[0], c.now(), "POST", proven_path,
                                                                  proven_body)}
        return coap.request("POST", COAP_SERVICE + CRES, body, o, 30)

    st, _o, body = call(CRES, b"21.0", b"99.9")
    assert st == 401 and body.startswith(b"pop_failed: "), (st, body)
    st, _o, body = call("/sensors/t2", b"21.0", b"21.0")
    assert st == 401 and body.startswith(b"pop_failed: "), (st, body)
    st, _o, body = call(CRES, b"21.0", b"21.0")  # the refusals spent nothing
    assert st == 204, (st, body)
