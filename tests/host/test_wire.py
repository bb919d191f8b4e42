"""One source for every wire constant: host/crumb/wire.py, exported to shared/wire.json.

shared/wire.json is exactly what tools/gen_vectors.py writes from wire.py
now; no other host module defines a constant of its own under a wire name;
the issuer's tables (codes, protocol, app) are wire.py's objects, not copies.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

from crumb import cbor, errors, wire
from crumb.issuer import app, codes, protocol

ROOT = Path(__file__).resolve().parents[2]
WIRE_JSON = ROOT / "shared" / "wire.json"


def _gen_vectors():
    spec = importlib.util.spec_from_file_location("gen_vectors", ROOT / "tools" / "gen_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(doc: dict) -> dict:
    return {name: value for section in doc["sections"].values() for name, value in section["constants"].items()}


def test_wire_json_is_what_gen_vectors_writes_now():
    assert WIRE_JSON.read_text(encoding="utf-8") == _gen_vectors().render()[WIRE_JSON], "run `make vectors`"


def test_every_constant_is_in_exactly_one_section():
    gen = _gen_vectors()
    doc = json.loads(WIRE_JSON.read_text(encoding="utf-8"))
    names = [name for section in doc["sections"].values() for name in section["constants"]]
    assert len(names) == len(set(names))
    assert set(names) == set(gen.wire_constants())
    assert _flat(doc) == gen.wire_constants()
    for name, section in doc["sections"].items():
        assert section["about"] and section["constants"], name


def test_no_other_host_module_defines_a_wire_name():
    """Importing a wire constant (or re-exporting it) is fine; assigning one is a second definition."""
    names = set(_gen_vectors().wire_constants())
    again = []
    for path in sorted((ROOT / "host" / "crumb").rglob("*.py")):
        if path == ROOT / "host" / "crumb" / "wire.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                again += [f"{path.relative_to(ROOT)}:{node.lineno} {n.id}" for n in ast.walk(target)
                          if isinstance(n, ast.Name) and n.id in names]
    assert not again


def test_issuer_tables_are_the_wire_tables():
    assert codes.CODES is wire.REFUSALS
    assert codes.ISSUER_ONLY_CODES == ("unsupported_grant_type", "unsupported_media_type", "bad_mac", "stale_time",
                                       "unknown_device", "rate_limited", "internal_error")
    assert set(wire.REFUSALS) - set(codes.ISSUER_ONLY_CODES) <= set(wire.ERROR_CODES)
    assert all(r.ace_error in wire.ACE_NAMES and 400 <= r.status < 600 for r in wire.REFUSALS.values())
    # The names other code imports from the issuer's modules are wire.py's objects.
    for name in ("REQ_SCOPE", "REQ_CLIENT_ID", "REQ_CRUMB", "RESP_TIME", "ERR_CODE", "CBOR_TYPES", "JSON_TYPE",
                 "MAC_BYTES", "NONCE_MIN", "NONCE_MAX", "MAX_BATCH", "MAX_COUNT", "DEVICE_KEY_LABEL"):
        assert getattr(protocol, name) is getattr(wire, name), name
    assert app.COSE_KEY_SET_TYPE is wire.COSE_KEY_SET_TYPE


def test_token_error_classes_are_the_wire_codes():
    # errors.BY_CODE is the one table of codes: the token verdicts first, in wire order, then the services' own.
    assert tuple(errors.BY_CODE)[:len(wire.ERROR_CODES)] == wire.ERROR_CODES
    assert tuple(errors.BY_CODE)[len(wire.ERROR_CODES):] == ("invalid_key", "keys_unavailable", "internal_error",
                                                             "missing_token")
    assert all(cls.code == code for code, cls in errors.BY_CODE.items())


def test_request_key_encodings_the_parsers_rely_on():
    """The request's keys in deterministic order: crumb's block (a private-use key, below -65536) sorts
    after every registered one, so it ends the request and the MAC, its last bytes, ends the request
    too: the device MACs as it writes (PROTOCOL.md §11.1-11.2)."""
    keys = [wire.REQ_AUDIENCE, wire.REQ_SCOPE, wire.REQ_CLIENT_ID, wire.REQ_GRANT_TYPE, wire.REQ_ACE_PROFILE,
            wire.REQ_CRUMB]
    encoded = [cbor.dumps(k) for k in keys]
    assert encoded == sorted(encoded) and max(encoded) == cbor.dumps(wire.REQ_CRUMB)
    assert [len(e) for e in encoded] == [1, 1, 2, 2, 2, 5]
    assert wire.REQ_CRUMB < -65536  # the private-use range of the OAuth Parameters CBOR Mappings registry
    assert protocol._KEY_AT == dict(zip(encoded, keys))


def test_crumb_response_keys_are_private_use():
    for key in (wire.RESP_TIME, wire.RESP_TOKENS, wire.RESP_USES, wire.ERR_CODE, wire.ERR_RETRY_AFTER):
        assert key < -65536, key
    # registered ACE parameters (RFC 9200 §8.10) where one fits
    assert (wire.REQ_AUDIENCE, wire.REQ_SCOPE, wire.REQ_CLIENT_ID, wire.REQ_GRANT_TYPE, wire.REQ_ACE_PROFILE,
            wire.RESP_ACCESS_TOKEN, wire.RESP_EXPIRES_IN, wire.RESP_TOKEN_TYPE, wire.ERR_ERROR,
            wire.ERR_DESCRIPTION) == (5, 9, 24, 33, 38, 1, 2, 34, 30, 31)
