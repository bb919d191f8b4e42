# ucrumb.pop: proof of possession on the device (PROTOCOL.md §11.9, §12.1).
# Imported by the client only when the issuer's answer is encrypted (a PoP
# rule), so a device that never meets PoP never loads it (nor aesccm).
#
#   response key = HMAC-SHA256(device key, "crumb response key v1")[:16]
#   answer       = COSE_Encrypt0 [h'a1010a', {5: nonce}, ciphertext],
#                  AES-CCM-16-64-128, aad = Enc_structure
#                  ["Encrypt0", h'a1010a', request MAC]
#   proof        = time (4, big-endian) || HMAC-SHA256(PoP key, input)[:16]
#   input        = "crumb pop v1" || SHA-256(token) || time (4) || len(method) (1)
#                  || method || len(target) (2) || target || SHA-256(body)
from hashlib import sha256

from ucrumb import cbor
from ucrumb.mac import hmac_sha256

_PROTECTED = b"\xa1\x01\x0a"  # {1: 10}: AES-CCM-16-64-128
_LABEL = b"crumb response key v1"
_CONTEXT = b"crumb pop v1"


def open_response(device_key, request_mac, data):
    # The plaintext of an encrypted token response; ValueError when it is not
    # one, or not for this device key and this request (the tag fails).
    from ucrumb.aesccm import ccm_decrypt

    m = cbor.loads(data, 2, 8, 8192)
    if type(m) is not list or len(m) != 3 or m[0] != _PROTECTED or type(m[1]) is not dict \
            or len(m[1]) != 1 or type(m[1].get(5)) is not bytes or len(m[1][5]) != 13 or type(m[2]) is not bytes:
        raise ValueError("not an encrypted token response")
    aad = cbor.dumps(["Encrypt0", _PROTECTED, bytes(request_mac)])
    return ccm_decrypt(hmac_sha256(device_key, _LABEL)[:16], m[1][5], m[2], aad, 8)


def proof(pop_key, token, t, method, target, body):
    # The 20-byte proof for one call with `token` (bytes), at device time `t`.
    if isinstance(target, str):
        target = target.encode()
    if isinstance(method, str):
        method = method.encode()
    if isinstance(body, str):
        body = body.encode()
    m = bytearray(_CONTEXT)
    m.extend(sha256(token).digest())
    tb = t.to_bytes(4, "big")
    m.extend(tb)
    m.append(len(method))
    m.extend(method)
    m.extend(len(target).to_bytes(2, "big"))
    m.extend(target)
    m.extend(sha256(body or b"").digest())
    return tb + hmac_sha256(pop_key, m)[:16]
