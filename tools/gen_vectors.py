#!/usr/bin/env python3
"""Write shared/vectors/tokens.json, shared/vectors/cbor.json and shared/wire.json.

Everything is deterministic (fixed seeds, clock and token ids; Ed25519
signatures are deterministic), so running this again gives identical files;
tests/host/test_vectors.py checks both that and every expected result.
shared/wire.json is every constant of host/crumb/wire.py, in its sections
(tests/host/test_wire.py, tests/device/test_device_wire.py). shared/vectors/cbor.json
is the CBOR_VECTORS table below, which both CBOR decoders must follow
(tests/device/test_device_cbor_differential.py, tests/device/cases/vector_cases.py).

    .venv/bin/python tools/gen_vectors.py [--check]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

from crumb import cbor, cose, wire
from crumb.caveats import make as caveat
from crumb.errors import CrumbError
from crumb.keys import SigningKey
from crumb.token import Block, Token, attenuate, attenuate_open, attest, mint, seal, split

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000
RES, OP = "/sensors/temp01", "read"
KEYS = {name: SigningKey(bytes([i]) * 32) for i, name in enumerate(
    ["issuer", "gateway", "ingest", "storage", "fleet-gw", "ephemeral-0", "ephemeral-1", "stranger"], start=1)}
HOPS = ["gateway", "ingest", "storage"]


def _cti(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _tok(n: int, **kw) -> bytes:
    kw.setdefault("sub", "dev-0001")
    kw.setdefault("scope", [(RES, OP)])
    return mint(KEYS["issuer"], now=kw.pop("now", NOW), cti=_cti(n), **kw)


def _resign(payload_map_bytes: bytes, protected: bytes | None = None) -> bytes:
    issuer = KEYS["issuer"]
    p, _, payload, sig = cose.sign(issuer, protected or cose.authority_protected(issuer.kid), payload_map_bytes)
    return Token(Block(p, payload, sig), [], None).to_bytes()


def _claims(n: int) -> dict:
    return {2: "dev-0001", 4: NOW + 60, 6: NOW, 7: _cti(n), 9: cbor.dumps([[RES, OP]])}  # scope: AIF in a bstr


def _cbor_ok(token: bytes) -> bool:
    """Is every CBOR level (outer array, each protected header and payload) well-formed
    deterministic CBOR? Device tests check their decoder agrees."""
    wide = {"max_depth": 16, "max_items": 512, "max_string": 4096}
    try:
        items = cbor.loads(token, **wide)
        for block in items[1:] if isinstance(items, list) else []:
            if isinstance(block, list) and len(block) == 4:
                cbor.loads(block[0], **wide)
                cbor.loads(block[2], **wide)
    except CrumbError:
        return False
    return True


def vectors() -> list[dict]:
    chain = [(h, KEYS[h].public) for h in HOPS]
    out: list[dict] = []

    def add(name, token, expect, *, res=RES, op=OP, hop=None, facts=None, audience=None,
            now=NOW, presentations=1, note=""):
        out.append({"name": name, "note": note, "token": token.hex(), "cbor_ok": _cbor_ok(token),
                    "verifier": {"now": now, "leeway": 30, "hop": hop, "audience": audience},
                    "request": {"resource": res, "operation": op, "facts": facts or {}},
                    "presentations": presentations, "expect": expect})

    plain = _tok(1)
    add("plain single-use", plain, "ok")
    add("replayed", plain, "replayed", presentations=2, note="the second presentation fails")
    add("multi-use", _tok(2, uses=3), "ok", presentations=3)
    add("rest bitmask", _tok(3, scope=[(RES, 1 | 4)]), "ok", op="PUT")
    add("prefix pattern", _tok(4, scope=[("/sensors/*", ["read", "write"])]), "ok", op="write")
    add("audience", _tok(5, aud="ingest"), "ok", audience="ingest")
    add("wrong audience", _tok(6, aud="ingest"), "scope_denied", audience="storage")
    add("wrong resource", _tok(7), "scope_denied", res="/sensors/temp02")
    add("wrong operation", _tok(8), "scope_denied", op="write")
    add("expired", _tok(9, ttl=10), "expired", now=NOW + 40)
    add("within leeway", _tok(10, ttl=10), "ok", now=NOW + 39)
    add("not yet valid", _tok(11, now=NOW + 100), "not_yet_valid")
    add("caveats hold", _tok(12, caveats=[caveat("ge", "battery", 20), caveat("lt", "time", NOW + 30)]), "ok",
        facts={"battery": 50})
    add("caveat fails", _tok(13, caveats=[caveat("ge", "battery", 20)]), "caveat_failed", facts={"battery": 5})
    add("caveat fact missing", _tok(14, caveats=[caveat("ge", "battery", 20)]), "caveat_failed")

    c = _claims(15)
    c[-65537] = {4: [[99, 0, RES]]}
    add("unknown predicate", _resign(cbor.dumps(c)), "unknown_caveat")
    c = _claims(16)
    c[8] = {1: b"k"}
    add("unknown claim", _resign(cbor.dumps(c)), "unknown_caveat")
    # A proof-of-possession token (§4.4), its key encrypted to "ingest" (ephemeral key and nonce
    # fixed so the bytes are reproducible): a verifier that is not given ingest's key cannot read
    # cnf and cannot check a proof, so the token is refused whatever the request.
    from crumb.pop import CnfSealer, x25519_public
    cnf = CnfSealer(x25519_public(KEYS["ingest"].public), bytes([9]) * 32).cnf(bytes(range(16)), bytes(13))
    add("PoP token at a verifier without the key of its first hop", _tok(23, cnf=cnf), "pop_failed",
        note="cnf is a COSE_Encrypt (ECDH-ES + HKDF-256 to ingest's X25519 key, AES-CCM-16-64-128) of the "
             "PoP key 000102..0f; without ingest's key no proof can be checked")

    good = cbor.dumps(_claims(17))
    add("duplicate key in signed payload", _resign(bytes([good[0] + 1]) + good[1:] + b"\x02\x64evil"), "malformed")
    add("non-preferred int in signed payload", _resign(good.replace(b"\x04\x1a", b"\x04\x1b\x00\x00\x00\x00", 1)),
        "malformed")
    add("wrong algorithm", _resign(good, cbor.dumps({1: -7, 4: KEYS["issuer"].kid})), "bad_signature")

    t = _tok(18)
    add("flipped signature bit", t[:-1] + bytes([t[-1] ^ 1]), "bad_signature")
    add("flipped payload bit", t[:40] + bytes([t[40] ^ 4]) + t[41:], "bad_signature")
    add("truncated", t[:-1], "malformed")
    add("trailing byte", t + b"\x00", "malformed")
    add("version 3", t[:1] + b"\x03" + t[2:], "unsupported_version")
    add("version 1 (the scope claim a bare array)", t[:1] + b"\x01" + t[2:], "unsupported_version")
    add("non-preferred version", t[:1] + b"\x18\x02" + t[2:], "malformed")
    add("oversize", b"\x82\x02" + bytes(4096), "too_large")
    c = _claims(43)
    c[9] = [[RES, OP]]
    add("scope claim not a byte string", _resign(cbor.dumps(c)), "malformed")
    c = _claims(44)
    c[9] = cbor.dumps([[RES, OP]]) + b"\x00"
    add("trailing byte in the scope claim", _resign(cbor.dumps(c)), "malformed")
    add("unknown issuer", mint(KEYS["stranger"], sub="dev-0001", scope=[(RES, OP)], now=NOW, cti=_cti(19)),
        "unknown_key")

    for refs, base in (("key", 20), ("kid", 30)):
        t0 = _tok(base, chain=chain, hop_refs=refs)
        t1 = attest(t0, KEYS["gateway"], "gateway")
        t2 = attest(t1, KEYS["ingest"], "ingest")
        t3 = attest(t2, KEYS["storage"], "storage")
        add(f"chain ({refs}) at gateway", t0, "ok", hop="gateway")
        add(f"chain ({refs}) at ingest", t1, "ok", hop="ingest")
        add(f"chain ({refs}) at destination", t3, "ok")
        add(f"chain ({refs}) skipped hop", t1, "chain_incomplete", hop="storage")
        add(f"chain ({refs}) back to earlier hop", t2, "chain_invalid", hop="gateway")
        add(f"chain ({refs}) outside the chain", t1, "chain_invalid", hop="billing")
        tok = split(t3)
        tok.blocks[0], tok.blocks[1] = tok.blocks[1], tok.blocks[0]
        add(f"chain ({refs}) reordered", tok.to_bytes(), "chain_invalid")
        tok = split(t3)
        del tok.blocks[1]
        add(f"chain ({refs}) block removed", tok.to_bytes(), "chain_invalid")

    fleet = _tok(40, scope=[("/fleet/*", "read")], attenuators=[("fleet-gw", KEYS["fleet-gw"].public)])
    narrowed = attenuate(fleet, KEYS["fleet-gw"], [caveat("eq", "resource", "/fleet/s1")])
    add("named attenuation", narrowed, "ok", res="/fleet/s1")
    add("named attenuation narrows", narrowed, "caveat_failed", res="/fleet/s2")
    add("required attenuation missing", fleet, "chain_incomplete", res="/fleet/s2")

    opened = _tok(41, scope=[("/data/*", ["read", "write"])], open=KEYS["ephemeral-0"])
    one = attenuate_open(opened, [caveat("eq", "operation", "read")], next_key=KEYS["ephemeral-1"])
    add("open token", opened, "ok", res="/data/x", op="write")
    add("open attenuation", one, "ok", res="/data/x", op="read")
    add("open attenuation narrows", one, "caveat_failed", res="/data/x", op="write")
    stripped = split(one)
    stripped.blocks.clear()
    add("open attenuation stripped", stripped.to_bytes(), "bad_signature", res="/data/x", op="write")
    sealed = seal(one)
    add("sealed", sealed, "ok", res="/data/x", op="read")
    return out


# shared/vectors/cbor.json: the strict decoder's verdict on single CBOR items, written out by hand from
# RFC 8949 and PROTOCOL.md §2 (not computed by either decoder), so that both decoders are held to it.
# Each entry: (name, hex, ok, limits or None); ok means "decodes, and re-encodes to the same bytes".
CBOR_VECTORS: list[tuple[str, str, bool, dict | None]] = [
    ("false, true, null", "83 f4 f5 f6", True, None),
    ("uint and nint extremes", "82 1bffffffffffffffff 3bffffffffffffffff", True, None),
    ("int and text keys, bytewise order", "a3 01 00 20 00 6161 00", True, None),
    ("empty strings and containers", "84 40 60 80 a0", True, None),
    ("4-byte uint map value (a verifier fast path)", "a1 00 1a00010000", True, None),
    # RFC 8949 §3.3: 0xf8 followed by a byte below 0x20 is not well-formed; crumb
    # uses no simple value beyond false/true/null (§2), which have one-byte forms.
    ("two-byte simple value 20 (false)", "f8 14", False, None),
    ("two-byte simple value 21 (true)", "f8 15", False, None),
    ("two-byte simple value 22 (null)", "f8 16", False, None),
    ("two-byte simple value 21 inside a map", "a1 01 f8 15", False, None),
    ("two-byte simple value 23 (undefined)", "f8 17", False, None),
    ("two-byte simple value 0", "f8 00", False, None),
    ("two-byte simple value 32 (well-formed, unassigned)", "f8 20", False, None),
    ("simple value 255", "f8 ff", False, None),
    ("undefined", "f7", False, None),
    ("simple value 0", "e0", False, None),
    ("half float", "f9 3c00", False, None),
    ("single float", "fa 47c35000", False, None),
    ("double float", "fb 3ff199999999999a", False, None),
    # PROTOCOL.md §2: map keys are integers or text only.
    ("byte-string map key", "a1 40 00", False, None),
    ("byte-string map key after an int key", "a2 01 00 41 61 00", False, None),
    ("array map key", "a1 80 00", False, None),
    ("map map key", "a1 a0 00", False, None),
    ("false map key", "a1 f4 00", False, None),
    ("null map key", "a1 f6 00", False, None),
    ("duplicate int key", "a2 01 00 01 00", False, None),
    ("duplicate text key", "a2 6161 00 6161 00", False, None),
    ("keys out of bytewise order", "a2 02 00 01 00", False, None),
    ("length-first order is not bytewise order", "a2 20 00 1818 00", False, None),
    ("non-preferred uint in 1 byte", "18 17", False, None),
    ("non-preferred uint in 2 bytes", "19 00ff", False, None),
    ("non-preferred uint in 4 bytes", "1a 0000ffff", False, None),
    ("non-preferred uint in 8 bytes", "1b 00000000ffffffff", False, None),
    ("non-preferred 4-byte uint as a map value", "a1 00 1a0000ffff", False, None),
    ("non-preferred nint", "38 17", False, None),
    ("non-preferred string length", "58 01 00", False, None),
    ("non-preferred array length", "98 00", False, None),
    ("non-preferred map length", "b8 00", False, None),
    ("indefinite byte string", "5f 41 00 ff", False, None),
    ("indefinite array", "9f ff", False, None),
    ("indefinite map", "bf ff", False, None),
    ("break on its own", "ff", False, None),
    ("reserved additional information", "1c", False, None),
    ("tag", "c0 60", False, None),
    ("tag 24 (embedded CBOR)", "d8 18 41 00", False, None),
    ("truncated array", "82 01", False, None),
    ("truncated string", "42 01", False, None),
    ("truncated head", "1a 0001", False, None),
    ("truncated 4-byte uint as a map value", "a1 00 1a 0001", False, None),
    ("empty input", "", False, None),
    ("trailing byte", "00 00", False, None),
    ("lone continuation byte in text", "61 80", False, None),
    ("overlong UTF-8", "62 c0 80", False, None),
    ("UTF-16 surrogate in UTF-8", "63 eda080", False, None),
    ("code point above U+10FFFF", "64 f4908080", False, None),
    ("invalid UTF-8 in an array (a verifier fast path)", "81 61 ff", False, None),
    ("invalid UTF-8 as a map value (a verifier fast path)", "a1 00 61 ff", False, None),
    ("largest code point", "64 f48fbfbf", True, None),
    ("nesting at the depth limit", "81 81 80", True, {"max_depth": 3, "max_string": 255}),
    ("nesting past the depth limit", "81 81 81 80", False, {"max_depth": 3, "max_string": 255}),
    ("string at the length limit", "43 010203", True, {"max_depth": 6, "max_string": 3}),
    ("string past the length limit", "44 01020304", False, {"max_depth": 6, "max_string": 3}),
    ("text past the length limit", "64 61626364", False, {"max_depth": 6, "max_string": 3}),
]


def cbor_vectors() -> list[dict]:
    return [{"name": name, "cbor": hexstr.replace(" ", ""), "ok": ok, "limits": limits}
            for name, hexstr, ok, limits in CBOR_VECTORS]


# shared/wire.json: every constant of crumb.wire, grouped by the module's "# [section] about" comments.
_SECTION = re.compile(r"# \[([a-z_]+)\] (.+)")
WIRE_ABOUT = ("crumb's wire constants: every number, name and size crumb puts on the wire. Generated from "
              "host/crumb/wire.py (the one source; the device keeps literal copies, tested against this file) by "
              "tools/gen_vectors.py: do not edit. sections: {name: {about, constants}}, as wire.py groups them; "
              "constant names are wire.py's and unique across sections; § is a section of PROTOCOL.md. Values: "
              "byte strings as their ASCII text, tuples as arrays, map keys as text, a refusal code as "
              "{status: HTTP status, ace_error: ACE error number, meaning}.")


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: its fields by name
        return {k: _jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def wire_constants() -> dict:
    """crumb.wire's constants by name: its upper-case names, as JSON values."""
    return {k: _jsonable(v) for k, v in vars(wire).items() if k.isupper() and not k.startswith("_")
            and isinstance(v, (int, str, bytes, tuple, dict))}


def wire_sections() -> dict:
    """{section: {"about", "constants"}}: each constant under the last ``# [section]`` comment above it."""
    source = Path(wire.__file__).read_text(encoding="utf-8")
    headers = [(n, m[1], m[2]) for n, line in enumerate(source.splitlines(), 1) if (m := _SECTION.fullmatch(line))]
    if len({name for _, name, _ in headers}) != len(headers):
        raise SystemExit("host/crumb/wire.py: a section name is used twice")
    constants = wire_constants()
    sections: dict = {name: {"about": about, "constants": {}} for _, name, about in headers}
    placed: set[str] = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for name in [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and n.id in constants]:
            above = [h for h in headers if h[0] < node.lineno]
            if not above:
                raise SystemExit(f"host/crumb/wire.py:{node.lineno}: {name} is in no section ('# [name] about' line)")
            if name in placed:
                raise SystemExit(f"host/crumb/wire.py:{node.lineno}: {name} is assigned twice")
            placed.add(name)
            sections[above[-1][1]]["constants"][name] = constants[name]
    if set(constants) - placed:
        raise SystemExit(f"host/crumb/wire.py: not assigned at module level: {', '.join(set(constants) - placed)}")
    if empty := [name for name, section in sections.items() if not section["constants"]]:
        raise SystemExit(f"host/crumb/wire.py: sections without constants: {', '.join(empty)}")
    return sections


def render() -> dict[Path, str]:
    keys = {name: {"seed": k.seed.hex(), "public": k.public.raw.hex(), "kid": k.kid.hex()} for name, k in KEYS.items()}
    doc = {
        "format": 1,
        "about": "crumb token vectors: verify each token with the issuer key as the only trusted issuer, "
                 "the gateway/ingest/storage/fleet-gw keys as node keys, the verifier settings and request "
                 "given; present it `presentations` times to one verifier; the last result must be `expect` "
                 "('ok' or an error code). `cbor_ok`: every CBOR level (token, protected headers, payloads) "
                 "is well-formed deterministic CBOR. Generated by tools/gen_vectors.py.",
        "issuer": "issuer",
        "node_keys": HOPS + ["fleet-gw"],
        "keys": keys,
        "vectors": vectors(),
    }
    constants = {"about": WIRE_ABOUT, "sections": wire_sections()}
    cbor_doc = {
        "format": 1,
        "about": "crumb's strict CBOR decoding (PROTOCOL.md §2) on single items: `cbor` (hex) must decode "
                 "(and re-encode to the same bytes) if `ok`, else be refused as malformed, by the host and the "
                 "device decoder alike. `limits`: the nesting depth and string length bounds to decode with "
                 "(null: depth 16, strings 4096 bytes). Generated by tools/gen_vectors.py from its hand-written "
                 "table; every finding of the host/device differential test is one of them.",
        "vectors": cbor_vectors(),
    }
    return {
        ROOT / "shared" / "vectors" / "tokens.json": json.dumps(doc, indent=1) + "\n",
        ROOT / "shared" / "vectors" / "cbor.json": json.dumps(cbor_doc, indent=1) + "\n",
        ROOT / "shared" / "wire.json": json.dumps(constants, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run tools/gen_vectors.py):", *(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
