"""The simulator's one error type: a problem the user can fix, said in one line (exit 2)."""

from __future__ import annotations


class SimError(Exception):
    """Bad input or a set-up that cannot run: the CLI prints ``error: <message>`` and exits 2."""
