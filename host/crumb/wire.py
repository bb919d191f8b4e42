"""Wire constants: every number crumb puts on the wire, in one place.

PROTOCOL.md is the prose for these; shared/wire.json is the copy both the
host and the device are tested against.
"""

FORMAT_VERSION = 1

# COSE (RFC 9052) header labels and the one algorithm crumb accepts.
COSE_ALG = 1
COSE_KID = 4
ALG_EDDSA = -8

# CWT claim keys (RFC 8392 / IANA), and crumb's one private-use claim.
CLAIM_ISS = 1
CLAIM_SUB = 2
CLAIM_AUD = 3
CLAIM_EXP = 4
CLAIM_NBF = 5
CLAIM_IAT = 6
CLAIM_CTI = 7
CLAIM_SCOPE = 9
CLAIM_CRUMB = -65537  # first private-use key: holds the crumb extension map

# Keys of the crumb extension map (value of CLAIM_CRUMB).
EXT_USES = 1
EXT_CHAIN = 2
EXT_ATTENUATORS = 3
EXT_CAVEATS = 4
EXT_OPEN = 5

# Appended block kinds: first element of a block's payload array.
BLOCK_ATTEST = 1
BLOCK_ATTENUATE = 2
BLOCK_OPEN = 3

# Caveats: [predicate, field, value].
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

# REST method bitmask for compact AIF permissions (RFC 9237 §3 numbering).
REST_METHODS = {
    "GET": 1 << 0,
    "POST": 1 << 1,
    "PUT": 1 << 2,
    "DELETE": 1 << 3,
    "FETCH": 1 << 4,
    "PATCH": 1 << 5,
    "IPATCH": 1 << 6,
}

# Sizes.
KID_BYTES = 4
CTI_BYTES = 8
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEAL_CONTEXT = b"crumb seal v1"

# Parse limits (defaults; a Verifier may lower them).
MAX_TOKEN_BYTES = 4096
MAX_DEPTH = 6
MAX_ITEMS = 32
MAX_STRING = 255
MAX_BLOCKS = 16
MAX_CAVEATS = 16

# Stable error codes (DESIGN.md §3), plus store_unavailable for a replay
# store that cannot answer (verification then fails closed).
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
