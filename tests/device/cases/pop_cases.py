# Proof of possession on the device (ucrumb.pop, the client's reading of PoP
# answers), against bytes the host's implementation (crumb.pop, on the
# `cryptography` library's AES-CCM and hashlib's HMAC) produced: PROTOCOL.md
# §11.9 and §12.1's examples. Run on CPython and in MicroPython.
from cases import h, raises
from ucrumb import client as C
from ucrumb import pop

# §11.2's example device key (master secret 00..1f, device dev-0001) and request MAC
DEVICE_KEY = h("50c6f03639c96e3736717c1c7f43048908a8a53c1cc792279acbc740bdd83231")
MAC = h("5817694a97c2e6362a6818b63ec01256")
# crumb.pop.seal_response(DEVICE_KEY, MAC, h("a10102"), nonce=bytes(13))
SEALED = h("8343a1010aa1054d00000000000000000000000000 4b 97a985eb57e9972c53c325")


def test_open_response_matches_the_host():
    assert pop.open_response(DEVICE_KEY, MAC, SEALED) == h("a10102")


def test_open_response_refuses_another_request_key_or_shape():
    raises(ValueError, pop.open_response, DEVICE_KEY, bytes(16), SEALED)  # another request's MAC
    raises(ValueError, pop.open_response, bytes(32), MAC, SEALED)  # another device's key
    raises(ValueError, pop.open_response, DEVICE_KEY, MAC, SEALED[:-1])  # truncated
    raises(ValueError, pop.open_response, DEVICE_KEY, MAC, SEALED + b"\x00")  # trailing byte
    raises(ValueError, pop.open_response, DEVICE_KEY, MAC, h("8343a1010aa1054c") + SEALED[8:])  # 12-byte nonce
    not_preferred = SEALED[:21] + b"\x58\x0b" + SEALED[22:]  # an 11-byte string with a 1-byte length head
    raises(ValueError, pop.open_response, DEVICE_KEY, MAC, not_preferred)
    raises(ValueError, pop.open_response, DEVICE_KEY, MAC, b"")


def test_proof_matches_the_host():
    # crumb.pop.make_proof(bytes(range(16)), bytes(range(200)), 1800000000, "POST",
    #                      "/sensors/temp01/readings", b'{"t":21.5}')
    p = pop.proof(bytes(range(16)), bytes(range(200)), 1800000000, "POST", "/sensors/temp01/readings",
                  b'{"t":21.5}')
    assert p == h("6b49d200 fdb23883c832f7c5965ba660ca22e9b1")
    assert C.b64url(p) == "a0nSAP2yOIPIMvfFllumYMoi6bE"
    # each input moves the MAC
    for other in (pop.proof(bytes(range(16)), bytes(range(200)), 1800000000, "POST", "/sensors/temp01/readings",
                            b'{"t":21.6}'),
                  pop.proof(bytes(range(16)), bytes(range(200)), 1800000000, "PUT", "/sensors/temp01/readings",
                            b'{"t":21.5}'),
                  pop.proof(bytes(range(16)), bytes(range(199)), 1800000000, "POST", "/sensors/temp01/readings",
                            b'{"t":21.5}')):
        assert other[4:] != p[4:]


def test_tokens_keep_a_pop_key():
    key = bytes(range(16))
    one = C.tokens({1: b"tok", 2: 60, 8: {1: {1: 4, -1: key}}, 34: 2, -65537: 1800000000}, 1)
    assert list(one[0]) == [b"tok", 60, 1, key]
    batch = C.tokens({34: 2, -65537: 1800000000, -65538: [[b"a", 60, 1, key], [b"b", 60, 1]]}, 2)
    assert batch[0][3] == key and len(batch[1]) == 3


def test_tokens_refuse_a_bad_pop_key():
    for bad in (bytes(15), bytes(17), "k" * 16, 16):
        raises(C.IssuerUnavailable, C.tokens, {-65538: [[b"a", 60, 1, bad]]}, 1)
    raises(C.IssuerUnavailable, C.tokens, {-65538: [[b"a", 60, 1, bytes(16), 0]]}, 1)
    raises(C.IssuerUnavailable, C.tokens, {-65538: [[b"a", 60]]}, 1)
    raises(C.IssuerUnavailable, C.tokens, {1: b"t", 2: 60, 8: {1: {1: 4}}}, 1)
