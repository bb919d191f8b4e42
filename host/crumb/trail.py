"""`crumb audit trace`: one request followed from its issuance through every hop's log.

Logs are named as `--log` names them: an issuer data directory (every chain
in it), an SQLite log file (the issuer's audit.db or a service's log), or a
PostgreSQL DSN (the database's crumb.log). Every log is verified whole, the
way `crumb audit verify` does it, before any of its records is believed.

Then, for the token id (cti) asked about:

- the issuer's record of the issuance (event "issued", the cti in "tokens");
- every service record with that cti, ordered by how many hops had attested
  the token the service received (then by time);
- each accepted service record carries the token as the service received it,
  so the issuer's signature and every attestation in it are checked here,
  offline, with the issuer's public key (and the hops' keys, for tokens that
  name hops by kid), as the record's time: hop k's attestation is proven by
  the token hop k+1 recorded;
- each declared hop of the token's chain must have a record; a hop that did
  not record it is named as the missing link.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import auditchain
from .auditchain import Record, Verdict
from .errors import CrumbError
from .keys import PublicKey, kid_of
from .replay import MemoryReplayStore
from .services.servicelog import token_facts
from .token import Token, authority_kid, claims_of, split, to_bytes
from .verify import Verifier


def is_dsn(source: str) -> bool:
    """A PostgreSQL connection string (URI or libpq key=value), not a path."""
    return source.startswith(("postgresql://", "postgres://")) or ("=" in source and not Path(source).exists())


@dataclass
class Log:
    """One chain read from one source: its verdict and its records (all of them, verified or not)."""

    source: str       # as given on the command line
    name: str         # what the output calls it: a file name, or crumb.log@DATABASE
    verdict: Verdict
    records: list[Record] = field(default_factory=list)
    error: str | None = None


def _sqlite_chain(source: str, path: Path) -> Log:
    from .issuer import audit  # segments, anchors: the issuer's reader covers a one-file log too

    try:
        verdict = audit.verify(path)
        records = list(audit.records(path))
    except (OSError, sqlite3.Error) as e:
        return Log(source, path.name, Verdict(False, 0, auditchain.GENESIS, None, f"cannot read the chain: {e}"),
                   error=str(e))
    return Log(source, path.name, verdict, records)


def read_pg(dsn: str) -> tuple[str, list[Record]]:
    """(crumb.log@DATABASE, every row of crumb.log in seq order)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq, body, prev, hash FROM crumb.log ORDER BY seq").fetchall()
        name = f"crumb.log@{conn.info.dbname}"
    return name, [Record(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]


def open_logs(source: str) -> list[Log]:
    """Every chain a --log names, each verified whole."""
    if is_dsn(source):
        try:
            name, records = read_pg(source)
        except Exception as e:  # noqa: BLE001 -- unreachable, no crumb.log, no permission: a failed log
            why = f"cannot read crumb.log: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            return [Log(source, "crumb.log", Verdict(False, 0, auditchain.GENESIS, None, why), error=why)]
        return [Log(source, name, auditchain.verify_rows(records), records)]
    path = Path(source)
    if path.is_dir():
        from .issuer.datadir import audit_chains

        chains = audit_chains(path)
        if not chains:
            why = f"no audit log in {path}"
            return [Log(source, path.name, Verdict(False, 0, auditchain.GENESIS, None, why), error=why)]
        return [_sqlite_chain(source, p) for p in chains]
    if not path.exists():
        why = f"no log at {path}"
        return [Log(source, path.name, Verdict(False, 0, auditchain.GENESIS, None, why), error=why)]
    return [_sqlite_chain(source, path)]


def verify_sources(sources: Iterable[str]) -> list[dict]:
    """`crumb audit verify --log/--dsn`: one result per chain, as the issuer's verify reports them."""
    out = []
    for source in sources:
        for log in open_logs(source):
            v = log.verdict
            out.append({"file": log.name, "source": source, "ok": v.ok, "records": v.count, "rows": v.rows,
                        "segments": v.segments, "first": v.first, "head": v.head.hex(),
                        "broken_at": v.broken_at, "reason": v.reason})
    return out


# -- the trace ----------------------------------------------------------------------------


def _data(rec: Record) -> dict | None:
    try:
        d = json.loads(rec.body)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def _stamp(t_ms: object) -> str:
    t = int(t_ms) if isinstance(t_ms, int) else 0
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"


def _parsed(token_text: object) -> Token | None:
    """The recorded token, parsed but not trusted (None if there is none or it does not parse)."""
    if not isinstance(token_text, str):
        return None
    try:
        tok = split(to_bytes(token_text))
        claims_of(tok)
    except Exception:  # noqa: BLE001 -- an unreadable token is reported where it is checked
        return None
    return tok


def _check_token(token_text: str, t_ms: int, keys: list[PublicKey], node_keys: list[PublicKey]) -> tuple[Any, str | None]:
    """(Verified, None) if the recorded token held, at the record's time, for the hop it reached; else (None, why).

    The hop it reached is the one after those that attested it: the check
    proves the issuer's signature and each attestation (each by its declared
    key, over the block before it, in the declared order).
    """
    try:
        token = to_bytes(token_text)
        claims = claims_of(split(token))
        when = t_ms / 1000
        verifier = Verifier(keys, node_keys=node_keys, clock=lambda: when, replay=MemoryReplayStore(fence=False))
        n = len(token_facts(token)[1])  # attestations it carries: it reached the hop after them
        return verifier.check_token(token, hop=claims.chain[n].name if n < len(claims.chain) else None), None
    except CrumbError as e:
        return None, f"{e.code}: {e.message}"
    except Exception as e:  # noqa: BLE001 -- a record's token that is not one: the check fails, trace goes on
        return None, f"malformed: {type(e).__name__}"


def trace(cti_hex: str, sources: list[str], keys: list[PublicKey], node_keys: Sequence[PublicKey] = ()) -> dict:
    """The trace as JSON-able data; ``ok`` when every log verifies, every step checks out, no link is missing."""
    cti_hex = cti_hex.lower()
    logs = [log for source in sources for log in open_logs(source)]
    problems: list[str] = []
    for log in logs:
        if not log.verdict.ok and log.verdict.broken_at is None:
            problems.append(f"{log.name}: unreadable: {log.verdict.reason}")
        elif not log.verdict.ok:
            problems.append(f"{log.name}: chain broken at record {log.verdict.broken_at}: {log.verdict.reason}")
    issued: list[dict] = []
    seen: list[dict] = []
    for log in logs:
        for rec in log.records:
            d = _data(rec)
            if d is None:
                continue
            verified_row = log.verdict.ok or (log.verdict.broken_at is not None and rec.seq < log.verdict.broken_at)
            base = {"log": log.name, "seq": rec.seq, "t": d.get("t"), "time": _stamp(d.get("t")),
                    "chain_ok": verified_row}
            if d.get("event") == "issued" and cti_hex in (d.get("tokens") or []):
                issued.append({**base, "who": "issuer", "decision": "issued", "device": d.get("device"),
                               "kid": d.get("kid"), "scope": d.get("scope")})
            elif d.get("cti") == cti_hex and d.get("service"):
                seen.append({**base, "who": d["service"], "decision": d.get("event"), "code": d.get("code"),
                             "kid": d.get("kid"), "resource": d.get("resource"), "operation": d.get("operation"),
                             "hops": d.get("hops") or [], "token": d.get("token")})
    seen.sort(key=lambda s: (len(s["hops"]), s["t"] if isinstance(s["t"], int) else 0))

    chain: list[str] = []
    declared_kids: dict[str, str] = {}  # hop name -> kid (hex) of the key the token declares for it
    sub = None
    authority = None
    for step in seen:  # the declared chain and the subject, read from the first readable recorded token
        tok = _parsed(step["token"])
        if tok is not None:
            claims = claims_of(tok)
            chain, sub, authority = [p.name for p in claims.chain], claims.sub, authority_kid(tok.authority.protected)
            declared_kids = {p.name: (kid_of(p.keyref) if len(p.keyref) == 32 else p.keyref).hex() for p in claims.chain}
            break

    # Each accepted record's token, checked offline at the record's time.
    for step in seen:
        if step["decision"] != "accepted":
            step["check"] = "not checked (refused here)"
            continue
        if not step["token"]:
            step["check"] = "FAILED: the record carries no token"
            problems.append(f"{step['who']} ({step['log']} #{step['seq']}): the record carries no token to check")
            continue
        verified, why = _check_token(step["token"], step["t"] if isinstance(step["t"], int) else 0, keys,
                                     list(node_keys))
        if verified is None:
            step["check"] = f"FAILED: {why}"
            problems.append(f"{step['who']} ({step['log']} #{step['seq']}): the token it recorded does not verify "
                            f"({why})")
            continue
        if verified.claims.cti.hex() != cti_hex:
            step["check"] = "FAILED: the recorded token has another cti"
            problems.append(f"{step['who']} ({step['log']} #{step['seq']}): the recorded token is not {cti_hex}")
            continue
        if list(verified.attested) != list(step["hops"]):
            step["check"] = f"FAILED: the record says hops {step['hops']}, the token {verified.attested}"
            problems.append(f"{step['who']} ({step['log']} #{step['seq']}): its hops differ from its token's")
            continue
        step["check"] = "ok: issuer signature" + (f" and attestations by {', '.join(verified.attested)} verified"
                                                   if verified.attested else " verified")
        step["attested_by"] = list(verified.attested)

    # Attestations, hop by hop: hop i's is proven by a verified record of a later hop.
    # The last record of the trail has no later hop to prove its attestation (it may be the
    # destination, which does not attest): it gets none, neither proven nor missing.
    proven = {h for s in seen if s.get("attested_by") for h in s["attested_by"]}
    furthest = max((len(s["hops"]) for s in seen), default=0)
    for step in seen:
        position = len(step["hops"])
        if position < len(chain) and step["decision"] == "accepted":
            hop = chain[position]
            step["hop"] = hop
            # A hop that records its node key's kid must be the hop whose key the token declares.
            if step.get("kid") and declared_kids.get(hop) not in (None, step["kid"]):
                problems.append(f"{step['who']} ({step['log']} #{step['seq']}) records node key {step['kid']}, but the "
                                f"token declares {declared_kids[hop]} for hop {hop}")
            if hop in proven:
                step["attestation"] = "verified in the next hop's record"
            elif position < furthest:
                step["attestation"] = "not seen (no later hop recorded a token it attested)"

    # Missing links: the issuance, then one accepted record per declared hop.
    missing: list[str] = []
    if not issued:
        missing.append("issuer: no log given records the issuance of this cti (pass the issuer's data directory)")
    elif authority is not None and issued[0].get("kid") not in (None, authority.hex()):
        problems.append(f"the issuer recorded signing kid {issued[0].get('kid')}, the token is signed by "
                        f"{authority.hex()}")
    if not seen:
        missing.append("services: no service log given records this cti")
    for i, hop in enumerate(chain):
        if not any(s["decision"] == "accepted" and len(s["hops"]) == i for s in seen):
            later = " (a later hop's record shows it attested)" if hop in proven else ""
            missing.append(f"hop {i + 1} ({hop}): no log given records accepting the token{later}")
    problems += [f"missing link: {m}" for m in missing]
    return {"cti": cti_hex, "ok": not problems, "sub": sub, "chain": chain,
            "logs": [{"log": log.name, "source": log.source, "ok": log.verdict.ok, "records": log.verdict.count,
                      "rows": log.verdict.rows, "head": log.verdict.head.hex(), "broken_at": log.verdict.broken_at,
                      "reason": log.verdict.reason} for log in logs],
            "steps": [{k: v for k, v in s.items() if k != "token"} for s in issued + seen],
            "missing": missing, "problems": problems}


def render(result: dict) -> str:
    """The trace as text, one line per step."""
    lines = [f"trace of cti {result['cti']}" + (f" (sub {result['sub']}" if result["sub"] else " (")
             + (f", chain {' -> '.join(result['chain'])})" if result["chain"] else ")")]
    for log in result["logs"]:
        n = log["records"]
        state = f"ok, {n} record{'s' if n != 1 else ''}, chain intact" if log["ok"] else \
            f"UNREADABLE: {log['reason']}" if log["broken_at"] is None else \
            f"BROKEN at record {log['broken_at']}: {log['reason']}"
        lines.append(f"  log {log['log']}: {state}")
    for i, s in enumerate(result["steps"], 1):
        what = s["decision"].upper() if s["decision"] not in ("issued", "accepted") else s["decision"]
        head = f"{i}. {s['who']:<10} {what:<9} {s['time']}  {s['log']} #{s['seq']}"
        if s["who"] == "issuer":
            detail = f"device {s.get('device')}, signing kid {s.get('kid')}"
        else:
            detail = f"{s.get('operation')} {s.get('resource')}"
            if s.get("code"):
                detail += f" ({s['code']})"
            detail += f"; after {', '.join(s['hops']) or 'no hop'}; token {s.get('check')}"
            if s.get("attestation"):
                detail += f"; its attestation as {s['hop']}: {s['attestation']}"
        lines.append(f"  {head}  {detail}")
    for m in result["missing"]:
        lines.append(f"  MISSING {m}")
    others = [p for p in result["problems"] if not p.startswith("missing link:")]
    for p in others:
        lines.append(f"  PROBLEM {p}")
    lines.append("result: ok: every chain intact, every step verified, no link missing" if result["ok"]
                 else f"result: FAILED ({len(result['problems'])} problem{'s' if len(result['problems']) != 1 else ''})")
    return "\n".join(lines)
