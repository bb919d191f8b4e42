"""Fuzz targets: what tools/fuzz.py runs under atheris and the test suite replays.

``TARGETS`` maps each name to its ``Target`` (harness.py says what a target
is and what counts as a finding). docs/hardening.md is the guide.
"""

from __future__ import annotations

from . import coap_targets as coap
from . import device_targets as dev
from . import host_targets as host
from . import issuer_targets as iss
from . import key_targets as keys
from . import pop_targets as pop
from .harness import Finding, Target, WorkExceeded, run_guarded

# Words for libFuzzer's dictionary: the heads, keys and values that single-byte
# mutations rarely spell (an 8-byte integer, a private-use key, an escaped
# surrogate, a field name, a header).
CBOR_WORDS = (b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff",
              b"\x1a\x00\x01\x00\x00", b"\x3a\x00\x01\x00\x00", b"\x3a\x00\x01\x00\x01",
              b"\x3a\x00\x01\x00\x03", b"\x19\x00\x18", b"\x18\x17", b"\x9f", b"\xbf", b"\xff", b"\xf9\x00\x00",
              b"\xfa\x00\x00\x00\x00", b"\xf7", b"\xf8\x14", b"\xf8\x20", b"\xc0", b"\xd8\x18", b"\x5f", b"\x7f",
              b"\x81\x81\x81\x81\x81\x81\x81\x81", b"\x98\x20", b"\xb8\x20", b"\x59\x10\x00", b"\x7a\xff\xff\xff\xff",
              b"\x62\xed\xa0", b"\x63\xed\xa0\x80", b"\x62\xc0\x80", b"\x64\xf4\x90\x80\x80", b"\x61\x00",
              b"\x40", b"\x60", b"\x80", b"\xa0", b"\xf4", b"\xf5", b"\xf6", b"\x27")
JSON_WORDS = (b'"\\ud800"', b"\\ud800", b"\\udc00", b'"\\udfff\\ud800"', b'"\\u0000"', b"18446744073709551617", b"-1", b"1e999",
              b"1.5", b"true", b"null", b"[[[[[[[[[[[[[[[[", b'{"', b'""', b'":', b'"x"', b'"d"', b'"kid"', b'"kty"',
              b'"OKP"', b'"crv"', b'"Ed25519"', b'"keys"', b'"nodes"', b'"status"', b'"previous"', b'"client_id"',
              b'"audience"', b'"scope"', b'"nonce"', b'"time"', b'"count"', b'"mac"', b'"grant_type"',
              b'"ace_profile"', b"|", b" ", b",", b"/../", b"%2e", b"*")
HTTP_WORDS = (b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.0 400 \r\n",
              b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"Retry-After: ", b"\xc2\xb2",
              b"\xd9\xa3", b"\r\n\r\n", b"\r\n", b"\n", b"ffffffff\r\n", b"0\r\n\r\n", b"-1",
              b"99999999999999999999", b"content-type: ", b"content-length: ", b"accept: ",
              b"application/json", b"application/ace+cbor", b"application/cbor")
# COSE_Encrypt0 of a sealed answer: its head up to the nonce, byte-string heads of each length form.
POP_WORDS = (b"\x83\x43\xa1\x01\x0a\xa1\x05\x4d", b"\x43\xa1\x01\x0a", b"\xa1\x05\x4d", b"\x4d", b"\x4c",
             b"\x48", b"\x49", b"\x57", b"\x58\x18", b"\x58\x17", b"\x59\x01\x00", b"\x59\x00\xff", b"\x00" * 13)
# CoAP: headers of each type and token length, option deltas and lengths with 1- and 2-byte extensions,
# crumb's options (65003, 65007: delta 14 plus two bytes), the payload marker.
COAP_WORDS = (b"\x40\x01", b"\x48\x01", b"\x60\x45", b"\x60\x00", b"\x70\x00", b"\x50\x45", b"\x4f",
              b"\xff", b"\xd0\x00", b"\xe0\xfe\xde", b"\x0d\x00", b"\x0e\x00\x00", b"\x0e\xff\xff",
              b"\xdd\xff\xff", b"\xee\xff\xff\xff\xff", b"\xc1\x13", b"\xc1\x3c", b"\xb1\x1a", b"\x1f",
              b"\xf0", b"\x0f")

# max_calls: the bounded-work guard per input. The largest seed of each target makes
# well under a tenth of its bound (tests/fuzz/test_fuzz_corpus.py holds them to that).
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cbor", "host CBOR decoder (crumb.cbor.loads), and re-encoding what it accepts",
           host._cbor_setup, 20_000, host.cbor_seeds, words=CBOR_WORDS),
    Target("cbor_diff", "host decoder against device decoder (ucrumb.cbor) on the same bytes",
           host._cbor_diff_setup, 40_000, host.cbor_seeds, words=CBOR_WORDS),
    Target("verify", "Verifier.verify over mutated valid tokens, as sent or re-signed with the named keys",
           host._verify_setup, 60_000, host.verify_seeds, words=CBOR_WORDS),
    Target("request_cbor", "the issuer's CBOR token request parser (and its fast path against the general one)",
           iss._request_cbor_setup, 20_000, iss.cbor_request_seeds, words=CBOR_WORDS),
    Target("request_json", "the issuer's JSON token request parser",
           iss._request_json_setup, 20_000, iss.json_request_seeds, words=JSON_WORDS),
    Target("token_endpoint", "POST /token in-process: headers and body, re-MACed, through the whole pipeline",
           iss._token_endpoint_setup, 100_000, iss.token_endpoint_seeds, words=CBOR_WORDS + JSON_WORDS + HTTP_WORDS),
    Target("keyset", "GET /keys documents and key files (keyset.parse_json, keys.load_*, keyset.load_file)",
           keys._keyset_setup, 40_000, keys.keyset_seeds, words=JSON_WORDS),
    Target("keyfetch", "a bad GET /keys body after a good one, fetched over HTTP and used by a verifier",
           keys._keyfetch_setup, 200_000, keys.keyset_seeds, words=JSON_WORDS),
    Target("device_cbor", "the device's CBOR decoder (ucrumb.cbor.loads), and re-encoding what it accepts",
           dev._device_cbor_setup, 20_000, dev.device_cbor_seeds, words=CBOR_WORDS),
    Target("device_response", "ucrumb.client.Client against a loopback server answering with the input",
           dev._device_response_setup, 100_000, dev.device_response_seeds, words=CBOR_WORDS + HTTP_WORDS),
    Target("device_verify", "ucrumb.verify against crumb.Verifier (same keys, clock, audience, hop) on mutated tokens",
           dev._device_verify_setup, 100_000, dev.device_verify_seeds, words=CBOR_WORDS),
    # ucrumb.aesccm is pure Python: about 19 calls a byte, so a 4 KB answer takes some 78,000.
    Target("device_pop_response", "ucrumb.pop.open_response (and crumb.pop's) on mutated sealed token answers",
           pop._device_pop_response_setup, 400_000, pop.device_pop_response_seeds, words=POP_WORDS + CBOR_WORDS),
    Target("pop_cnf", "PoP tokens at their first hop: cnf decrypted with the node key, the request's proof checked",
           pop._pop_cnf_setup, 60_000, pop.pop_cnf_seeds, words=CBOR_WORDS),
    Target("device_coap", "the device's CoAP message parser (ucrumb.coap.parse), and re-encoding what it accepts",
           coap._device_coap_setup, 20_000, coap.device_coap_seeds, max_len=1400, words=COAP_WORDS),
    Target("coap_guard", "a datagram decoded by aiocoap, then the host CoapGuard in-process (token and proof options)",
           coap._coap_guard_setup, 100_000, coap.coap_guard_seeds, max_len=1400, words=COAP_WORDS + CBOR_WORDS),
)}

__all__ = ["TARGETS", "Finding", "Target", "WorkExceeded", "run_guarded"]
