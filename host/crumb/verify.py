"""The verifier: every check a token must pass, in the order PROTOCOL.md §7 gives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from . import caveats as cav
from .cbor import bstr_head
from .claims import Claims, Party
from .cose import sig_structure, signing_prefix
from .errors import (
    BadSignature,
    ChainIncomplete,
    ChainInvalid,
    Expired,
    Malformed,
    NotYetValid,
    PopFailed,
    Replayed,
    Revoked,
    ScopeDenied,
    UnknownCaveat,
    UnknownKey,
)
from .keys import PublicKey, SigningKey
from .replay import DEFAULT_LEEWAY, MemoryReplayStore, ReplayStore
from .scope import allows, noncanonical
from .token import Token, authority_kid, block_body, check_block_protected, split, to_bytes
from .wire import BLOCK_ATTENUATE, BLOCK_ATTEST, BLOCK_OPEN, MAX_TOKEN_BYTES, PUBLIC_KEY_BYTES, SEAL_CONTEXT


class Verified:
    """A token that passed ``Verifier.verify``.

    Attributes:
        claims: the validated claims (``.sub``, ``.scope``, ``.exp``, ``.cti``, ...).
        hop: the hop it was verified at (None: the final destination).
        attested: the names of the hops that attested, in order.
        caveats: the caveats of appended attenuation blocks (all held).
    """

    __slots__ = ("attested", "caveats", "claims", "hop")

    def __init__(self, claims: Claims, hop: str | None, attested: list[str], caveats: list) -> None:
        self.claims = claims
        self.hop = hop
        self.attested = attested
        self.caveats = caveats

    def to_json(self) -> dict:
        out = self.claims.to_json()
        out["verified_at_hop"] = self.hop
        out["attested_by"] = self.attested
        return out


class KeyResolver(Protocol):
    """Keys a verifier does not hold itself (e.g. fetched from the issuer's GET /keys).

    Asked only for kids the verifier was not given, on every such lookup, so
    the resolver alone decides how long a key stays trusted.
    """

    def issuer_key(self, kid: bytes) -> PublicKey | None: ...

    def node_key(self, kid: bytes) -> PublicKey | None: ...


class Verifier:
    """Verifies tokens offline with trusted issuer keys (PROTOCOL.md §7).

    Args:
        keys: issuer public keys trusted to sign authority blocks.
        node_keys: keys of hops and attenuators, used only to resolve the
            4-byte kids a token may name them by (never trusted as issuers).
        replay: where single-use tokens are spent; default: a
            ``MemoryReplayStore`` on the same clock with this leeway (one
            process only; use ``crumb.services.replay_redis.RedisReplayStore``
            for replicas). Its ``leeway`` must be at least this verifier's: a
            store that forgot a use while the token is still accepted here
            would accept it again.
        clock: the time source (unix seconds).
        leeway: seconds of clock difference allowed on exp, nbf and iat
            (default ``DEFAULT_LEEWAY``, 5 s; docs/services.md says when to raise it).
        hop: this service's name in declared chains (None: the final
            destination, which requires every declared hop to have attested).
        audience: this service's audience name; a token with ``aud`` must name it.
        max_token_bytes: tokens larger than this are ``too_large`` before parsing.
        revoked: ``revoked(claims) -> bool``; True rejects the token as ``revoked``.
        resolver: asked for issuer and node kids not given above (e.g.
            ``crumb.services.keyfetch.FetchedKeys``, the issuer's ``GET /keys``).
        pop_key: this hop's node key (Ed25519), whose X25519 form decrypts the
            ``cnf`` of proof-of-possession tokens (PROTOCOL.md §4.4). Without it,
            a PoP token that reaches this verifier as its first hop is ``pop_failed``.
        pop_window: seconds a request's proof time may differ from this clock (§12.1).

    Raises:
        ValueError: two different keys with one kid; a negative leeway; a
            replay store whose ``leeway`` is less than this verifier's (or missing).
    """

    def __init__(
        self,
        keys: Iterable[PublicKey],
        *,
        node_keys: Iterable[PublicKey] = (),
        replay: ReplayStore | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = DEFAULT_LEEWAY,
        hop: str | None = None,
        audience: str | None = None,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        revoked: Callable[[Claims], bool] | None = None,
        resolver: KeyResolver | None = None,
        pop_key: SigningKey | None = None,
        pop_window: int = 30,
    ) -> None:
        self._keys: dict[bytes, PublicKey] = {}
        self._by_header: dict[bytes, tuple[PublicKey, bytes]] = {}  # protected header -> (key, signing prefix)
        for key in keys:
            self.add_key(key)
        self._node_keys = {k.kid: k for k in node_keys}
        if leeway < 0:
            raise ValueError("a verifier's leeway is 0 or more seconds")
        self.replay = replay if replay is not None else MemoryReplayStore(clock=clock, leeway=leeway)
        keep = getattr(self.replay, "leeway", None)
        if not isinstance(keep, int) or keep < leeway:
            said = "does not say how long it keeps spent uses" if not isinstance(keep, int) else \
                f"keeps a spent use only {keep} s past a token's exp"
            raise ValueError(f"the replay store {said}, and this verifier accepts tokens up to {leeway} s past it: "
                             f"give the store leeway={leeway} or more (the largest leeway of the verifiers sharing it)")
        self.clock = clock
        self.leeway = leeway
        self.hop = hop
        self.audience = audience
        self.max_token_bytes = max_token_bytes
        self.revoked = revoked
        self.resolver = resolver
        self.pop_window = pop_window
        self._cnf: Any = None
        if pop_key is not None:
            from .pop import CnfOpener  # only PoP hops pay for the import (and need `cryptography`)
            self._cnf = CnfOpener(pop_key)

    def add_key(self, key: PublicKey) -> None:
        """Trust one more issuer key (key rotation). Raises ValueError if another key has its kid."""
        other = self._keys.get(key.kid)
        if other is not None and other != key:
            raise ValueError(f"two different trusted keys share kid {key.kid.hex()}")
        self._keys[key.kid] = key

    def kids(self) -> list[bytes]:
        """The kids of the issuer keys given to this verifier."""
        return list(self._keys)

    def _issuer_key(self, protected: bytes) -> tuple[PublicKey, bytes]:
        """The trusted key for an authority header, and the Sig_structure prefix it implies."""
        hit = self._by_header.get(protected)
        if hit is None:
            kid = authority_kid(protected)
            key = self._keys.get(kid)
            if key is None:
                key = self.resolver.issuer_key(kid) if self.resolver is not None else None
                if key is None:
                    raise UnknownKey(f"no trusted issuer key has kid {kid.hex()}")
                return key, signing_prefix(protected, b"")  # not cached: the resolver may retire it
            hit = (key, signing_prefix(protected, b""))
            self._by_header[protected] = hit  # bounded: one entry per trusted key
        return hit

    def _party_key(self, party: Party) -> PublicKey:
        if len(party.keyref) == PUBLIC_KEY_BYTES:
            return PublicKey(party.keyref)
        key = self._node_keys.get(party.keyref)
        if key is None and self.resolver is not None:
            key = self.resolver.node_key(party.keyref)
        if key is None:
            raise UnknownKey(f"no node key with kid {party.keyref.hex()} for {party.name!r}")
        return key

    def verify(
        self,
        token: bytes | str,
        resource: str,
        operation: str,
        *,
        hop: Any = ...,
        facts: Mapping[str, Any] | None = None,
        consume: bool = True,
        pop: Any = None,
    ) -> Verified:
        """Check ``token`` for one request, and spend one of its uses at this hop.

        Args:
            token: the token, as bytes or base64url text.
            resource: the resource the request acts on (e.g. its path), in
                canonical form (PROTOCOL.md §4.2; else ``scope_denied``).
            operation: the operation (e.g. ``"read"``, or an HTTP method
                name for tokens scoped with a method bitmask).
            hop: override the verifier's hop for this call.
            facts: application facts caveats may test (``{"zone": "b"}``).
            consume: False checks without spending a use.
            pop: the request's ``crumb.pop.PopRequest`` (its proof, method,
                target and body): required by PoP tokens at their first hop.

        Returns:
            Verified: the claims, the hop, the hops that attested.

        Raises:
            CrumbError: with a stable ``.code``: ``malformed``,
                ``unsupported_version``, ``too_large``, ``unknown_key``,
                ``bad_signature``, ``revoked``, ``expired``,
                ``not_yet_valid``, ``chain_incomplete``, ``chain_invalid``,
                ``scope_denied``, ``caveat_failed``, ``unknown_caveat``,
                ``replayed``, ``pop_failed``, or ``store_unavailable`` (the
                replay store cannot answer: failing closed).
        """
        verified, now = self._check_token(token, self.hop if hop is ... else hop, pop)
        self._check_request(verified, resource, operation, facts, now)
        if consume:
            self.spend(verified)
        return verified

    # verify() in three steps, for callers that check one token against several requests
    # (crumb.services.pg verifies a token once per transaction, then checks each row's
    # resource): the same checks, in the same order, as one verify() call.

    def check_token(self, token: bytes | str, *, hop: Any = ..., pop: Any = None) -> Verified:
        """Every check of ``verify`` that does not depend on the request (PROTOCOL.md §7, steps 1-11).

        The result is not yet good for any request: pass it to ``check_request``
        for each (resource, operation), and to ``spend`` once. A PoP token at its
        first hop needs ``pop`` here too (without it: ``pop_failed``).
        """
        return self._check_token(token, self.hop if hop is ... else hop, pop)[0]

    def check_request(self, verified: Verified, resource: str, operation: str, *,
                      facts: Mapping[str, Any] | None = None) -> None:
        """The checks of ``verify`` that depend on the request: audience, scope, caveats (steps 12-14).

        Raises ``scope_denied``, ``caveat_failed`` or ``unknown_caveat``; spends nothing.
        """
        self._check_request(verified, resource, operation, facts, int(self.clock()))

    def spend(self, verified: Verified) -> None:
        """Spend one use of the token at its hop (step 15); ``replayed`` when none is left."""
        claims, hop = verified.claims, verified.hop
        if not self.replay.consume(claims.cti, hop or "", claims.uses, claims.iat, claims.exp):
            where = f" at hop {hop!r}" if hop else ""
            raise Replayed(f"all {claims.uses} use(s) of this token are spent{where}")

    def _check_token(self, token: bytes | str, hop: str | None, pop: Any = None) -> tuple[Verified, int]:
        data = to_bytes(token)
        tok = split(data, self.max_token_bytes)
        auth = tok.authority
        key, prefix = self._issuer_key(auth.protected)
        if not key.verify(prefix + bstr_head(len(auth.payload)) + auth.payload, auth.signature):
            raise BadSignature("the authority signature does not verify")
        claims = Claims.decode(auth.payload)
        if self.revoked is not None and self.revoked(claims):
            raise Revoked("this token was revoked")

        now = int(self.clock())
        if claims.exp + self.leeway <= now:
            raise Expired(f"expired at {claims.exp}, now {now}")
        if claims.nbf is not None and claims.nbf - self.leeway > now:
            raise NotYetValid(f"not valid before {claims.nbf}, now {now}")
        if claims.iat - self.leeway > now:
            raise NotYetValid(f"issued in the future ({claims.iat}), now {now}")

        if tok.blocks or tok.proof is not None or claims.attenuators:
            attested, extra = self._check_blocks(tok, claims)
        else:
            attested, extra = [], []
        if claims.open_key is not None and tok.proof is None:
            raise Malformed("an open token carries a proof")
        # Before the chain position: a PoP token no hop has attested yet is good only with its
        # holder's proof, checked by the hop its key is encrypted to (any other hop cannot read it).
        if claims.cnf is not None and not attested:
            self._check_pop(claims, data, pop, now)
        if claims.chain:
            self._check_position(claims, attested, hop)
        return Verified(claims, hop, [claims.chain[i].name for i in attested] if attested else [], extra), now

    def _check_request(self, verified: Verified, resource: str, operation: str,
                       facts: Mapping[str, Any] | None, now: int) -> None:
        claims = verified.claims
        if claims.aud is not None and claims.aud != self.audience:
            raise ScopeDenied(f"token is for audience {claims.aud!r}, this is {self.audience!r}")
        # A resource outside the canonical form (§4.2) is one a service may normalise into
        # another ("/sensors/../valves/1"): no prefix pattern can grant it safely.
        why = noncanonical(resource)
        if why is not None:
            raise ScopeDenied(f"resource {resource!r} is not in canonical form: it has {why}")
        if not allows(claims.scope, resource, operation):
            raise ScopeDenied(f"token does not grant {operation!r} on {resource!r}")
        extra = verified.caveats
        if claims.caveats or extra:
            ctx = cav.Context(resource=resource, operation=operation, time=now, hop=verified.hop,
                              audience=self.audience, subject=claims.sub, facts=facts)
            cav.evaluate(claims.caveats, ctx)
            cav.evaluate(extra, ctx)

    def _check_blocks(self, tok: Token, claims: Claims) -> tuple[list[int], list]:
        """Verify appended blocks and the proof; returns (attested hop indexes, caveats)."""
        prev = tok.authority.signature
        attested: list[int] = []
        seen_attenuators: set[int] = set()
        extra: list = []
        open_key = claims.open_key
        open_sig = tok.authority.signature
        for block in tok.blocks:
            check_block_protected(block.protected)
            body = block_body(block)
            kind = body[0]
            signing_input = sig_structure(block.protected, prev, block.payload)
            if kind == BLOCK_ATTEST:
                if len(body) != 2 or not isinstance(body[1], int) or isinstance(body[1], bool):
                    raise Malformed("an attestation is [1, hop index]")
                index = body[1]
                if not 0 <= index < len(claims.chain):
                    raise ChainInvalid(f"attestation for hop {index + 1}, which is not declared")
                if index != len(attested):
                    raise ChainInvalid(
                        f"hop {claims.chain[index].name!r} attested out of order "
                        f"(expected {claims.chain[len(attested)].name!r})"
                        if len(attested) < len(claims.chain) else "more attestations than declared hops")
                party = claims.chain[index]
                if not self._party_key(party).verify(signing_input, block.signature):
                    raise ChainInvalid(f"attestation of hop {party.name!r} is not signed by its declared key "
                                       "over the preceding block")
                attested.append(index)
            elif kind == BLOCK_ATTENUATE:
                if (len(body) != 3 or not isinstance(body[1], int) or isinstance(body[1], bool)
                        or not 0 <= body[1] < len(claims.attenuators)):
                    raise ChainInvalid("attenuation by an attenuator the authority does not declare")
                if body[1] in seen_attenuators:
                    raise ChainInvalid(f"attenuator {claims.attenuators[body[1]].name!r} attenuated twice")
                party = claims.attenuators[body[1]]
                if not self._party_key(party).verify(signing_input, block.signature):
                    raise BadSignature(f"attenuation by {party.name!r} does not verify")
                seen_attenuators.add(body[1])
                extra.extend(cav.check_list(body[2]))
            elif kind == BLOCK_OPEN:
                if open_key is None:
                    raise ChainInvalid("open attenuation on a token that is not open")
                if len(body) != 3 or not isinstance(body[2], bytes) or len(body[2]) != PUBLIC_KEY_BYTES:
                    raise Malformed("an open attenuation is [3, caveats, next key]")
                if not PublicKey(open_key).verify(signing_input, block.signature):
                    raise BadSignature("open attenuation is not signed by the current ephemeral key")
                extra.extend(cav.check_list(body[1]))
                open_key = body[2]
                open_sig = block.signature
            else:
                raise UnknownCaveat(f"block kind {kind} is not understood")
            prev = block.signature

        if len(seen_attenuators) != len(claims.attenuators):
            missing = [p.name for i, p in enumerate(claims.attenuators) if i not in seen_attenuators]
            raise ChainIncomplete(f"required attenuation by {', '.join(missing)} is missing")
        if tok.proof is not None:
            if open_key is None:
                raise Malformed("a proof on a token that is not open")
            if len(tok.proof) == 32:
                from .keys import SigningKey  # only open tokens pay for key derivation
                if SigningKey(tok.proof).public.raw != open_key:
                    raise BadSignature("the proof is not the secret of the last ephemeral key")
            elif not PublicKey(open_key).verify(SEAL_CONTEXT + open_sig, tok.proof):
                raise BadSignature("the seal does not verify")
        return attested, extra

    def _check_pop(self, claims: Claims, token: bytes, pop: Any, now: int) -> None:
        """§7 step 11a: the first hop of a PoP token (no hop has attested yet) checks the request's proof.

        Later hops rely on that hop's attestation: its signature follows the
        check. The one place the proof is checked (HTTP, MQTT, CoAP pass a PopRequest).
        """
        if self._cnf is None:
            raise PopFailed("this is a proof-of-possession token and this hop has no key to read its cnf")
        from .pop import check_proof
        assert claims.cnf is not None
        t = check_proof(self._cnf.pop_key(claims.cnf), token, pop, now, self.pop_window)
        # A multi-use token: each proof is good once (single-use tokens already are), kept while
        # its time could pass the window.
        if claims.uses > 1 and not self.replay.consume(b"pop" + pop.proof, "", 1, claims.iat,
                                                       max(claims.exp, t + self.pop_window + 1)):
            raise PopFailed("this proof was already used")

    def _check_position(self, claims: Claims, attested: list[int], hop: str | None) -> None:
        chain = claims.chain
        if not chain:
            return
        if hop is None:
            if len(attested) < len(chain):
                raise ChainIncomplete(f"hop {chain[len(attested)].name!r} has not attested")
            return
        index = next((i for i, p in enumerate(chain) if p.name == hop), None)
        if index is None:
            raise ChainInvalid(f"this service ({hop!r}) is not a hop of the token's chain")
        if len(attested) < index:
            raise ChainIncomplete(f"hop {chain[len(attested)].name!r} has not attested")
        if len(attested) > index:
            raise ChainInvalid(f"the token has already passed hop {hop!r}")
