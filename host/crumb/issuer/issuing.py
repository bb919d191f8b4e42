"""The token pipeline: one request in, tokens or one refusal out, and an audit record either way.

Checks run cheapest-and-unauthenticated first, so that nothing an
unauthenticated client sends can touch per-device state:

    parse (malformed) -> MAC (bad_mac) -> device time (stale_time)
    -> revoked (local deny list) -> enrolled (unknown_device) -> batch limit (too_large)
    -> gate: revoked (Redis), nonce (replayed), rate (rate_limited) -> policy (scope_denied)
    -> mint -> audit commit -> response

The MAC is checked before the registry is consulted, so the answer to a
forged request never reveals whether a device id exists.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ..keys import SigningKey
from .audit import AuditLog, AuditUnavailable, IssuedRecord, canonical
from .codes import Refusal
from .gate import Gate, MemoryGate
from .keystore import Keyring
from .metrics import Metrics
from .minting import Minter, MintLane, finish
from .policy import Policy, PolicyError, Profile, Rule
from .policy import load as load_policy
from .protocol import (
    DeviceMacs,
    Issued,
    TokenRequest,
    derive_device_key,
    error_cbor,
    error_json,
    parse_cbor_request,
    parse_json_request,
    token_response_cbor,
    token_response_json,
    token_response_pop,
)
from .registry import Registry

log = logging.getLogger("crumb.issuer")
_MISSING = object()


class Issuer:
    def __init__(self, *, master: bytes, keyring: Keyring, registry: Registry, audit: AuditLog,
                 policy: Policy, policy_path: Path | None = None, gate: Gate | None = None,
                 metrics: Metrics | None = None, clock=time.time) -> None:
        self.macs = DeviceMacs(master)
        self.keyring = keyring
        self.registry = registry
        self.audit = audit
        self.policy = policy
        self.policy_path = policy_path
        self.gate: Gate = gate if gate is not None else MemoryGate()
        self.metrics = metrics if metrics is not None else Metrics()
        self.clock = clock
        self.minter = Minter()
        self._profiles: dict = {}
        self._lanes: dict = {}
        self._kid: tuple = (b"", "")  # (kid, kid.hex()) of the key that signed last
        self._policy_stamp = self._stamp(policy_path)
        self._checked = time.monotonic()

    # -- keeping up with the files ---------------------------------------------------

    @staticmethod
    def _stamp(path: Path | None) -> tuple | None:
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> None:
        """Per request: registry changes (one pragma). Once a second: keys and policy."""
        if self.registry.refresh():
            self._profiles.clear()
            self._lanes.clear()
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        self.keyring.refresh(now)
        stamp = self._stamp(self.policy_path)
        if stamp != self._policy_stamp and self.policy_path is not None:
            self._policy_stamp = stamp
            try:
                self.policy = load_policy(self.policy_path)
            except PolicyError as e:
                self.metrics.policy_reload_errors += 1
                log.error("policy change refused, the previous policy stays in force:\n%s", e)
                print(f"crumb issuer: policy change refused, previous policy stays in force:\n{e}",
                      file=sys.stderr, flush=True)
                return
            self.metrics.policy_reloads += 1
            self._profiles.clear()
            self._lanes.clear()

    def profile(self, device: str, enrolled_group) -> Profile:
        key = (device, enrolled_group)
        profile = self._profiles.get(key)
        if profile is None:
            if len(self._profiles) > 100_000:
                self._profiles.clear()
            profile = self._profiles[key] = self.policy.profile(device, enrolled_group)
        return profile

    # -- the endpoint ----------------------------------------------------------------

    async def token(self, body: bytes | None, fmt: str, peer: str | None,
                    refusal: Refusal | None = None) -> tuple[int, bytes, int | None]:
        """(HTTP status, response body, Retry-After or None) for one POST /token."""
        now_f = self.clock()
        now = int(now_f)
        device: str | None = None
        authenticated = False
        try:
            if refusal is not None:
                raise refusal
            assert body is not None
            req = parse_cbor_request(body) if fmt == "cbor" else parse_json_request(body)
            device = req.client_id
            self.refresh()  # registry writes (revocations, rekeys) apply from this request on
            if not self.macs.verify(device, req.mac_input, req.mac, self.registry.keygens.get(device, 0)):
                raise Refusal("bad_mac", "the request MAC does not verify for this client_id")
            authenticated = True
            skew, max_skew = req.time - now, self.policy.max_skew
            if skew > max_skew or -skew > max_skew:
                raise Refusal("stale_time", f"device time {req.time} is {skew:+d}s from issuer time {now} "
                                            f"(limit ±{max_skew}s); set the clock from this "
                                            "response's time and retry")
            group, profile, pending = self._admit(req, device, now, now_f)
            if pending is not None:  # Redis: ask it (memory answers at once, with no coroutine)
                await pending
            minted, record, key = self._mint(req, device, group, profile, now, now_f, peer)
            if fmt != "cbor" and any(len(m) > 6 for m in minted):
                raise Refusal("malformed", "proof-of-possession tokens are issued over CBOR only: the answer is "
                                           "a COSE_Encrypt0 to the device key (PROTOCOL.md §11.9)")
        except Refusal as r:
            return await self._refuse(r, fmt, now, device, authenticated, peer)
        except Exception as e:  # a bug: log it, issue nothing, and say so
            log.exception("internal error while issuing")
            return await self._refuse(Refusal("internal_error", f"internal error ({type(e).__name__})"),
                                      fmt, now, device, authenticated, peer)
        try:
            # The tokens are signed as their record is committed (audit.append_signed).
            _, signatures = await self.audit.append_signed(record, key, [m[1] for m in minted])
        except AuditUnavailable as e:
            # The tokens are dropped: nothing leaves the issuer that the log does not hold.
            return await self._refuse(Refusal("store_unavailable", str(e), retry_after=1), fmt, now, device,
                                      True, peer, audit=False)
        issued = [Issued(finish(m[0], sig), m[2], m[3], m[4], m[5], m[6] if len(m) > 6 else None)
                  for m, sig in zip(minted, signatures)]
        self.metrics.tokens_issued += len(issued)
        if any(len(m) > 6 for m in minted):  # proof of possession: the whole answer is encrypted to the device (§11.9)
            from ..pop import seal_response
            device_key = derive_device_key(self.macs.master, device, self.registry.keygens.get(device, 0))
            return 200, seal_response(device_key, req.mac, token_response_pop(issued, now, req.batch)), None
        if fmt == "cbor":
            return 200, token_response_cbor(issued, now, req.batch), None
        return 200, token_response_json(issued, now, req.batch), None

    def _admit(self, req: TokenRequest, device: str, now: int, now_f: float) -> tuple[object, Profile, object]:
        """(enrolled group, policy profile, the gate's awaitable or None) for an authenticated request, or Refusal."""
        registry = self.registry
        if device in registry.revoked:
            raise Refusal("revoked", f"device {device!r} is revoked")
        group = registry.known.get(device, _MISSING)
        policy = self.policy
        if group is _MISSING:
            if not policy.knows(device):
                raise Refusal("unknown_device", f"device {device!r} is not enrolled")
            group = None
        profile = self._profiles.get((device, group)) or self.profile(device, group)
        n = len(req.scopes) * req.count  # req.n_tokens, without the property call
        if n > profile.batch:
            raise Refusal("too_large", f"a batch of {n} tokens exceeds this device's limit of {profile.batch}",
                          status=400)
        # Keep the nonce while the request's time could still pass the freshness check.
        nonce_ttl = req.time + policy.max_skew + 1 - now
        return group, profile, self.gate.admit(device, req.nonce, nonce_ttl, n, profile.rate, profile.burst, now_f)

    def _mint(self, req: TokenRequest, device: str, group, profile: Profile, now: int, now_f: float,
              peer: str | None) -> tuple[list[tuple], bytes, SigningKey]:
        """(unsigned tokens, their audit record in canonical form, the key to sign with) or Refusal.

        Each unsigned token is (bytes up to the signature, signing input, ttl, uses, cti, scope).
        """
        if req.count == 1 and len(req.scopes) == 1:  # nearly every request: one token, one scope
            return self._mint_one(req, device, group, profile, now, now_f, peer)
        return self._mint_many(req, device, profile, now, now_f, peer)

    def _mint_one(self, req: TokenRequest, device: str, group, profile: Profile, now: int, now_f: float,
                  peer: str | None) -> tuple[list[tuple], bytes, SigningKey]:
        """_mint_many for one token, from its lane's templates (the fast path; tests hold it to _mint_many)."""
        lane = self._lane(device, group, profile, req)
        if lane is None:
            return self._mint_many(req, device, profile, now, now_f, peer)
        unsigned, to_sign, cti = lane.mint.prepare(now)
        body = lane.record.body_one(int(now_f * 1000), now + lane.ttl, peer, cti.hex())
        return [(unsigned, to_sign, lane.ttl, lane.uses, cti, req.scopes[0])], body, lane.key

    def _mint_many(self, req: TokenRequest, device: str, profile: Profile, now: int, now_f: float,
                   peer: str | None) -> tuple[list[tuple], bytes, SigningKey]:
        """Any request: each scope's rule, count tokens per scope, one record through audit.canonical()."""
        rules: list[Rule] = []
        for resource, perm in req.scopes:
            rule = profile.match(resource, perm, req.audience)
            if rule is None:
                raise _denied(resource, perm, device, req.audience)
            rules.append(rule)

        key = self.keyring.current
        assert key is not None
        policy = self.policy
        minted: list[tuple] = []
        prepare = self.minter.prepare
        iss, hop_refs, count = policy.name, policy.hop_refs, req.count
        sealers: dict = {}  # pop = "batch": one key, and one ephemeral key per first hop, for the whole answer
        for (resource, perm), rule in zip(req.scopes, rules):
            aud = rule.audience or req.audience
            ttl, uses = rule.ttl, rule.uses
            for _ in range(count):
                if rule.pop is not None:
                    minted.append(self._mint_pop(key, rule, resource, perm, device, aud, now, sealers))
                    continue
                unsigned, to_sign, cti = prepare(key, resource=resource, permission=perm, sub=device, ttl=ttl,
                                                 uses=uses, iss=iss, aud=aud, chain=rule.chain,
                                                 attenuators=rule.attenuators, hop_refs=hop_refs, now=now)
                minted.append((unsigned, to_sign, ttl, uses, cti, (resource, perm)))
        exp = now + min(r.ttl for r in rules)
        record = {"t": int(now_f * 1000), "event": "issued", "device": device, "auth": True,
                  "scope": [[r, p] for r, p in req.scopes], "count": count,
                  "tokens": [m[4].hex() for m in minted], "exp": exp, "kid": self._kid_hex(key),
                  "rules": sorted({r.where for r in rules}), "peer": peer}
        return minted, canonical(record).encode("utf-8"), key

    def _mint_pop(self, key: SigningKey, rule: Rule, resource: str, perm: object, device: str, aud: str | None,
                  now: int, sealers: dict) -> tuple:
        """One PoP token (PROTOCOL.md §4.4): unsigned, signing input, ttl, uses, cti, scope, PoP key."""
        from ..claims import Claims
        from ..pop import CnfSealer, new_pop_key, x25519_public
        from ..scope import encode_scope
        from .minting import _party, new_cti
        node_name, node_key = rule.pop_node
        if rule.pop == "batch":  # one key for the answer, sealed once per first hop: the same cnf in each token
            pop_key = sealers.get(None) or sealers.setdefault(None, new_pop_key())
            cnf = sealers.get(node_name) or sealers.setdefault(node_name,
                                                               CnfSealer(x25519_public(node_key)).cnf(pop_key))
        else:
            pop_key = new_pop_key()
            cnf = CnfSealer(x25519_public(node_key)).cnf(pop_key)
        refs = self.policy.hop_refs
        cti = new_cti()
        claims = Claims(exp=now + rule.ttl, iat=now, cti=cti, scope=encode_scope([(resource, perm)]),
                        iss=self.policy.name, sub=device, aud=aud, uses=rule.uses,
                        chain=[_party(n, k, refs) for n, k in rule.chain],
                        attenuators=[_party(n, k, refs) for n, k in rule.attenuators])
        claims.cnf = cnf
        unsigned, to_sign = self.minter.prepare_claims(key, claims)
        return unsigned, to_sign, rule.ttl, rule.uses, cti, (resource, perm), pop_key

    def _lane(self, device: str, group, profile: Profile, req: TokenRequest) -> _Lane | None:
        """The decision, mint template and audit template for one (device, scope, audience); Refusal if denied.

        Lanes are dropped with the profiles (policy or registry changed) and
        rebuilt when the signing key changes; a denial is never cached.
        """
        resource, perm = req.scopes[0]
        key = self.keyring.current
        assert key is not None
        lane_key = (device, group, resource, tuple(perm) if isinstance(perm, list) else perm, req.audience)
        lane = self._lanes.get(lane_key)
        if lane is not None and lane.key is key:
            return lane
        rule = profile.match(resource, perm, req.audience)
        if rule is None:
            raise _denied(resource, perm, device, req.audience)
        if rule.pop is not None:
            return None  # a PoP token's cnf differs in every token: no template holds it
        policy = self.policy
        mint = self.minter.lane(key, resource=resource, permission=perm, sub=device, ttl=rule.ttl, uses=rule.uses,
                                iss=policy.name, aud=rule.audience or req.audience, chain=rule.chain,
                                attenuators=rule.attenuators, hop_refs=policy.hop_refs)
        record = IssuedRecord(device=device, scope=req.scopes, count=1, kid=self._kid_hex(key), rules=[rule.where])
        if len(self._lanes) >= 100_000:
            self._lanes.clear()
        lane = self._lanes[lane_key] = _Lane(key, mint, record, rule.ttl, rule.uses)
        return lane

    def _kid_hex(self, key) -> str:
        kid = key.kid
        if kid != self._kid[0]:
            self._kid = (kid, kid.hex())
        return self._kid[1]

    async def _refuse(self, r: Refusal, fmt: str, now: int, device: str | None, authenticated: bool,
                      peer: str | None, audit: bool = True) -> tuple[int, bytes, int | None]:
        self.metrics.refused(r.code)
        if audit:
            record = {"t": int(self.clock() * 1000), "event": "refused", "device": device, "auth": authenticated,
                      "code": r.code, "msg": r.message, "peer": peer}
            try:
                await self.audit.append(record)
            except AuditUnavailable as e:
                # The refusal still goes out (it hands out nothing); the failure is on
                # /healthz, in the metrics and here.
                log.error("audit log unavailable, refusal not recorded: %s (%s)", r, e)
        body = error_cbor(r, now) if fmt == "cbor" else error_json(r, now)
        return r.status, body, r.retry_after


class _Lane(NamedTuple):
    key: SigningKey
    mint: MintLane
    record: IssuedRecord
    ttl: int
    uses: int


def _denied(resource: str, perm: object, device: str, audience: str | None) -> Refusal:
    return Refusal("scope_denied", f"the policy does not allow {_show(perm)} on {resource!r} for device {device!r}"
                                   + (f" (audience {audience!r})" if audience else ""))


def _show(perm: object) -> str:
    if isinstance(perm, str):
        return repr(perm)
    if isinstance(perm, int):
        return f"method mask {perm}"
    return "operations " + ", ".join(repr(p) for p in perm)  # type: ignore[union-attr]

