"""crumb._request, the optional C extension for the common device request.

host/crumb/_request.c parses the request nearly every device sends exactly
as protocol._parse_common does, and answers None for anything else, which
the general parser then judges. Without it (no C compiler when crumb was
installed, or CRUMB_NATIVE_REQUEST=0) the issuer parses in Python: same
answers, more CPU per request.
"""

from __future__ import annotations

import os
from typing import Callable


def load(request_type: type, all_methods: int) -> Callable | None:
    """crumb._request.parse_common, ready to use, or None when it is absent or turned off."""
    if os.environ.get("CRUMB_NATIVE_REQUEST", "1") == "0":
        return None
    try:
        from .. import _request
    except ImportError:
        return None
    try:
        _request.init(all_methods, request_type)
    except (TypeError, ValueError):  # an extension built from other sources: parse in Python, as without it
        return None
    return _request.parse_common


def describe(native: bool) -> str:
    if native:
        return "the common device request parsed in C (crumb._request)"
    why = "turned off by CRUMB_NATIVE_REQUEST=0" if os.environ.get("CRUMB_NATIVE_REQUEST", "1") == "0" \
        else "crumb._request is not built"
    return f"requests parsed in Python ({why})"
