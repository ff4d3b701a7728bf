"""Access guard: open on loopback, a login everywhere else, so the dashboard is never open by accident.

* Bound to a loopback address (127.0.0.1, ::1, localhost; the default in .streamlit/config.toml)
  the dashboard is open: only this machine can reach it.
* Bound to any other address (or to all interfaces), it requires a login: Streamlit's OIDC
  (`st.login`) when `[auth]` is configured in secrets.toml, otherwise a password from
  `st.secrets["dashboard_password"]` or the environment variable NSBI_DASHBOARD_PASSWORD.
  With neither configured it refuses to show anything.

The decision logic (`access_mode`, `password_ok`, `is_loopback`) is plain Python so it is
tested without a browser; `guard()` is the Streamlit part that `app.py` calls first.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Literal

import streamlit as st

from backend.settings import get_settings

PASSWORD_ENV = "NSBI_DASHBOARD_PASSWORD"
PASSWORD_SECRET = "dashboard_password"
AccessMode = Literal["open", "password", "oidc", "locked"]


def is_loopback(address: str | None) -> bool:
    """True for addresses only this machine can reach; None/''/0.0.0.0 (all interfaces) are not."""
    if not address:
        return False
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_mode(address: str | None, *, password: str | None, oidc: bool) -> AccessMode:
    """How the dashboard must be protected when bound to `address`."""
    if is_loopback(address):
        return "open"
    if oidc:
        return "oidc"
    if password:
        return "password"
    return "locked"


def password_ok(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an empty expected password never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _secret(key: str) -> object | None:
    try:
        return st.secrets.get(key)
    except Exception:  # no secrets.toml at all
        return None


def configured_password() -> str | None:
    value = _secret(PASSWORD_SECRET) or get_settings().dashboard.password  # NSBI_DASHBOARD_PASSWORD
    return str(value) if value else None


def oidc_configured() -> bool:
    auth = _secret("auth")
    return bool(auth) and hasattr(st, "login")


def bind_address() -> str | None:
    return st.get_option("server.address")


def guard() -> None:
    """Stop the script run unless this session may see the dashboard."""
    address = bind_address()
    mode = access_mode(address, password=configured_password(), oidc=oidc_configured())
    if mode == "open":
        return
    if mode == "locked":
        st.error(
            f"The dashboard is bound to {address or 'all interfaces'}, which is not a loopback address, "
            f"and no login is configured. Set {PASSWORD_ENV} (or `{PASSWORD_SECRET}` in "
            ".streamlit/secrets.toml, or an [auth] OIDC section), or bind to 127.0.0.1."
        )
        st.stop()
    if mode == "oidc":
        if not st.user.is_logged_in:
            st.title("nsbi-workbench")
            st.button("Log in", on_click=st.login, type="primary")
            st.stop()
        st.sidebar.button("Log out", on_click=st.logout)
        return
    if st.session_state.get("_nsbi_authenticated"):
        return
    st.title("nsbi-workbench")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="_nsbi_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        if password_ok(given, configured_password()):
            st.session_state["_nsbi_authenticated"] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()
