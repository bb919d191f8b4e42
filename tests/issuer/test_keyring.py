"""The issuer's keyring file (issue 16): whatever keyring.json holds, opening it gives the ring or invalid_key.

Before, a deeply nested file raised RecursionError and a ``"retired"`` that is not a list a
TypeError, out of the code that reads the issuer's keys.
"""

from __future__ import annotations

import json

import pytest

from crumb.errors import InvalidKey
from crumb.issuer.keystore import Keyring

BAD_STATES = {
    "deeply nested": "[" * 30_000 + "]" * 30_000,
    "retired is a number": None,  # filled in with the ring's real kid below
    "not an object": "[]",
    "current is a number": json.dumps({"current": 5, "previous": None, "retired": []}),
    "current is a path": json.dumps({"current": "../../elsewhere", "previous": None, "retired": []}),
    "not JSON": "{",
}


@pytest.mark.parametrize("name", BAD_STATES)
def test_a_bad_keyring_file_is_invalid_key(tmp_path, name):
    ring = Keyring.open(tmp_path / "keys")
    kid = ring.current.kid.hex()
    text = BAD_STATES[name] or json.dumps({"current": kid, "previous": None, "retired": 5})
    ring.state_path.write_text(text)
    with pytest.raises(InvalidKey, match="keyring.json"):
        Keyring.open(tmp_path / "keys")
    # A running issuer keeps signing with the ring it has.
    ring._checked = float("-inf")
    assert ring.refresh() is False and ring.current.kid.hex() == kid


def test_a_good_keyring_still_opens(tmp_path):
    ring = Keyring.open(tmp_path / "keys")
    old = ring.current.kid
    ring.rotate()
    again = Keyring.open(tmp_path / "keys", create=False)
    assert again.previous.kid == old and again.current.kid == ring.current.kid
