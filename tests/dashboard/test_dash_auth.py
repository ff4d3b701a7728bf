"""The access rule: open on loopback only, login otherwise, locked when no login is configured."""

from __future__ import annotations

import pytest

from dashboard import auth


@pytest.mark.parametrize(
    "address,loopback",
    [
        ("127.0.0.1", True),
        ("127.0.1.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        (None, False),
        ("192.168.1.4", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_is_loopback(address, loopback):
    assert auth.is_loopback(address) is loopback


def test_access_mode():
    assert auth.access_mode("127.0.0.1", password=None, oidc=False) == "open"
    assert auth.access_mode("0.0.0.0", password=None, oidc=False) == "locked"
    assert auth.access_mode("0.0.0.0", password="s3cret", oidc=False) == "password"
    assert auth.access_mode("10.0.0.2", password="s3cret", oidc=True) == "oidc"


def test_password_ok():
    assert auth.password_ok("s3cret", "s3cret")
    assert not auth.password_ok("s3cre", "s3cret")
    assert not auth.password_ok("", "")
    assert not auth.password_ok(None, "x")
