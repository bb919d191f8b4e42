"""Decode a token for humans, trusting nothing and verifying nothing."""

from __future__ import annotations

from typing import Any

import cbor2

from . import caveats as cav
from . import cbor
from .claims import Claims
from .errors import CrumbError
from .keys import b64u
from .token import authority_kid, block_body, split, to_bytes
from .wire import BLOCK_ATTENUATE, BLOCK_ATTEST, BLOCK_OPEN, MAX_TOKEN_BYTES

_KINDS = {BLOCK_ATTEST: "attestation", BLOCK_ATTENUATE: "attenuation", BLOCK_OPEN: "open-attenuation"}


def _lenient(data: bytes) -> Any:
    """Best-effort view of bytes the strict decoder refused."""
    try:
        return _jsonable(cbor2.loads(data))
    except Exception as e:  # noqa: BLE001 -- any garbage: we only describe it
        return f"<undecodable: {type(e).__name__}>"


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return "h'" + v.hex() + "'"
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (int, str, bool)) or v is None:
        return v
    return repr(v)


def inspect(token: bytes | str) -> dict:
    """Everything in the token, readable. Problems are listed, never raised."""
    report: dict[str, Any] = {"problems": []}
    problems = report["problems"]
    try:
        data = to_bytes(token)
    except CrumbError as e:
        problems.append(str(e))
        return report
    report["bytes"] = len(data)
    try:
        tok = split(data, max_bytes=max(len(data), MAX_TOKEN_BYTES))
    except CrumbError as e:
        problems.append(str(e))
        report["raw"] = _lenient(data)
        return report
    report["version"] = tok.version
    auth = tok.authority
    a: dict[str, Any] = {"bytes": len(cbor.dumps(auth.to_cbor())), "signature": b64u(auth.signature)}
    try:
        a["kid"] = authority_kid(auth.protected).hex()
        a["alg"] = "EdDSA"
    except CrumbError as e:
        problems.append(f"authority header: {e}")
        a["protected"] = _lenient(auth.protected)
    claims = None
    try:
        claims = Claims.decode(auth.payload)
        a["claims"] = claims.to_json()
    except CrumbError as e:
        problems.append(f"authority claims: {e}")
        a["claims"] = _lenient(auth.payload)
    report["authority"] = a
    blocks = []
    for n, block in enumerate(tok.blocks, 1):
        b: dict[str, Any] = {"n": n, "bytes": len(cbor.dumps(block.to_cbor())), "signature": b64u(block.signature)}
        try:
            body = block_body(block)
            b["kind"] = _KINDS.get(body[0], f"unknown ({body[0]})")
            if body[0] == BLOCK_ATTEST and len(body) == 2:
                b["hop_index"] = body[1]
                if claims and isinstance(body[1], int) and 0 <= body[1] < len(claims.chain):
                    b["hop"] = claims.chain[body[1]].name
            elif body[0] == BLOCK_ATTENUATE and len(body) == 3:
                b["attenuator_index"] = body[1]
                if claims and isinstance(body[1], int) and 0 <= body[1] < len(claims.attenuators):
                    b["attenuator"] = claims.attenuators[body[1]].name
                b["caveats"] = [cav.describe(c) if isinstance(c, list) and len(c) == 3 else _jsonable(c)
                                for c in body[2]] if isinstance(body[2], list) else _jsonable(body[2])
            elif body[0] == BLOCK_OPEN and len(body) == 3:
                b["caveats"] = [cav.describe(c) if isinstance(c, list) and len(c) == 3 else _jsonable(c)
                                for c in body[1]] if isinstance(body[1], list) else _jsonable(body[1])
                b["next_key"] = _jsonable(body[2])
            else:
                b["body"] = _jsonable(body)
        except CrumbError as e:
            problems.append(f"block {n}: {e}")
            b["body"] = _lenient(block.payload)
        blocks.append(b)
    report["blocks"] = blocks
    if tok.proof is not None:
        report["proof"] = "open (ephemeral secret)" if len(tok.proof) == 32 else "sealed"
    return report


def render(report: dict) -> str:
    """A plain-text view of inspect()'s report."""
    lines = []
    if "bytes" in report:
        lines.append(f"token: {report['bytes']} bytes, format version {report.get('version', '?')}")
    a = report.get("authority")
    if a:
        lines.append(f"authority block ({a['bytes']} B): alg {a.get('alg', '?')}, kid {a.get('kid', '?')}")
        claims = a.get("claims")
        if isinstance(claims, dict):
            for k, v in claims.items():
                lines.append(f"  {k}: {v}")
        else:
            lines.append(f"  claims: {claims}")
        lines.append(f"  signature: {a['signature']}")
    for b in report.get("blocks", []):
        detail = ", ".join(f"{k}={v}" for k, v in b.items() if k not in ("n", "bytes", "signature", "kind"))
        lines.append(f"block {b['n']} ({b['bytes']} B): {b.get('kind', '?')} {detail}".rstrip())
        lines.append(f"  signature: {b['signature']}")
    if "proof" in report:
        lines.append(f"proof: {report['proof']}")
    if "raw" in report:
        lines.append(f"raw (lenient decode): {report['raw']}")
    for p in report["problems"]:
        lines.append(f"problem: {p}")
    lines.append("(inspect verifies nothing: use `crumb verify`)")
    return "\n".join(lines)
