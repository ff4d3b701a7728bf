"""The login lockout is not undone by opening a new browser session (issue 16, finding 6).

test_security.py checks the lockout within one session. A guesser who reloads the page (or
drops the session cookie) gets a new Streamlit session; the lockout is also kept per client
address, so the new session is locked as well: the right password does not sign it in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dash_browser import REPO
from streamlit.testing.v1 import AppTest

from dashboard import auth

PASSWORD = "correct horse battery staple"


@pytest.fixture
def password_app(empty_db, monkeypatch) -> Iterator[None]:
    """app.py as served on all interfaces with a password (AppTest shares `auth.LIMITER`)."""
    from streamlit import config

    monkeypatch.setenv("NSBI_DASHBOARD_PASSWORD", PASSWORD)
    # a stopped clock: the lockout cannot run out while a slow machine starts a session
    monkeypatch.setattr(auth, "LIMITER", auth.LoginLimiter(clock=lambda: 1000.0))
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        yield
    finally:
        config.set_option("server.address", before)


def _session() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _login(at: AppTest, password: str) -> None:
    at.text_input(key="_nsbi_password").set_value(password)
    at.button(key="FormSubmitter:login-Log in").click().run()


def _signed_in(at: AppTest) -> bool:
    return bool(at.session_state[auth.AUTH_KEY]) if auth.AUTH_KEY in at.session_state else False


def test_a_new_session_from_the_same_address_is_still_locked(password_app):
    first = _session()
    for i in range(auth.FREE_FAILURES + 1):
        _login(first, f"guess-{i}")
    assert auth.LIMITER.wait_s(["ip:local"]) > 0
    second = _session()  # a reload: a new session id, the same client address
    _login(second, PASSWORD)
    assert not _signed_in(second)
    assert second.error and second.error[0].value.startswith("Too many wrong passwords")
    assert auth.LIMITER.wait_s(["ip:local"]) > 0  # still locked afterwards
