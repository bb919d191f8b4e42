"""The device's wire constants are shared/wire.json's (CPython, reading the device source).

MicroPython inlines ``const()`` and the device cannot import host code, so
device/ucrumb keeps literal copies of host/crumb/wire.py's constants. This
reads every ``NAME = const(...)`` in device/ucrumb/*.py and checks it through
the table below: a wire constant must equal its wire.json entry, a device-
local one must be listed as such, and one in neither table fails, so a new
constant cannot be added unchecked. It also checks the key bytes that
Client._request() writes by hand, and the refusal codes the client tests.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import cbor2
import pytest

from ucrumb import client

REPO = Path(__file__).resolve().parents[2]
DEVICE = REPO / "device" / "ucrumb"
WIRE = {name: value
        for section in json.loads((REPO / "shared" / "wire.json").read_text(encoding="utf-8"))["sections"].values()
        for name, value in section["constants"].items()}

# module.const -> the wire.json constant it copies.
WIRE_NAMES = {
    "client._TOKEN": "RESP_ACCESS_TOKEN",
    "client._EXPIRES_IN": "RESP_EXPIRES_IN",
    "client._TIME": "RESP_TIME",
    "client._TOKENS": "RESP_TOKENS",
    "client._USES": "RESP_USES",
    "client._ERR_DESC": "ERR_DESCRIPTION",
    "client._ERR_CODE": "ERR_CODE",
    "client._RETRY_AFTER": "ERR_RETRY_AFTER",
    "client._NONCE_BYTES": "NONCE_MIN",  # the shortest nonce the issuer takes: the 68-byte request of §11.2
    "client._MAC_BYTES": "MAC_BYTES",
    "client._TIME_BYTES": "BLOCK_TIME_BYTES",
    "client._TIME_MIN": "DEVICE_TIME_MIN",
    "client._TIME_MAX": "DEVICE_TIME_MAX",
    "client._CNF": "RESP_CNF",
    "client._CNF_COSE_KEY": "CNF_COSE_KEY",
    "client._COSE_KEY_K": "COSE_KEY_K",
    "client._POP_KEY_BYTES": "POP_KEY_BYTES",
    "verify._FORMAT_VERSION": "FORMAT_VERSION",
    "verify._ALG_EDDSA": "ALG_EDDSA",
    "verify._COSE_ALG": "COSE_ALG",
    "verify._COSE_KID": "COSE_KID",
    "verify._KID_BYTES": "KID_BYTES",
    "verify._PUBLIC_KEY_BYTES": "PUBLIC_KEY_BYTES",
    "verify._SIGNATURE_BYTES": "SIGNATURE_BYTES",
    "verify._MAX_TOKEN_BYTES": "MAX_TOKEN_BYTES",
    "verify._MAX_DEPTH": "MAX_DEPTH",
    "verify._MAX_ITEMS": "MAX_ITEMS",
    "verify._MAX_STRING": "MAX_STRING",
    "verify._MAX_BLOCKS": "MAX_BLOCKS",
    "verify._MAX_CAVEATS": "MAX_CAVEATS",
    "verify._MAX_USES": "MAX_USES",
    "verify._CLAIM_ISS": "CLAIM_ISS",
    "verify._CLAIM_SUB": "CLAIM_SUB",
    "verify._CLAIM_AUD": "CLAIM_AUD",
    "verify._CLAIM_EXP": "CLAIM_EXP",
    "verify._CLAIM_NBF": "CLAIM_NBF",
    "verify._CLAIM_IAT": "CLAIM_IAT",
    "verify._CLAIM_CTI": "CLAIM_CTI",
    "verify._CLAIM_CNF": "CLAIM_CNF",
    "verify._CLAIM_SCOPE": "CLAIM_SCOPE",
    "verify._CLAIM_CRUMB": "CLAIM_CRUMB",
    "verify._EXT_USES": "EXT_USES",
    "verify._EXT_CHAIN": "EXT_CHAIN",
    "verify._EXT_ATTENUATORS": "EXT_ATTENUATORS",
    "verify._EXT_CAVEATS": "EXT_CAVEATS",
    "verify._EXT_OPEN": "EXT_OPEN",
    "verify._BLOCK_ATTEST": "BLOCK_ATTEST",
    "verify._BLOCK_ATTENUATE": "BLOCK_ATTENUATE",
    "verify._BLOCK_OPEN": "BLOCK_OPEN",
    "verify._PRED_EQ": "PRED_EQ",
    "verify._PRED_NE": "PRED_NE",
    "verify._PRED_IN": "PRED_IN",
    "verify._PRED_PREFIX": "PRED_PREFIX",
    "verify._PRED_LT": "PRED_LT",
    "verify._PRED_LE": "PRED_LE",
    "verify._PRED_GT": "PRED_GT",
    "verify._PRED_GE": "PRED_GE",
    "verify._FIELD_RESOURCE": "FIELD_RESOURCE",
    "verify._FIELD_OPERATION": "FIELD_OPERATION",
    "verify._FIELD_TIME": "FIELD_TIME",
    "verify._FIELD_HOP": "FIELD_HOP",
    "verify._FIELD_AUDIENCE": "FIELD_AUDIENCE",
    "verify._FIELD_SUBJECT": "FIELD_SUBJECT",
    "client._CONTENT_FORMAT": "COAP_OPT_CONTENT_FORMAT",
    "client._MAX_AGE": "COAP_OPT_MAX_AGE",
    "coap._CON": "COAP_CON",
    "coap._NON": "COAP_NON",
    "coap._ACK": "COAP_ACK",
    "coap._RST": "COAP_RST",
    "coap._URI_PATH": "COAP_OPT_URI_PATH",
    "coap._CONTENT_FORMAT": "COAP_OPT_CONTENT_FORMAT",
    "coap._MAX_AGE": "COAP_OPT_MAX_AGE",
    "coap._URI_QUERY": "COAP_OPT_URI_QUERY",
    "coap._BLOCK2": "COAP_OPT_BLOCK2",
    "coap._DEFAULT_PORT": "COAP_DEFAULT_PORT",
    "coap.TOKEN_OPTION": "COAP_OPT_CRUMB_TOKEN",
    "coap.POP_OPTION": "COAP_OPT_CRUMB_POP",
    "coap.ACE_CBOR": "COAP_CF_ACE_CBOR",
    "coap.CBOR": "COAP_CF_CBOR",
}
# module.const -> why it is not on the wire.
DEVICE_ONLY = {
    "client._USED": "cache entry layout: index of the last use",
    "client._AHEAD": "cache entry layout: index of the fetch-ahead deadline",
    "client._FIRST": "cache entry layout: index of the first token",
    "client._BYTES": "cached token layout: index of the token bytes",
    "client._LEFT": "cached token layout: index of the uses left",
    "client._UNTIL": "cached token layout: index of the deadline",
    "client._KEY": "cached token layout: index of a PoP token's key",
    "client._MAX_LIFE": "the longest expires_in taken: the issuer policy's MAX_TTL (checked below)",
    "verify._ALL_METHODS": "every REST method bit: the sum of wire.json REST_METHODS (checked below)",
    "verify._LEEWAY": "the default clock leeway: crumb.replay.DEFAULT_LEEWAY (checked below)",
    "coap._MAX_OPTIONS": "a parse bound of the device's CoAP client, not a wire value",
}


def _consts() -> dict[str, object]:
    """module.NAME -> the literal value of every ``NAME = const(literal)`` in device/ucrumb."""
    found: dict[str, object] = {}
    for path in sorted(DEVICE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "const":
                assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), ast.unparse(node)
                found[f"{path.stem}.{node.targets[0].id}"] = ast.literal_eval(node.value.args[0])
    return found


CONSTS = _consts()


def test_the_device_defines_constants():
    assert len(CONSTS) >= len(WIRE_NAMES)  # the scan finds them (it would pass vacuously otherwise)


@pytest.mark.parametrize("name", sorted(CONSTS))
def test_device_const_is_mapped_and_equal(name):
    assert (name in WIRE_NAMES) != (name in DEVICE_ONLY), \
        f"{name}: add it to WIRE_NAMES (a copy of a wire.json constant) or DEVICE_ONLY (with why) in this file"
    if name in WIRE_NAMES:
        wire_name = WIRE_NAMES[name]
        assert wire_name in WIRE, f"{name} maps to {wire_name}, which shared/wire.json does not have"
        assert CONSTS[name] == WIRE[wire_name], f"{name} = const({CONSTS[name]}) but {wire_name} is {WIRE[wire_name]}"


def test_no_stale_mappings():
    assert set(WIRE_NAMES) | set(DEVICE_ONLY) <= set(CONSTS)


def _request_writes() -> list[bytes]:
    """The literal bytes Client._request() appends or extends ``out`` with, in source order."""
    tree = ast.parse((DEVICE / "client.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Client")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_request")
    writes = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "out" \
                and node.func.attr in ("append", "extend") and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            writes.append((node.lineno, bytes((value,)) if isinstance(value, int) else value))
    return [w for _, w in sorted(writes)]


def test_request_key_bytes_are_the_wire_keys():
    """0x05, 0x09, 18 18, then the crumb block's key (3a 00 01 00 00) and its byte-string head (58):
    the keys in deterministic order, the block last."""
    keys = ["REQ_AUDIENCE", "REQ_SCOPE", "REQ_CLIENT_ID"]
    block = WIRE["BLOCK_TIME_BYTES"] + WIRE["BLOCK_COUNT_BYTES"] + WIRE["NONCE_MIN"] + WIRE["MAC_BYTES"]
    block_head = cbor2.dumps(WIRE["REQ_CRUMB"]) + cbor2.dumps(bytes(block))[:1]  # key, then 0x58 (length follows)
    assert _request_writes() == [cbor2.dumps(WIRE[k]) for k in keys] + [block_head]
    assert cbor2.dumps(bytes(block))[1] == block  # the length byte the device appends: 27


def test_content_type_and_refusal_codes_are_the_wire_ones():
    assert client._HEADERS == {"Content-Type": WIRE["CBOR_TYPES"][0]}
    assert set(client._TRANSIENT) <= set(WIRE["REFUSALS"])
    # every code the client compares a refusal's code with
    compared = {c.value for node in ast.walk(ast.parse((DEVICE / "client.py").read_text(encoding="utf-8")))
                if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "code"
                for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert compared and compared <= set(WIRE["REFUSALS"]), compared


def test_longest_token_life_is_the_policy_bound():
    from crumb.issuer.policy import MAX_TTL

    assert CONSTS["client._MAX_LIFE"] == MAX_TTL


def _client_codes() -> set[str]:
    """Every code ucrumb.client can give an error: the classes' ``code = "..."`` and the
    literal second argument of each error raised with one."""
    tree = ast.parse((DEVICE / "client.py").read_text(encoding="utf-8"))
    codes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign) and [t.id for t in item.targets if isinstance(t, ast.Name)] == ["code"]:
                    codes.add(ast.literal_eval(item.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith(
                ("Unavailable", "Denied", "Unsynced", "Error")) and len(node.args) == 2 \
                and isinstance(node.args[1], ast.Constant):
            codes.add(node.args[1].value)
    return codes


def test_client_codes_are_the_wire_ones():
    codes = _client_codes()
    assert {"issuer_unavailable", "denied", "stale_time", "bad_time"} <= codes  # the scan finds them
    assert codes <= set(WIRE["DEVICE_ERRORS"]) | set(WIRE["REFUSALS"]), codes - set(WIRE["DEVICE_ERRORS"])
    assert not set(WIRE["DEVICE_ERRORS"]) & set(WIRE["REFUSALS"])  # one meaning per code


def test_verify_values_are_the_wire_ones():
    """ucrumb.verify's non-const copies: the REST methods, the seal context, the appended blocks'
    protected header, the Sig_structure context, the stable codes and the default leeway."""
    from crumb import cose
    from crumb.errors import BY_CODE
    from crumb.replay import DEFAULT_LEEWAY
    from ucrumb import verify

    assert verify._METHODS == WIRE["REST_METHODS"]
    assert CONSTS["verify._ALL_METHODS"] == sum(WIRE["REST_METHODS"].values())
    assert CONSTS["verify._LEEWAY"] == DEFAULT_LEEWAY
    assert verify._SEAL_CONTEXT.decode() == WIRE["SEAL_CONTEXT"]
    assert verify._BLOCK_PROTECTED == cose.BLOCK_PROTECTED
    assert verify._SIG1 == cose._SIG1_PREFIX
    codes = {v for k, v in vars(verify).items() if k.isupper() and isinstance(v, str)}
    assert len(codes) == 15 and codes <= set(WIRE["ERROR_CODES"]) and codes <= set(BY_CODE)
    for k, v in vars(verify).items():
        if k.isupper() and isinstance(v, str):
            assert k.lower() == v  # MALFORMED = "malformed", one name per code
