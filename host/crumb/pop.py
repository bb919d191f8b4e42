"""Proof of possession (PROTOCOL.md §4.4, §11.9, §12.1): every PoP byte crumb writes or reads.

Three things, one implementation each:

- the ``cnf`` claim: the PoP key as a COSE_Key, in a COSE_Encrypt whose
  content key is agreed by ECDH-ES + HKDF-SHA-256 (alg -25) with the first
  hop's X25519 key, content encrypted with AES-CCM-16-64-128 (alg 10);
- the encrypted token response: a COSE_Encrypt0 under a key derived from the
  device key, its external_aad the request's MAC;
- the proof a request carries: time || HMAC-SHA256(PoP key, proof input)[:16].

Primitives come from libraries: X25519 and the Ed25519 -> X25519 key
conversion from libsodium (pynacl), HKDF and AES-CCM from ``cryptography``
(imported on first use, so the token core still needs only pynacl).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from typing import Any

import nacl.bindings
import nacl.exceptions

from . import cbor
from .errors import CrumbError, Malformed, PopFailed, UnknownCaveat
from .keys import PublicKey, SigningKey
from .wire import (
    ALG_AES_CCM_16_64_128,
    ALG_ECDH_ES_HKDF_256,
    CCM_KEY_BYTES,
    CCM_NONCE_BYTES,
    CCM_TAG_BYTES,
    CNF_ENCRYPTED_KEY,
    COSE_ALG,
    COSE_CRV_X25519,
    COSE_EPHEMERAL_KEY,
    COSE_IV,
    COSE_KEY_CRV,
    COSE_KEY_K,
    COSE_KEY_KTY,
    COSE_KEY_X,
    COSE_KTY_OKP,
    COSE_KTY_SYMMETRIC,
    POP_CONTEXT,
    POP_KEY_BYTES,
    POP_MAC_BYTES,
    POP_PROOF_BYTES,
    POP_RESPONSE_KEY_LABEL,
)

#: Protected header of the COSE_Encrypt in cnf and of the response's COSE_Encrypt0: {1: 10}.
CONTENT_PROTECTED = cbor.dumps({COSE_ALG: ALG_AES_CCM_16_64_128})
#: Protected header of the one recipient: {1: -25}.
RECIPIENT_PROTECTED = cbor.dumps({COSE_ALG: ALG_ECDH_ES_HKDF_256})
# COSE_KDF_Context (RFC 9053 §5.2) for this recipient: fixed, so computed once.
# [AlgorithmID 10, PartyUInfo [nil, nil, nil], PartyVInfo [nil, nil, nil], SuppPubInfo [128, protected]]
KDF_CONTEXT = cbor.dumps([ALG_AES_CCM_16_64_128, [None, None, None], [None, None, None],
                          [CCM_KEY_BYTES * 8, RECIPIENT_PROTECTED]])


def _aesccm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM
    return AESCCM(key, tag_length=CCM_TAG_BYTES)


def enc_structure(context: str, protected: bytes, external_aad: bytes) -> bytes:
    """Enc_structure = [context, protected, external_aad] (RFC 9052 §5.3): the AEAD's additional data."""
    return cbor.dumps([context, protected, external_aad])


_CNF_AAD = enc_structure("Encrypt", CONTENT_PROTECTED, b"")  # the same for every cnf: no external_aad


# -- X25519 keys of the first hop ------------------------------------------------------


def x25519_public(key: PublicKey) -> bytes:
    """The X25519 public key of an Ed25519 public key (libsodium's birational map)."""
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(key.raw)


def x25519_secret(key: SigningKey) -> bytes:
    """The X25519 secret of an Ed25519 signing key (the hop's own node key)."""
    return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(key.secret_bytes)


def _content_key(shared: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    # No salt parameter: HKDF's salt is then HashLen zero bytes (RFC 9053 §5.1, RFC 5869 §2.2).
    return HKDF(algorithm=hashes.SHA256(), length=CCM_KEY_BYTES, salt=None, info=KDF_CONTEXT).derive(shared)


# -- the cnf claim ----------------------------------------------------------------------


def new_pop_key() -> bytes:
    return os.urandom(POP_KEY_BYTES)


def symmetric_cose_key(pop_key: bytes) -> dict:
    """{1: 4 (Symmetric), -1: k}: the PoP key as a COSE_Key (RFC 9052 §7, RFC 9053 §7.3)."""
    return {COSE_KEY_KTY: COSE_KTY_SYMMETRIC, COSE_KEY_K: pop_key}


class CnfSealer:
    """Encrypts a PoP key to one hop's X25519 key: ECDH-ES with a fresh ephemeral key.

    One sealer, one COSE_Encrypt: ``cnf`` may be called once. ``pop = "token"`` seals
    each token's key on its own; ``pop = "batch"`` seals the answer's one key once and puts
    that same cnf in every token of the answer (one message, so the ephemeral key is used
    once, as ECDH-ES asks), which lets the hop decrypt once per batch.
    """

    __slots__ = ("_aead", "_used", "ephemeral")

    def __init__(self, hop_x25519: bytes, ephemeral_secret: bytes | None = None) -> None:
        secret = ephemeral_secret if ephemeral_secret is not None else os.urandom(32)
        self.ephemeral = nacl.bindings.crypto_scalarmult_base(secret)
        shared = nacl.bindings.crypto_scalarmult(secret, hop_x25519)
        self._aead = _aesccm(_content_key(shared))
        self._used = False

    def cnf(self, pop_key: bytes, nonce: bytes | None = None) -> dict:
        """The cnf claim's value: {2: COSE_Encrypt} (RFC 8747 §3.3)."""
        if self._used:
            raise ValueError("an ephemeral key seals one message: make a new CnfSealer")
        self._used = True
        iv = nonce if nonce is not None else os.urandom(CCM_NONCE_BYTES)
        plaintext = cbor.dumps(symmetric_cose_key(pop_key))
        ct = self._aead.encrypt(iv, plaintext, _CNF_AAD)
        ephemeral = {COSE_KEY_KTY: COSE_KTY_OKP, COSE_KEY_CRV: COSE_CRV_X25519, COSE_KEY_X: self.ephemeral}
        recipient = [RECIPIENT_PROTECTED, {COSE_EPHEMERAL_KEY: ephemeral}, b""]
        return {CNF_ENCRYPTED_KEY: [CONTENT_PROTECTED, {COSE_IV: iv}, ct, [recipient]]}


def check_cnf(value: object) -> dict:
    """The shape of a cnf claim, exactly as §4.4 writes it (``malformed`` otherwise); no key needed."""
    def bad(why: str) -> CrumbError:
        return Malformed(f"the cnf claim {why}")
    if not isinstance(value, dict) or not value:
        raise bad("is a non-empty map (RFC 8747 §3.1)")
    if list(value) != [CNF_ENCRYPTED_KEY]:
        # Another confirmation method (a plain COSE_Key, a kid, ...): it may restrict the token
        # in a way crumb cannot check, so the token is refused as a caveat not understood.
        raise UnknownCaveat(f"the cnf claim's method {min(value, key=str)!r} is not understood (crumb reads only "
                            f"{CNF_ENCRYPTED_KEY}, Encrypted_COSE_Key)")
    enc = value[CNF_ENCRYPTED_KEY]
    if not isinstance(enc, list) or len(enc) != 4:
        raise bad("holds a COSE_Encrypt [protected, unprotected, ciphertext, recipients]")
    protected, unprotected, ct, recipients = enc
    if protected != CONTENT_PROTECTED:
        raise bad("is encrypted with AES-CCM-16-64-128 only: protected header {1: 10}")
    if (not isinstance(unprotected, dict) or list(unprotected) != [COSE_IV] or not isinstance(unprotected[COSE_IV], bytes)
            or len(unprotected[COSE_IV]) != CCM_NONCE_BYTES):
        raise bad(f"carries exactly its {CCM_NONCE_BYTES}-byte nonce in the unprotected header {{5: iv}}")
    if not isinstance(ct, bytes) or len(ct) <= CCM_TAG_BYTES:
        raise bad("ciphertext is a byte string longer than the tag")
    if not isinstance(recipients, list) or len(recipients) != 1:
        raise bad("has exactly one recipient")
    r = recipients[0]
    if not isinstance(r, list) or len(r) != 3 or r[0] != RECIPIENT_PROTECTED or r[2] != b"":
        raise bad("recipient is [h'a1013818' (ECDH-ES + HKDF-256), {-1: ephemeral key}, h'']")
    ru = r[1]
    if not isinstance(ru, dict) or list(ru) != [COSE_EPHEMERAL_KEY]:
        raise bad("recipient's unprotected header is exactly {-1: ephemeral key}")
    eph = ru[COSE_EPHEMERAL_KEY]
    if (not isinstance(eph, dict) or set(eph) != {COSE_KEY_KTY, COSE_KEY_CRV, COSE_KEY_X}
            or eph[COSE_KEY_KTY] != COSE_KTY_OKP or eph[COSE_KEY_CRV] != COSE_CRV_X25519
            or not isinstance(eph[COSE_KEY_X], bytes) or len(eph[COSE_KEY_X]) != 32):
        raise bad("ephemeral key is an X25519 COSE_Key {1: 1, -1: 4, -2: 32 bytes}")
    return value


class CnfOpener:
    """A hop's side of cnf: its X25519 secret, and the PoP keys it has read, by cnf.

    With ``pop = "batch"`` every token of one issuer answer carries the same cnf (one
    COSE_Encrypt, one ephemeral key), so the hop agrees and decrypts once per batch: the
    cache holds the PoP key by (ephemeral key, nonce, ciphertext). Bounded, oldest dropped
    first; an entry is a function of its key bytes alone, so it can never be stale, and the
    cnf it stands for was signed by the issuer (it is read only after the signature verified).
    """

    def __init__(self, node_key: SigningKey, max_cached: int = 4096) -> None:
        self._secret = x25519_secret(node_key)
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self.max_cached = max_cached

    def pop_key(self, cnf: dict) -> bytes:
        """The PoP key inside ``cnf`` (already shape-checked); ``pop_failed`` when it does not decrypt here."""
        _, unprotected, ct, recipients = cnf[CNF_ENCRYPTED_KEY]
        eph = recipients[0][1][COSE_EPHEMERAL_KEY][COSE_KEY_X]
        iv = unprotected[COSE_IV]
        cached = self._cache.get((eph, iv, ct))
        if cached is not None:
            return cached
        try:
            shared = nacl.bindings.crypto_scalarmult(self._secret, eph)
        except nacl.exceptions.RuntimeError:  # a low-order point: libsodium refuses an all-zero secret
            raise PopFailed("the token's PoP key is not encrypted to a usable key") from None
        from cryptography.exceptions import InvalidTag
        try:
            plain = _aesccm(_content_key(shared)).decrypt(iv, ct, _CNF_AAD)
        except InvalidTag:
            raise PopFailed("the token's PoP key is encrypted for another hop: this one cannot read it") from None
        key = cbor.loads(plain, max_depth=1, max_items=2)
        if (not isinstance(key, dict) or set(key) != {COSE_KEY_KTY, COSE_KEY_K}
                or key[COSE_KEY_KTY] != COSE_KTY_SYMMETRIC or not isinstance(key[COSE_KEY_K], bytes)
                or len(key[COSE_KEY_K]) != POP_KEY_BYTES):
            raise PopFailed(f"the token's PoP key is not a {POP_KEY_BYTES}-byte symmetric COSE_Key")
        self._cache[(eph, iv, ct)] = key[COSE_KEY_K]
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return key[COSE_KEY_K]


# -- the proof on each request ----------------------------------------------------------


def proof_input(token: bytes, time: int, method: str, target: str, body: bytes) -> bytes:
    """The bytes the proof's MAC covers (§12.1); every variable field has a length or a fixed size.

    POP_CONTEXT || SHA-256(token) || time (4) || len(method) (1) || method || len(target) (2, big-endian)
    || target || SHA-256(body). The token's hash binds the proof to this token (a batch may share a key).
    """
    m = method.encode()
    t = target.encode()
    if not 0 < len(m) < 256 or len(t) >= 65536:
        raise PopFailed("the method or target is too long to prove")
    return b"".join((POP_CONTEXT, hashlib.sha256(token).digest(), struct.pack(">I", time & 0xFFFFFFFF),
                     bytes((len(m),)), m, struct.pack(">H", len(t)), t, hashlib.sha256(body).digest()))


def make_proof(pop_key: bytes, token: bytes, time: int, method: str, target: str, body: bytes) -> bytes:
    """The 20-byte proof: time (4 bytes, big-endian) || HMAC-SHA256(pop key, proof input)[:16]."""
    mac = hmac.new(pop_key, proof_input(token, time, method, target, body), "sha256").digest()[:POP_MAC_BYTES]
    return struct.pack(">I", time) + mac


class PopRequest:
    """What a first hop proves a request against: the proof it carried, and the request itself.

    ``target``: the HTTP path with ``?query`` if there is one; an MQTT topic;
    ``method``: the HTTP method, ``PUBLISH`` for MQTT.
    """

    __slots__ = ("body", "method", "proof", "target")

    def __init__(self, proof: bytes | None, method: str, target: str, body: bytes = b"") -> None:
        self.proof = proof
        self.method = method
        self.target = target
        self.body = body


def check_proof(pop_key: bytes, token: bytes, request: PopRequest | None, now: int, window: int) -> int:
    """Check a request's proof (constant-time MAC compare); its time, or ``pop_failed``."""
    if request is None or request.proof is None:
        raise PopFailed("this is a proof-of-possession token: the request carries no proof")
    proof = request.proof
    if len(proof) != POP_PROOF_BYTES:
        raise PopFailed(f"a proof is {POP_PROOF_BYTES} bytes (time and MAC), not {len(proof)}")
    t = struct.unpack(">I", proof[:4])[0]
    expected = make_proof(pop_key, token, t, request.method, request.target, request.body)
    if not hmac.compare_digest(expected, proof):
        raise PopFailed("the proof does not verify for this request (another key, body, target or method)")
    if abs(t - now) > window:
        raise PopFailed(f"the proof's time {t} is more than {window} s from now ({now})")
    return t


def parse_proof_text(text: str) -> bytes:
    """The proof from its header text (base64url without padding); ``pop_failed`` if it is not one."""
    from .keys import unb64u
    if len(text) > 64:
        raise PopFailed("the proof header is too long")
    try:
        return unb64u(text.strip())
    except ValueError:
        raise PopFailed("the proof header is not base64url") from None


# -- the encrypted token response (§11.9) -------------------------------------------------


def response_key(device_key: bytes) -> bytes:
    """The device's response encryption key: HMAC-SHA256(device key, label)[:16], never the MAC key itself."""
    return hmac.new(device_key, POP_RESPONSE_KEY_LABEL, "sha256").digest()[:CCM_KEY_BYTES]


def seal_response(device_key: bytes, request_mac: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """COSE_Encrypt0 [h'a1010a', {5: iv}, ciphertext] of a token response, bound to the request's MAC."""
    iv = nonce if nonce is not None else os.urandom(CCM_NONCE_BYTES)
    ct = _aesccm(response_key(device_key)).encrypt(iv, plaintext, enc_structure("Encrypt0", CONTENT_PROTECTED,
                                                                                request_mac))
    return cbor.dumps([CONTENT_PROTECTED, {COSE_IV: iv}, ct])


def open_response(device_key: bytes, request_mac: bytes, data: bytes) -> bytes:
    """The plaintext of an encrypted token response; ValueError when it is not one for this key and request."""
    from cryptography.exceptions import InvalidTag
    try:
        msg = cbor.loads(data, max_depth=2, max_items=3, max_string=8192)
    except CrumbError:
        raise ValueError("not an encrypted token response (not CBOR)") from None
    # Every field's type before its length, and a ciphertext longer than its tag (an answer is never
    # empty): the same messages ucrumb.pop.open_response reads (fuzz target device_pop_response).
    if (not isinstance(msg, list) or len(msg) != 3 or msg[0] != CONTENT_PROTECTED or not isinstance(msg[1], dict)
            or list(msg[1]) != [COSE_IV] or not isinstance(msg[1][COSE_IV], bytes)
            or len(msg[1][COSE_IV]) != CCM_NONCE_BYTES or not isinstance(msg[2], bytes)
            or len(msg[2]) <= CCM_TAG_BYTES):
        raise ValueError("not an encrypted token response")
    try:
        return _aesccm(response_key(device_key)).decrypt(msg[1][COSE_IV], msg[2],
                                                         enc_structure("Encrypt0", CONTENT_PROTECTED, request_mac))
    except InvalidTag:
        raise ValueError("the response does not decrypt with this device key for this request") from None
