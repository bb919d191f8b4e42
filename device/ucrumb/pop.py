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
    # one, or not for this device key and this request (the tag fails). The
    # COSE_Encrypt0 has one layout, [h'a1010a', {5: nonce (13 bytes)}, bstr],
    # read in place: the ciphertext is not copied before it is decrypted.
    from ucrumb.aesccm import ccm_decrypt

    n = len(data)
    if n < 22 or data[:8] != b"\x83\x43\xa1\x01\x0a\xa1\x05\x4d":
        raise ValueError("not an encrypted token response")
    h = data[21]
    if 0x49 <= h <= 0x57:  # the ciphertext's byte-string head: its length, then where it starts
        k, i = h - 0x40, 22
    elif h == 0x58 and n > 22:
        k, i = data[22], 23
    elif h == 0x59 and n > 23:
        k, i = data[22] << 8 | data[23], 24
    else:
        raise ValueError("not an encrypted token response")
    if i + k != n or (h == 0x58 and k < 24) or (h == 0x59 and k < 256):
        raise ValueError("not an encrypted token response")  # truncated, trailing bytes, or not preferred
    aad = cbor.dumps(["Encrypt0", _PROTECTED, bytes(request_mac)])
    mv = memoryview(data)
    return ccm_decrypt(hmac_sha256(device_key, _LABEL)[:16], mv[8:21], mv[i:], aad, 8)


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
