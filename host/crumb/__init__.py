"""crumb: request-time, offline-verifiable authorization tokens.

    from crumb import SigningKey, Verifier, mint, attest
    issuer = SigningKey.generate()
    verifier = Verifier([issuer.public])  # a service, started before it sees tokens
    ...  # its restart fence: tokens issued in its first leeway + 1 s (6 s) are refused
    token = mint(issuer, sub="dev-0001", scope=[("/sensors/temp01", "read")])
    verifier.verify(token, "/sensors/temp01", "read")
"""

from ucrumb import __version__  # one version for the host and the device packages

from .caveats import make as caveat
from .errors import CrumbError
from .keys import PublicKey, SigningKey, load_public_key, load_signing_key
from .replay import MemoryReplayStore, ReplayStore
from .token import attenuate, attenuate_open, attest, mint, seal, to_text
from .verify import Verified, Verifier

__all__ = [
    "CrumbError",
    "MemoryReplayStore",
    "PublicKey",
    "ReplayStore",
    "SigningKey",
    "Verified",
    "Verifier",
    "__version__",
    "attenuate",
    "attenuate_open",
    "attest",
    "caveat",
    "load_public_key",
    "load_signing_key",
    "mint",
    "seal",
    "to_text",
]
