"""Fixed keys, valid tokens and a loopback HTTP responder for the fuzz targets.

Everything here is deterministic: keys come from fixed seeds and tokens from
fixed times and token ids, so a seed or a crash input means the same thing in
every process and on every machine.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Self

from ... import caveats as cav
from ...keys import SigningKey
from ...token import attenuate, attenuate_open, attest, mint, seal

NOW = 1_800_000_000  # the verifier's clock in every target (2027-01-15)
DEVICE_ID = "fuzz-dev-01"


def fixed_key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(b"crumb fuzz key: " + label.encode()).digest())


ISSUER = fixed_key("issuer")
HOPS = [fixed_key(f"hop{i}") for i in range(3)]
HOP_NAMES = ["gateway", "ingest", "storage"]
ATTENUATOR = fixed_key("attenuator")
EPHEMERAL = [fixed_key(f"ephemeral{i}") for i in range(3)]
# Every key a token built here can be signed with, by raw public key (re-signing looks them up).
BY_PUBLIC = {k.public.raw: k for k in (ISSUER, *HOPS, ATTENUATOR, *EPHEMERAL)}


def _cti(n: int) -> bytes:
    return n.to_bytes(8, "big")


def valid_tokens() -> dict[str, bytes]:
    """One token of each shape the verifier knows, all valid at NOW."""
    iat = NOW - 10
    chain = list(zip(HOP_NAMES, (k.public for k in HOPS), strict=True))
    out = {
        "plain": mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(1)),
        "claims": mint(ISSUER, scope=[("/sensors/*", ["read", "publish"]), ("/config/a", 3)], sub=DEVICE_ID,
                       iss="crumb-fuzz", aud="svc", nbf=iat, uses=3, ttl=300, now=iat, cti=_cti(2)),
        "caveats": mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(3),
                        caveats=[cav.make("prefix", "resource", "/sensors/"), cav.make("lt", "time", NOW + 60),
                                 cav.make("in", "operation", ["read", "write"])]),
    }
    chained = mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(4), chain=chain)
    for key, name in zip(HOPS, HOP_NAMES, strict=True):
        chained = attest(chained, key, name)
    out["chain3"] = chained
    by_kid = mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(5),
                  chain=chain[:1], hop_refs="kid")
    out["chain-kid"] = attest(by_kid, HOPS[0], HOP_NAMES[0])
    narrowed = mint(ISSUER, scope=[("/sensors/*", "read")], sub=DEVICE_ID, now=iat, cti=_cti(6),
                    attenuators=[("edge", ATTENUATOR.public)])
    out["attenuated"] = attenuate(narrowed, ATTENUATOR, [cav.make("eq", "resource", "/sensors/temp01")])
    opened = mint(ISSUER, scope=[("/sensors/*", "read")], sub=DEVICE_ID, now=iat, cti=_cti(7), open=EPHEMERAL[0])
    opened = attenuate_open(opened, [cav.make("prefix", "resource", "/sensors/t")], EPHEMERAL[1])
    out["open"] = opened
    out["sealed"] = seal(attenuate_open(opened, [cav.make("ne", "operation", "write")], EPHEMERAL[2]))
    return out


class Responder:
    """A loopback HTTP/1.1 server that answers every request with ``self.response`` (raw bytes).

    Real sockets on 127.0.0.1, one thread, one connection at a time: the
    client under test talks to it exactly as to a remote server. It reads the
    request (head and Content-Length body) before answering, so the answer is
    never lost to a reset, then half-closes and waits for the client to close.
    Every wait is bounded (``timeout`` seconds).
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.response = b""
        self.timeout = timeout
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fuzz-responder", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Self:
        return self.__enter__()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.ls.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.ls.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                try:
                    self._answer(conn)
                except OSError:
                    pass  # the client gave up (its own timeout): the next connection is unaffected

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(self.timeout)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = min(int(value), 65536)
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                return
            body += chunk
        conn.sendall(self.response)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):  # until the client closes: its unread bytes never reset our answer
            pass


# -- proof of possession ------------------------------------------------------------------

POP_KEY = hashlib.sha256(b"crumb fuzz pop key").digest()[:16]
POP_HOP = HOPS[0]  # the first hop every PoP token's cnf is encrypted to (its node key reads it)


def pop_cnf(n: int) -> dict:
    """A cnf claim holding POP_KEY, sealed to POP_HOP with a fixed ephemeral key and nonce."""
    from ...pop import CnfSealer, x25519_public

    secret = hashlib.sha256(b"crumb fuzz ephemeral: %d" % n).digest()
    return CnfSealer(x25519_public(POP_HOP.public), ephemeral_secret=secret).cnf(POP_KEY, nonce=bytes([n]) * 13)


def pop_tokens() -> dict[str, bytes]:
    """Proof-of-possession tokens valid at NOW: at their first hop, and attested past it."""
    iat = NOW - 10
    chain = [(HOP_NAMES[0], HOPS[0].public)]
    out = {
        "pop": mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(20),
                    cnf=pop_cnf(0)),
        "pop-uses": mint(ISSUER, scope=[("/sensors/*", ["read", "publish"])], sub=DEVICE_ID, aud="svc", uses=3,
                         now=iat, cti=_cti(21), cnf=pop_cnf(1),
                         caveats=[cav.make("prefix", "resource", "/sensors/")]),
    }
    chained = mint(ISSUER, scope=[("/sensors/temp01", "read")], sub=DEVICE_ID, now=iat, cti=_cti(22), chain=chain,
                   cnf=pop_cnf(2))
    out["pop-chain"] = chained
    out["pop-attested"] = attest(chained, HOPS[0], HOP_NAMES[0])
    return out
