"""Cases with known outcomes for tests/faults/test_hardening.py (not collected by the suite:
the file name does not start with test_). Each name says what tools/hardening.py must count."""

import pytest


def test_held():
    assert 1 + 1 == 2


@pytest.mark.parametrize("n", [1, 2])
def test_held_twice(n):
    assert n in (1, 2)


def test_lost():
    assert 1 + 1 == 3


@pytest.mark.xfail(strict=True, reason="a known defect: the attack still wins")
def test_lost_to_a_known_defect():
    assert 1 + 1 == 3


def test_lost_when_skipped():
    pytest.skip("a case that did not run shows nothing")
