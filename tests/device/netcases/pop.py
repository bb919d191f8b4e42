# End to end with proof of possession (PROTOCOL.md §4.4, §11.9, §12.1): the
# real issuer with a `pop` rule, a service holding the first hop's key
# (crumb.Verifier with pop_key, in the service test_device_pop.py starts), and
# the device client on CPython and inside MicroPython. Every refusal is the
# verifier's pop_failed: a captured token is worth nothing without its key.
import json
from binascii import unhexlify

from cases import raises

from ucrumb import client as C
from ucrumb import pop
from ucrumb.http import request

SERVICE = CRED = OTHER_KEY = None
RES = "/sensors/temp01"


def setup(arg):
    # "SERVICE_URL|OTHER_DEVICE_KEY_HEX|PATH|CREDENTIALS_JSON"
    global SERVICE, CRED, OTHER_KEY
    SERVICE, other, CRED, text = arg.split("|", 3)
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
