"""Message: roles, the role-dependent mask default, eot."""

import pytest

from torchtune.data import Message


def test_masked_defaults_follow_the_role():
    assert [Message(r, "x").masked for r in ("system", "user", "assistant", "ipython")] == [
        True, True, False, True]
    assert Message("user", "x", masked=False).masked is False
    assert Message("assistant", "x", masked=True).masked is True


def test_eot_and_equality():
    assert Message("assistant", "x").eot is True
    assert Message("assistant", "x", eot=False).eot is False
    assert Message("user", "x") == Message("user", "x", masked=True)


def test_unknown_role():
    with pytest.raises(ValueError, match="role 'bot' is not one of system, user, assistant"):
        Message("bot", "x")
