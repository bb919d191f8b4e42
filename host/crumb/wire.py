"""Wire constants: every number, name and size crumb puts on the wire, in one place.

PROTOCOL.md is the prose for these. Everything else imports them from here:
the token core, the issuer (crumb.issuer.protocol, .codes, .app, .minting),
the services. The device cannot import host code, so it keeps literal
copies (``const()`` in device/ucrumb/client.py); shared/wire.json is the
copy it is tested against (tests/device/test_device_wire.py).

Sections: a comment line ``# [name] what it is`` opens a section; every
constant below it, up to the next such line, belongs to it.
tools/gen_vectors.py writes shared/wire.json grouped by these sections (so
a constant added here reaches wire.json with the next ``make vectors``, and
tests/host/test_wire.py fails until it does).
"""

from __future__ import annotations

from typing import NamedTuple

# ======================================================================================
# The token (PROTOCOL.md §1-§9)
# ======================================================================================

# [token] Format version, fixed sizes and labels of a token (§1, §3, §4, §6.3).
FORMAT_VERSION = 2          # 2: the scope claim is a byte string holding the AIF (1: the bare AIF array)
KID_BYTES = 4
CTI_BYTES = 8               # what crumb mints; a verifier accepts 1 to 32 bytes
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_USES = 0xFFFFFFFF       # uses per hop: 2 to this (absent means 1)
SEAL_CONTEXT = b"crumb seal v1"

# [token_cose] COSE (RFC 9052) header labels and the one algorithm crumb accepts (§4).
COSE_ALG = 1
COSE_KID = 4
ALG_EDDSA = -8

# [token_claims] CWT claim keys (RFC 8392 / IANA), and crumb's one private-use claim (§4.1).
CLAIM_ISS = 1
CLAIM_SUB = 2
CLAIM_AUD = 3
CLAIM_EXP = 4
CLAIM_NBF = 5
CLAIM_IAT = 6
CLAIM_CTI = 7
CLAIM_CNF = 8            # RFC 8747 confirmation: a PoP token's key, encrypted to the first hop (§4.4)
CLAIM_SCOPE = 9
CLAIM_CRUMB = -65537  # first private-use key: holds the crumb extension map

# [token_scope] REST method bitmask of compact AIF permissions, RFC 9237 §3 numbering (§4.2).
REST_METHODS = {
    "GET": 1 << 0,
    "POST": 1 << 1,
    "PUT": 1 << 2,
    "DELETE": 1 << 3,
    "FETCH": 1 << 4,
    "PATCH": 1 << 5,
    "IPATCH": 1 << 6,
}

# [token_extension] Keys of the crumb extension map, the value of CLAIM_CRUMB (§4.3).
EXT_USES = 1
EXT_CHAIN = 2
EXT_ATTENUATORS = 3
EXT_CAVEATS = 4
EXT_OPEN = 5

# [token_caveats] Caveats, [predicate, field, value]: predicate and field numbers (§5).
PRED_EQ = 1
PRED_NE = 2
PRED_IN = 3
PRED_PREFIX = 4
PRED_LT = 5
PRED_LE = 6
PRED_GT = 7
PRED_GE = 8

FIELD_RESOURCE = 0
FIELD_OPERATION = 1
FIELD_TIME = 2
FIELD_HOP = 3
FIELD_AUDIENCE = 4
FIELD_SUBJECT = 5

# [token_blocks] Appended block kinds: the first element of a block's payload array (§6).
BLOCK_ATTEST = 1
BLOCK_ATTENUATE = 2
BLOCK_OPEN = 3

# [token_limits] Parse limits: the defaults, which a Verifier may lower (§2).
MAX_TOKEN_BYTES = 4096
MAX_DEPTH = 6
MAX_ITEMS = 32
MAX_STRING = 255
MAX_BLOCKS = 16
MAX_CAVEATS = 16

# [token_errors] Stable error codes of token verification (§8).
# Every way a token can fail, one code each, plus store_unavailable for a
# replay store that cannot answer (verification then fails closed). crumb.errors has one class per code.
ERROR_CODES = (
    "malformed",
    "unsupported_version",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "scope_denied",
    "caveat_failed",
    "unknown_caveat",
    "replayed",
    "chain_incomplete",
    "chain_invalid",
    "revoked",
    "too_large",
    "store_unavailable",
    "pop_failed",
)

# [token_pop] Proof of possession (§4.4, §11.9, §12.1): the cnf claim's COSE structure, the algorithms,
# sizes and derivation labels. COSE labels and algorithm ids are IANA's (RFC 9052/9053, RFC 8747).
CNF_ENCRYPTED_KEY = 2       # RFC 8747 §3.3 Encrypted_COSE_Key, inside cnf
COSE_IV = 5                 # header parameter: the AES-CCM nonce
COSE_EPHEMERAL_KEY = -1     # recipient header parameter: the sender's ephemeral COSE_Key (RFC 9053 §6.3.1)
ALG_AES_CCM_16_64_128 = 10  # content encryption: AES-128, 13-byte nonce, 8-byte tag
ALG_ECDH_ES_HKDF_256 = -25  # direct key agreement, HKDF-SHA-256
COSE_KTY_SYMMETRIC = 4
COSE_KEY_K = -1             # a symmetric COSE_Key's key bytes
COSE_CRV_X25519 = 4
CCM_KEY_BYTES = 16
CCM_NONCE_BYTES = 13
CCM_TAG_BYTES = 8
POP_KEY_BYTES = 16          # the PoP (HMAC-SHA256) key: 128 bits, the strength of everything else here
POP_MAC_BYTES = 16          # HMAC-SHA256 truncated, as the request MAC
POP_PROOF_BYTES = 20        # time (4 bytes, big-endian) || MAC
POP_CONTEXT = b"crumb pop v1"               # first bytes of every proof's MAC input
POP_RESPONSE_KEY_LABEL = b"crumb response key v1"  # HMAC label: device key -> response encryption key
POP_HEADER = "crumb-pop"    # HTTP header carrying the proof (base64url, no padding)
POP_MODES = ("token", "batch")

# ======================================================================================
# The token endpoint, POST /token (PROTOCOL.md §11)
# ======================================================================================

# [endpoint_media] Content types of /token: CBOR (devices send the first; answers use it) and JSON (§11.1, §11.7).
CBOR_TYPES = ("application/ace+cbor", "application/cbor")
JSON_TYPE = "application/json"

# [endpoint_request] Keys of a token request map (§11.1).
# ACE parameters (RFC 9200 §5.8.1, "OAuth Parameters CBOR Mappings") where one
# fits; crumb's own travel under one key of the private-use range (below
# -65536; -256..255 are reserved for Standards Action), which sorts after
# every registered key, so its block ends the request and the MAC, the block's
# last bytes, ends it too: a device can MAC as it writes (§11.2).
REQ_AUDIENCE = 5        # ACE "audience"
REQ_SCOPE = 9           # ACE "scope": text (§11.3) or a byte string holding AIF
REQ_CLIENT_ID = 24      # ACE "client_id": the device id
REQ_GRANT_TYPE = 33     # ACE "grant_type": only client_credentials (optional)
REQ_ACE_PROFILE = 38    # ACE "ace_profile": null, asking for the profile (optional, accepted and ignored)
REQ_CRUMB = -65537      # crumb's authenticated block: time (4 bytes) || count (1) || nonce || MAC

GRANT_CLIENT_CREDENTIALS = 2   # "OAuth Grant Type CBOR Mappings" (RFC 9200 §8.5)

# [endpoint_block] The crumb block, REQ_CRUMB's byte string: fixed fields first, the MAC last (§11.2).
BLOCK_TIME_BYTES = 4    # the device's Unix time, seconds, big-endian (0 before its first answer)
BLOCK_COUNT_BYTES = 1   # tokens for the scope: 1 for one, 2..MAX_COUNT for n of one scope
# then the nonce (NONCE_MIN..NONCE_MAX bytes), then the MAC (MAC_BYTES): the
# MAC covers every byte of the request before it.

# [endpoint_device_clock] The issuer times a device adopts, Unix seconds (§11.4): an answer whose time is
# outside this range is refused whole and its time not adopted (device code bad_time). The floor is a date no
# crumb release predates; the ceiling leaves the 4-byte request time (BLOCK_TIME_BYTES, to 2106) room to count on.
DEVICE_TIME_MIN = 1_767_225_600     # 2026-01-01T00:00:00Z
DEVICE_TIME_MAX = 4_102_444_800     # 2100-01-01T00:00:00Z

# [endpoint_text_scope] The text form of the request's scope (§11.3): entries
# separated by one space, each "resource|operation[,operation...]".
SCOPE_ENTRY_SEPARATOR = " "
SCOPE_OP_MARK = "|"
SCOPE_OP_SEPARATOR = ","

# [endpoint_sizes] Sizes and limits of a token request; the device key derivation's label (§11.1, §11.2).
DEVICE_KEY_LABEL = b"crumb device key v1"   # fixed length: label || device id is unambiguous
MAX_KEY_GENERATION = 0xFFFFFFFF  # `crumb device rekey`: generation n >= 1 appends 0x00 || n (4 bytes)
MAC_BYTES = 16          # HMAC-SHA256 truncated to this
NONCE_MIN = 6
NONCE_MAX = 16
MAX_CLIENT_ID = 64      # bytes (a device id is ASCII)
MAX_BATCH = 32          # scopes in a batch: the absolute ceiling, whatever the policy says
MAX_COUNT = MAX_BATCH   # tokens for one scope, the same ceiling
MAX_PERMISSION_OPS = 8  # operations in one permission array

# [endpoint_response] Keys of a successful /token response map (§11.6).
# crumb's own are in the private-use range, one key each.
RESP_ACCESS_TOKEN = 1   # ACE "access_token"
RESP_EXPIRES_IN = 2     # ACE "expires_in"
RESP_TOKEN_TYPE = 34    # ACE "token_type": required for a token that is not PoP (RFC 9200 §5.8.2)
RESP_TIME = -65537      # the issuer's Unix time, on every answer (refusals too)
RESP_TOKENS = -65538    # a batch: [[token, expires_in, uses], ...]
RESP_USES = -65539      # present only when 2 or more

TOKEN_TYPE_BEARER = 1   # "OAuth Token Type CBOR Mappings" (RFC 9200 §8.7): crumb's tokens are bearer tokens
TOKEN_TYPE_POP = 2      # the same registry: a proof-of-possession token (§11.9)
RESP_CNF = 8            # ACE "cnf" in a token response: {1: COSE_Key}, the PoP key the client holds (RFC 9200 §5.8.2)
CNF_COSE_KEY = 1        # RFC 8747 §3.2 COSE_Key, inside cnf
POP_RESPONSE_TYPE = 'application/cose; cose-type="cose-encrypt0"'  # an encrypted token response (RFC 9052 §9.1)

# [endpoint_errors] Keys of a /token refusal map; it carries RESP_TIME too (§11.6).
ERR_ERROR = 30          # ACE "error" (integer code)
ERR_DESCRIPTION = 31    # ACE "error_description": the human message
ERR_CODE = -65540       # crumb's stable code (text)
ERR_RETRY_AFTER = -65541  # seconds, with rate_limited and store_unavailable

# [endpoint_ace_errors] ACE error numbers (RFC 9200 §8.4: CBOR values of OAuth "error"), their JSON names (§11.6).
ACE_INVALID_REQUEST = 1
ACE_INVALID_CLIENT = 2
ACE_INVALID_GRANT = 3
ACE_UNAUTHORIZED_CLIENT = 4
ACE_UNSUPPORTED_GRANT_TYPE = 5
ACE_INVALID_SCOPE = 6

ACE_NAMES = {
    ACE_INVALID_REQUEST: "invalid_request",
    ACE_INVALID_CLIENT: "invalid_client",
    ACE_INVALID_GRANT: "invalid_grant",
    ACE_UNAUTHORIZED_CLIENT: "unauthorized_client",
    ACE_UNSUPPORTED_GRANT_TYPE: "unsupported_grant_type",
    ACE_INVALID_SCOPE: "invalid_scope",
}

# [endpoint_refusals] The issuer's refusal codes (ERR_CODE): HTTP status, ACE error, meaning (§11.6).
# The codes shared with token verification (ERROR_CODES) keep their meaning;
# the others say what a token cannot say about a request. Every refusal of a
# request is 400, as RFC 9200 §5.8.3 asks (invalid_client included: a 401
# would need a WWW-Authenticate challenge, and the MAC is in the body, not in
# HTTP authentication). 413 and 415 are transport-level answers about the
# body itself; 503 and 500 are the server failing, not the request, and are
# declared departures (PROTOCOL.md §11.6). too_large for a batch over the
# device's limit is 400 (the body was fine); for a body over the size limit, 413.


class RefusalCode(NamedTuple):
    status: int         # HTTP status of the refusal
    ace_error: int      # ACE_* number, in ERR_ERROR
    meaning: str        # what the code says (each refusal carries its own message too)


REFUSALS = {
    "malformed": RefusalCode(400, ACE_INVALID_REQUEST, "the request is not a well-formed token request"),
    "unsupported_grant_type": RefusalCode(400, ACE_UNSUPPORTED_GRANT_TYPE,
                                          "grant_type is not client_credentials (the only grant crumb issues)"),
    "unsupported_media_type": RefusalCode(415, ACE_INVALID_REQUEST,
                                          "Content-Type is not application/ace+cbor or application/json"),
    "too_large": RefusalCode(413, ACE_INVALID_REQUEST, "the body, or the batch, exceeds a limit"),
    "bad_mac": RefusalCode(400, ACE_INVALID_CLIENT, "the request MAC does not verify for this client_id"),
    "stale_time": RefusalCode(400, ACE_INVALID_CLIENT,
                              "the device time is too far from the issuer's; resync from the response time and retry"),
    "replayed": RefusalCode(400, ACE_INVALID_CLIENT, "this device nonce was already used"),
    "unknown_device": RefusalCode(400, ACE_INVALID_CLIENT, "the device is not enrolled"),
    "revoked": RefusalCode(400, ACE_UNAUTHORIZED_CLIENT, "the device is revoked"),
    "scope_denied": RefusalCode(400, ACE_INVALID_SCOPE, "the policy does not allow this scope for this device"),
    "rate_limited": RefusalCode(400, ACE_INVALID_REQUEST, "the device asked for tokens faster than its rate"),
    "store_unavailable": RefusalCode(503, ACE_INVALID_REQUEST,
                                     "a backing store (Redis, audit log) cannot answer; nothing was issued"),
    "internal_error": RefusalCode(500, ACE_INVALID_REQUEST, "a bug in the issuer; nothing was issued (please report)"),
}

# [device_errors] The device client's own error codes (``.code`` of ucrumb.client's errors, docs/device.md):
# the issuer's refusal codes (REFUSALS) pass through as they are; these are the client's.
DEVICE_ERRORS = {
    "issuer_unavailable": "no valid token cached and none can be had now (network, timeout, HTTP error, garbage)",
    "denied": "the issuer refused for good (the refusal's own code is given when it has one)",
    "bad_time": "the issuer's answer carries a time outside DEVICE_TIME_MIN..DEVICE_TIME_MAX: refused, not adopted",
    "error": "the base class's code (CrumbError); never raised as such",
}

# ======================================================================================
# CoAP (PROTOCOL.md §13)
# ======================================================================================

# [coap] The CoAP binding (RFC 7252, RFC 7959): message types, the option numbers and Content-Formats crumb
# uses, and crumb's token option from the experimental range 65000-65535 (RFC 7252 §12.2): odd (critical)
# with bit 1 set (unsafe to forward), so a node that does not know it refuses the request (§13.2).
COAP_DEFAULT_PORT = 5683
COAP_CON = 0
COAP_NON = 1
COAP_ACK = 2
COAP_RST = 3
COAP_OPT_URI_PATH = 11
COAP_OPT_CONTENT_FORMAT = 12
COAP_OPT_MAX_AGE = 14
COAP_OPT_URI_QUERY = 15
COAP_OPT_BLOCK2 = 23
COAP_OPT_CRUMB_TOKEN = 65003
COAP_OPT_CRUMB_POP = 65007  # the proof of possession (§12.1): critical, unsafe to forward, as the token's
COAP_CF_COSE_ENCRYPT0 = 16  # application/cose; cose-type="cose-encrypt0" (RFC 9052 §11.2): an encrypted answer
COAP_CF_ACE_CBOR = 19   # application/ace+cbor (RFC 9200 §8.16): /token requests and answers
COAP_CF_CBOR = 60       # application/cbor: the envelope [token, payload] (§12)

# ======================================================================================
# The issuer's keys, GET /keys (PROTOCOL.md §11.7)
# ======================================================================================

# [keys_cose_key] COSE_KeySet answer: COSE_Key labels and values (RFC 9052 §7, RFC 9053 §7.2), media type (§11.8).
COSE_KEY_KTY = 1
COSE_KEY_KID = 2
COSE_KEY_ALG = 3        # ALG_EDDSA
COSE_KEY_OPS = 4
COSE_KEY_CRV = -1
COSE_KEY_X = -2         # the PUBLIC_KEY_BYTES-byte public key
COSE_KTY_OKP = 1
COSE_CRV_ED25519 = 6
COSE_KEY_OP_VERIFY = 2
COSE_KEY_SET_TYPE = "application/cose-key-set+cbor"
