"""Random valid and mutated tokens, and the host verifier's verdict on each (CPython only).

``cases(seed, n)`` builds n cases in the shape of shared/vectors/tokens.json's
vectors (token hex, verifier settings, request, presentations) with
``expect`` set to what ``crumb.Verifier`` answers. A third of them are valid
tokens of every kind the host mints (scopes of each permission form, aud,
nbf, uses, caveats, chains by key and by kid, named and open attenuation,
seals); a third are those with random bytes flipped, cut or inserted; a third
have their authority or block payload mutated and signed again, so that the
mutation reaches the claims and block checks instead of stopping at the
signature. tests/device/test_device_verify.py holds ucrumb.verify to the
same verdict and code, on CPython and (fewer cases) in the VM.
"""

from __future__ import annotations

import random

from crumb import caveat, cose
from crumb.errors import CrumbError
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.token import Block, attenuate, attenuate_open, attest, mint, seal, split
from crumb.verify import Verifier

NOW = 1_800_000_000
KEYS = {name: SigningKey(bytes([i + 1]) * 32)
        for i, name in enumerate(("issuer", "gateway", "ingest", "storage", "fleet-gw"))}
NODES = ("gateway", "ingest", "storage", "fleet-gw")
OPS = ("read", "write", "unlock", "set")
RESOURCES = ("/valves/1", "/valves/2", "/locks/front", "/sensors/t")


def _scope(rnd: random.Random) -> list:
    out = []
    for res in rnd.sample(RESOURCES, rnd.randint(1, 2)):
        if rnd.random() < 0.2:
            res = res.rsplit("/", 1)[0] + "/*"
        kind = rnd.random()
        perm: object = rnd.choice(OPS) if kind < 0.5 else rnd.sample(OPS, 2) if kind < 0.8 else rnd.randint(1, 127)
        out.append((res, perm))
    return out


def _caveats(rnd: random.Random) -> list:
    pool = [
        caveat("lt", "time", NOW + rnd.randint(-20, 60)),
        caveat("eq", "operation", rnd.choice(OPS)),
        caveat("prefix", "resource", rnd.choice(("/valves", "/locks", "/x"))),
        caveat("in", "battery", [5, 50, "ok"]),
        caveat("ge", "battery", rnd.randint(0, 60)),
        caveat("ne", "subject", "dev-0002"),
        caveat("eq", "audience", rnd.choice(("valve-1", "lock-1"))),
        caveat("eq", "hop", "gateway"),
    ]
    return rnd.sample(pool, rnd.randint(1, 3))


def _valid(rnd: random.Random, n: int) -> tuple[bytes, dict]:
    """One valid token and the settings it was minted for."""
    scope = _scope(rnd)
    kw: dict = {"scope": scope, "sub": f"dev-{rnd.randint(1, 3):04d}", "now": NOW - rnd.randint(0, 30),
                "ttl": rnd.randint(20, 120), "cti": n.to_bytes(8, "big")}
    if rnd.random() < 0.3:
        kw["aud"] = rnd.choice(("valve-1", "lock-1"))
    if rnd.random() < 0.2:
        kw["nbf"] = NOW + rnd.randint(-10, 40)
    if rnd.random() < 0.2:
        kw["uses"] = rnd.randint(2, 3)
    if rnd.random() < 0.3:
        kw["caveats"] = _caveats(rnd)
    shape = rnd.random()
    hop = None
    if shape < 0.25:  # a chain, attested part or all of the way
        hops = rnd.sample(NODES, rnd.randint(1, 3))
        kw["chain"] = [(h, KEYS[h].public) for h in hops]
        kw["hop_refs"] = rnd.choice(("key", "kid"))
        tok = mint(KEYS["issuer"], **kw)
        done = rnd.randint(0, len(hops))
        for h in hops[:done]:
            tok = attest(tok, KEYS[h], h)
        hop = rnd.choice([*hops, None])
    elif shape < 0.4:  # named attenuation, done or not
        kw["attenuators"] = [("fleet-gw", KEYS["fleet-gw"].public)]
        tok = mint(KEYS["issuer"], **kw)
        if rnd.random() < 0.8:
            tok = attenuate(tok, KEYS["fleet-gw"], _caveats(rnd))
    elif shape < 0.55:  # open, attenuated by holders, maybe sealed
        tok = mint(KEYS["issuer"], open=SigningKey(bytes([n % 250 + 6]) * 32), **kw)
        for _ in range(rnd.randint(0, 2)):
            tok = attenuate_open(tok, _caveats(rnd), SigningKey(rnd.randbytes(32)))
        if rnd.random() < 0.5:
            tok = seal(tok)
    else:
        tok = mint(KEYS["issuer"], **kw)
    res, perm = rnd.choice(scope)
    if res.endswith("*"):
        res = res[:-1] + rnd.choice(("1", "front", "x/y"))
    if isinstance(perm, int):
        op = rnd.choice(("GET", "put", "DELETE", "iPATCH", "POST"))
    else:
        op = rnd.choice(perm) if isinstance(perm, list) else perm
    if rnd.random() < 0.15:
        op = rnd.choice(OPS)
    if rnd.random() < 0.1:
        res = rnd.choice(("/valves/../locks/front", "/valves//1", "/locks/front/"))
    cfg = {"now": NOW + rnd.choice((0, 0, 0, rnd.randint(-40, 150))), "leeway": rnd.choice((0, 5, 30)),
           "hop": hop, "audience": rnd.choice((None, "valve-1", "lock-1", kw.get("aud")))}
    facts = rnd.choice(({}, {"battery": 50}, {"battery": 5}, {"battery": "ok"}))
    return tok, {"verifier": cfg, "request": {"resource": res, "operation": op, "facts": facts}}


def _mutate_bytes(rnd: random.Random, tok: bytes) -> bytes:
    b = bytearray(tok)
    for _ in range(rnd.randint(1, 3)):
        what = rnd.random()
        i = rnd.randrange(len(b))
        if what < 0.5:
            b[i] ^= 1 << rnd.randrange(8)
        elif what < 0.7:
            b.insert(i, rnd.randrange(256))
        elif what < 0.85 and len(b) > 1:
            del b[i]
        else:
            b[i] = rnd.choice((0x00, 0x18, 0x1F, 0x40, 0x5F, 0x80, 0x9F, 0xA0, 0xBF, 0xF6, 0xFF))
    return bytes(b)


def _mutate_payload(rnd: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    i = rnd.randrange(len(b))
    what = rnd.random()
    if what < 0.4:
        b[i] ^= 1 << rnd.randrange(8)
    elif what < 0.6:
        b[i] = rnd.choice((0x00, 0x01, 0x02, 0x03, 0x05, 0x08, 0x0A, 0x18, 0x20, 0x3A, 0x40, 0x60, 0x80,
                           0x81, 0x82, 0x83, 0xA0, 0xA1, 0xF4, 0xF5, 0xF6))
    elif what < 0.8:
        b.insert(i, rnd.randrange(256))
    else:
        del b[i]
    return bytes(b)


def _resign(rnd: random.Random, tok: bytes) -> bytes:
    """Mutate the authority payload (or a block's) and sign it again with the right key."""
    t = split(tok)
    if t.blocks and rnd.random() < 0.4:
        # a block of a named attestation/attenuation: re-sign with each node key in turn (one is right)
        j = rnd.randrange(len(t.blocks))
        prev = t.blocks[j - 1].signature if j else t.authority.signature
        payload = _mutate_payload(rnd, t.blocks[j].payload)
        key = KEYS[rnd.choice(NODES)]
        _, _, _, sig = cose.sign(key, cose.BLOCK_PROTECTED, payload, prev)
        t.blocks[j] = Block(cose.BLOCK_PROTECTED, payload, sig)
    else:
        payload = _mutate_payload(rnd, t.authority.payload)
        _, _, _, sig = cose.sign(KEYS["issuer"], t.authority.protected, payload)
        t.authority = Block(t.authority.protected, payload, sig)
    return t.to_bytes()


def host_verdict(case: dict) -> str:
    cfg, req = case["verifier"], case["request"]
    clock = lambda: cfg["now"]
    v = Verifier([KEYS["issuer"].public], node_keys=[KEYS[n].public for n in NODES], clock=clock,
                 leeway=cfg["leeway"], hop=cfg["hop"], audience=cfg["audience"],
                 replay=MemoryReplayStore(fence=False, clock=clock, leeway=cfg["leeway"]))
    result = "ok"
    for _ in range(case["presentations"]):
        try:
            v.verify(bytes.fromhex(case["token"]), req["resource"], req["operation"], facts=req["facts"])
            result = "ok"
        except CrumbError as e:
            result = e.code
    return result


def cases(seed: int, n: int) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        tok, case = _valid(rnd, seed * 100_000 + i)
        kind = i % 3
        if kind == 1:
            tok = _mutate_bytes(rnd, tok)
        elif kind == 2:
            tok = _resign(rnd, tok)
        case["token"] = tok.hex()
        case["presentations"] = 2 if rnd.random() < 0.2 else 1
        case["expect"] = host_verdict(case)
        out.append(case)
    return out


def device_verdict(case: dict) -> str:
    """ucrumb.verify's verdict on a case (CPython; the VM runs verify_diff_vm.py)."""
    from ucrumb.verify import Refused
    from ucrumb.verify import Verifier as DeviceVerifier

    cfg, req = case["verifier"], case["request"]
    v = DeviceVerifier([KEYS["issuer"].public.raw], cfg["audience"], lambda: cfg["now"],
                       node_keys=[KEYS[n].public.raw for n in NODES], leeway=cfg["leeway"], hop=cfg["hop"],
                       fence=False)
    result = "ok"
    for _ in range(case["presentations"]):
        try:
            v.verify(bytes.fromhex(case["token"]), req["resource"], req["operation"], req["facts"])
            result = "ok"
        except Refused as e:
            result = e.code
    return result
