"""Targets for proof of possession: the device opening a sealed token answer, the host reading cnf.

``device_pop_response`` hands the input to ``ucrumb.pop.open_response`` (and
the host's ``crumb.pop.open_response``, which the tests use as a device) as
the issuer's encrypted answer to one request: both may only refuse with
``ValueError``, and may return a plaintext only for the very bytes the issuer
sealed (one of the seeds), the same plaintext on both sides. Any other input
that opens would be a forgery past AES-CCM's tag.

``pop_cnf`` verifies mutated proof-of-possession tokens at their first hop,
which decrypts the cnf claim with its node key (``crumb.pop.CnfOpener``), and
checks the request's proof: only typed ``CrumbError``. A token accepted there
with the right proof is then presented with a proof made under another key,
which must be ``pop_failed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ... import cbor
from ...errors import CrumbError
from ...wire import RESP_ACCESS_TOKEN, RESP_EXPIRES_IN, RESP_TIME, RESP_TOKEN_TYPE, TOKEN_TYPE_BEARER
from . import fixtures as fx
from .harness import Finding

DEVICE_KEY = hashlib.sha256(b"crumb fuzz device key").digest()
REQUEST_MAC = hashlib.sha256(b"crumb fuzz request mac").digest()[:16]


def _answers() -> dict[str, tuple[bytes, bytes]]:
    """name -> (sealed bytes, plaintext): answers the issuer seals, of each length form of the ciphertext."""
    from ... import pop

    token = fx.pop_tokens()["pop"]
    plains = {
        "token": cbor.dumps({RESP_ACCESS_TOKEN: token, RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER,
                             RESP_TIME: fx.NOW}),  # a two-byte length head (0x59)
        "short": b"\xa1\x01\x02",  # ciphertext of 11 bytes: its length in the head itself
        "one-byte-length": bytes(40),  # 48 bytes: a one-byte length (0x58)
    }
    return {name: (pop.seal_response(DEVICE_KEY, REQUEST_MAC, p, nonce=bytes([i]) * 13), p)
            for i, (name, p) in enumerate(plains.items())}


def _device_pop_response_setup() -> Callable[[bytes], None]:
    from ucrumb import pop as upop

    from ... import pop

    sealed = {s: p for s, p in _answers().values()}

    def run(data: bytes) -> None:
        outcomes: list[bytes | None] = []
        for side, open_response in (("device", upop.open_response), ("host", pop.open_response)):
            try:
                plain = bytes(open_response(DEVICE_KEY, REQUEST_MAC, data))
            except ValueError:
                outcomes.append(None)
                continue
            if data not in sealed:
                raise Finding(f"the {side} opened bytes the issuer never sealed: {data.hex()[:200]}... -> "
                              f"{plain.hex()[:200]}...",
                              f"{side} opened a modified answer")
            if plain != sealed[data]:
                raise Finding(f"the {side} opened {data.hex()} to {plain.hex()}, not what was sealed",
                              f"{side} plaintext differs")
            outcomes.append(plain)
        if outcomes[0] != outcomes[1]:
            raise Finding(f"device and host disagree on {data.hex()}", "device and host disagree")

    return run


def device_pop_response_seeds() -> dict[str, bytes]:
    return {name: s for name, (s, _) in _answers().items()}


# -- cnf at the first hop ---------------------------------------------------------------------

# (resource, operation, method, target): byte 0 of an input picks one (bits 3-4); bit 0 re-signs
# (host_targets.resign), bits 1-2 pick the proof, bit 5 the hop.
POP_REQUESTS = [
    ("/sensors/temp01", "read", "GET", "/sensors/temp01"),
    ("/sensors/temp02", "publish", "POST", "/sensors/temp02?x=1"),
    ("/sensors/temp01", "read", "PUBLISH", "sensors/temp01"),
    ("/other", "read", "GET", "/other"),
]
OTHER_POP_KEY = hashlib.sha256(b"crumb fuzz another pop key").digest()[:16]


def _pop_cnf_setup() -> Callable[[bytes], None]:
    from ...pop import PopRequest, make_proof
    from ...replay import MemoryReplayStore
    from ...verify import Verifier
    from .host_targets import resign

    clock = lambda: fx.NOW

    def verifier() -> Verifier:
        # The first hop: its node key reads cnf. Fresh per input, like the verify target's.
        return Verifier([fx.ISSUER.public], node_keys=[k.public for k in fx.HOPS], clock=clock, audience="svc",
                        replay=MemoryReplayStore(1024, fence=False, clock=clock), pop_key=fx.POP_HOP)

    def request(flags: int, token: bytes, method: str, target: str,
                key: bytes = fx.POP_KEY) -> PopRequest | None:
        # Bits 1-2: the proof a request carries: a good one, none, one 1000 s old, one cut short.
        mode = (flags >> 1) & 3
        if mode == 1:
            return None
        proof = make_proof(key, token, fx.NOW - (1000 if mode == 2 else 0), method, target, b"")
        return PopRequest(proof[:19] if mode == 3 else proof, method, target)

    def run(data: bytes) -> None:
        if not data:
            return
        flags, token = data[0], data[1:]
        resource, operation, method, target = POP_REQUESTS[(flags >> 3) & 3]
        hop = fx.HOP_NAMES[0] if flags & 0x20 else None  # bit 5: verified as the chain's first hop
        if flags & 1:
            try:
                token = resign(token)
            except CrumbError:
                pass
        try:
            verified = verifier().verify(token, resource, operation, hop=hop,
                                         pop=request(flags, token, method, target))
        except CrumbError:
            return
        claims = verified.claims
        if claims.cnf is None or verified.attested:
            return  # not checked by its proof here (no cnf, or a hop past the first)
        try:
            verifier().verify(token, resource, operation, hop=hop,
                              pop=request(flags, token, method, target, OTHER_POP_KEY))
        except CrumbError as e:
            if e.code == "pop_failed":
                return
            raise Finding(f"a proof under another key was refused with {e.code}, not pop_failed", e.code) from e
        raise Finding(f"a proof under another key was accepted for {token.hex()}", "wrong key accepted")

    return run


def pop_cnf_seeds() -> dict[str, bytes]:
    out = {}
    for name, token in fx.pop_tokens().items():
        out[f"{name}-as-is"] = bytes((0,)) + token
        out[f"{name}-resigned"] = bytes((1,)) + token
    out["pop-chain-at-gateway-resigned"] = bytes((1 | 0x20,)) + fx.pop_tokens()["pop-chain"]
    token = fx.pop_tokens()["pop-uses"]
    out["pop-uses-publish-resigned"] = bytes((1 | 1 << 3,)) + token
    out["pop-no-proof"] = bytes((1 << 1,)) + fx.pop_tokens()["pop"]
    out["pop-stale-proof"] = bytes((2 << 1,)) + fx.pop_tokens()["pop"]
    out["pop-short-proof"] = bytes((3 << 1,)) + fx.pop_tokens()["pop"]
    return out
