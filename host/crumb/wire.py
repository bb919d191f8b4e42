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
FORMAT_VERSION = 1
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
)

# ======================================================================================
# The token endpoint, POST /token (PROTOCOL.md §11)
# ======================================================================================

# [endpoint_media] Content types of /token: CBOR (devices send the first; answers use it) and JSON (§11.1, §11.6).
CBOR_TYPES = ("application/ace+cbor", "application/cbor")
JSON_TYPE = "application/json"

# [endpoint_request] Keys of a token request map (§11.1).
# ACE parameters (RFC 9200) where one fits; crumb's own are negative, which no
# ACE parameter uses. All encode in one byte but client_id (0x18 0x18), and
# the MAC's key sorts last, so a device can MAC as it writes (§11.2).
REQ_AUDIENCE = 5        # ACE "audience"
REQ_SCOPE = 9           # ACE "scope"
REQ_CLIENT_ID = 24      # ACE "client_id": the device id
REQ_NONCE = -1
REQ_TIME = -2           # the device's Unix time, seconds (0 before its first response)
REQ_COUNT = -3          # n tokens for one scope
REQ_MAC = -4

# [endpoint_sizes] Sizes and limits of a token request; the device key derivation's label (§11.1, §11.2).
DEVICE_KEY_LABEL = b"crumb device key v1"   # fixed length: label || device id is unambiguous
MAC_BYTES = 16          # HMAC-SHA256 truncated to this
NONCE_MIN = 6
NONCE_MAX = 16
MAX_CLIENT_ID = 64      # bytes (a device id is ASCII)
MAX_BATCH = 32          # scopes in a batch: the absolute ceiling, whatever the policy says
MAX_COUNT = MAX_BATCH   # tokens for one scope, the same ceiling
MAX_PERMISSION_OPS = 8  # operations in one permission array

# [endpoint_response] Keys of a successful /token response map (§11.5).
RESP_ACCESS_TOKEN = 1   # ACE "access_token"
RESP_EXPIRES_IN = 2     # ACE "expires_in"
RESP_TIME = -2          # the issuer's Unix time, on every answer (refusals too)
RESP_TOKENS = -5        # a batch: [[token, expires_in, uses], ...]
RESP_USES = -6          # present only when 2 or more

# [endpoint_errors] Keys of a /token refusal map; it carries RESP_TIME too (§11.5).
ERR_ERROR = 30          # ACE "error" (integer code)
ERR_DESCRIPTION = 31    # ACE "error_description": the human message
ERR_CODE = -7           # crumb's stable code (text)
ERR_RETRY_AFTER = -8    # seconds, with rate_limited and store_unavailable

# [endpoint_ace_errors] ACE error numbers (RFC 9200 §8.4: CBOR values of OAuth "error"), their JSON names (§11.5).
ACE_INVALID_REQUEST = 1
ACE_INVALID_CLIENT = 2
ACE_INVALID_GRANT = 3
ACE_UNAUTHORIZED_CLIENT = 4
ACE_INVALID_SCOPE = 6

ACE_NAMES = {
    ACE_INVALID_REQUEST: "invalid_request",
    ACE_INVALID_CLIENT: "invalid_client",
    ACE_INVALID_GRANT: "invalid_grant",
    ACE_UNAUTHORIZED_CLIENT: "unauthorized_client",
    ACE_INVALID_SCOPE: "invalid_scope",
}

# [endpoint_refusals] The issuer's refusal codes (ERR_CODE): HTTP status, ACE error, meaning (§11.5).
# The codes shared with token verification (ERROR_CODES) keep their meaning;
# the others say what a token cannot say about a request. too_large for a
# batch over the device's limit is answered 400, not 413 (the body was fine).


class RefusalCode(NamedTuple):
    status: int         # HTTP status of the refusal
    ace_error: int      # ACE_* number, in ERR_ERROR
    meaning: str        # what the code says (each refusal carries its own message too)


REFUSALS = {
    "malformed": RefusalCode(400, ACE_INVALID_REQUEST, "the request is not a well-formed token request"),
    "unsupported_media_type": RefusalCode(415, ACE_INVALID_REQUEST,
                                          "Content-Type is not application/ace+cbor or application/json"),
    "too_large": RefusalCode(413, ACE_INVALID_REQUEST, "the body, or the batch, exceeds a limit"),
    "bad_mac": RefusalCode(401, ACE_INVALID_CLIENT, "the request MAC does not verify for this client_id"),
    "stale_time": RefusalCode(401, ACE_INVALID_CLIENT,
                              "the device time is too far from the issuer's; resync from the response time and retry"),
    "replayed": RefusalCode(401, ACE_INVALID_CLIENT, "this device nonce was already used"),
    "unknown_device": RefusalCode(401, ACE_INVALID_CLIENT, "the device is not enrolled"),
    "revoked": RefusalCode(403, ACE_UNAUTHORIZED_CLIENT, "the device is revoked"),
    "scope_denied": RefusalCode(403, ACE_INVALID_SCOPE, "the policy does not allow this scope for this device"),
    "rate_limited": RefusalCode(429, ACE_INVALID_REQUEST, "the device asked for tokens faster than its rate"),
    "store_unavailable": RefusalCode(503, ACE_INVALID_REQUEST,
                                     "a backing store (Redis, audit log) cannot answer; nothing was issued"),
    "internal_error": RefusalCode(500, ACE_INVALID_REQUEST, "a bug in the issuer; nothing was issued (please report)"),
}

# ======================================================================================
# The issuer's keys, GET /keys (PROTOCOL.md §11.7)
# ======================================================================================

# [keys_cose_key] COSE_KeySet answer: COSE_Key labels and values (RFC 9052 §7, RFC 9053 §7.2), media type (§11.7).
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
