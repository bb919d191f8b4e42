"""crumb._request, the optional C extension for the common device request.

host/crumb/_request.c parses the request nearly every device sends exactly
as protocol._parse_common does (and answers None for anything else, which
the general parser then judges), checks its MAC (protocol.DeviceMacs), and
writes the bytes of its token, audit record and answer from each lane's
templates (issuing.py). Without it (no C compiler when crumb was installed,
or CRUMB_NATIVE_REQUEST=0) the issuer does all of that in Python: same
answers, same bytes, more CPU per request.
"""

from __future__ import annotations

import os
from types import ModuleType

_API = ("parse_common", "MacKey", "Lane", "CTI_BYTES")


def load(request_type: type, all_methods: int) -> ModuleType | None:
    """crumb._request, initialised, or None when it is absent, turned off or not this version's."""
    if os.environ.get("CRUMB_NATIVE_REQUEST", "1") == "0":
        return None
    try:
        from .. import _request
    except ImportError:
        return None
    from ..wire import CTI_BYTES

    if not all(hasattr(_request, name) for name in _API) or _request.CTI_BYTES != CTI_BYTES:
        return None  # built from other sources: Python, as without it
    try:
        _request.init(all_methods, request_type)
    except (TypeError, ValueError):
        return None
    return _request


def describe(native: bool) -> str:
    if native:
        return "the common device request parsed, MAC-checked and answered in C (crumb._request)"
    why = "turned off by CRUMB_NATIVE_REQUEST=0" if os.environ.get("CRUMB_NATIVE_REQUEST", "1") == "0" \
        else "crumb._request is not built"
    return f"requests parsed in Python ({why})"
