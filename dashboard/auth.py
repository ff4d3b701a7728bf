"""Access guard: open on loopback, a login everywhere else, so the dashboard is never open by accident.

* Bound to a loopback address (127.0.0.1, ::1, localhost; the default in .streamlit/config.toml)
  the dashboard is open: only this machine can reach it.
* Bound to any other address (or to all interfaces), it requires a login: Streamlit's OIDC
  (`st.login`) when `[auth]` is configured in secrets.toml, otherwise a password from
  `st.secrets["dashboard_password"]` or the environment variable NSBI_DASHBOARD_PASSWORD.
  With neither configured it refuses to show anything.

Password logins are rate limited in the process (`LoginLimiter`, one per server, shared by
every session): a client (its IP address, and its session) gets FREE_FAILURES wrong guesses,
then waits 1, 2, 4, ... seconds (at most 15 minutes) after each further one, and
GLOBAL_MAX_FAILURES wrong guesses from all clients together within GLOBAL_WINDOW_S lock the
password login for everyone until the window has passed. While locked, a guess is refused
without being compared, the right password included. A signed-in session has a "Log out"
button in the sidebar (password and OIDC).

The decision logic (`access_mode`, `password_ok`, `is_loopback`, `LoginLimiter`) is plain
Python so it is tested without a browser; `guard()` is the Streamlit part that `app.py`
calls first.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import streamlit as st

from backend.settings import get_settings

PASSWORD_ENV = "NSBI_DASHBOARD_PASSWORD"
PASSWORD_SECRET = "dashboard_password"
AccessMode = Literal["open", "password", "oidc", "locked"]
AUTH_KEY = "_nsbi_authenticated"


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


FREE_FAILURES = 5  # wrong guesses per client before the backoff starts
BACKOFF_BASE_S = 1.0  # the first lockout; doubled with each further wrong guess
BACKOFF_MAX_S = 900.0  # the longest lockout of one client
FORGET_AFTER_S = 3600.0  # a client's count is forgotten this long after its last wrong guess
GLOBAL_MAX_FAILURES = 50  # wrong guesses from all clients together ...
GLOBAL_WINDOW_S = 600.0  # ... within this window lock the password login for everyone
MAX_TRACKED_CLIENTS = 10_000  # memory bound: the oldest entries go first


@dataclass
class _Client:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginLimiter:
    """Failed password logins, counted per client key and globally, in this process.

    Thread-safe (Streamlit runs each session's script on its own thread). `wait_s(keys)` is
    how long the clients behind `keys` must wait before a guess is even compared;
    `failed(keys)` books a wrong guess and returns the new wait; `succeeded(keys)` clears them.
    """

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        base_s: float = BACKOFF_BASE_S,
        max_s: float = BACKOFF_MAX_S,
        forget_after_s: float = FORGET_AFTER_S,
        global_max: int = GLOBAL_MAX_FAILURES,
        global_window_s: float = GLOBAL_WINDOW_S,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.forget_after_s = forget_after_s
        self.global_max = global_max
        self.global_window_s = global_window_s
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._recent: deque[float] = deque()  # times of wrong guesses, all clients

    def _prune(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - self.global_window_s:
            self._recent.popleft()
        stale = [
            k
            for k, c in self._clients.items()
            if c.locked_until <= now and c.last_failure <= now - self.forget_after_s
        ]
        for k in stale:
            del self._clients[k]

    def _wait(self, keys: Iterable[str], now: float) -> float:
        wait = 0.0
        if len(self._recent) >= self.global_max:
            wait = self._recent[0] + self.global_window_s - now
        for k in keys:
            c = self._clients.get(k)
            if c is not None:
                wait = max(wait, c.locked_until - now)
        return max(0.0, wait)

    def wait_s(self, keys: Iterable[str]) -> float:
        """Seconds before a guess from these clients is compared again (0.0: now)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            return self._wait(keys, now)

    def failed(self, keys: Iterable[str]) -> float:
        """Book one wrong guess for each key; the wait that follows it."""
        keys = list(keys)
        with self._lock:
            now = self.clock()
            self._prune(now)
            self._recent.append(now)
            for k in keys:
                c = self._clients.pop(k, None) or _Client()  # re-inserted: newest last
                c.failures += 1
                c.last_failure = now
                over = c.failures - self.free_failures
                if over > 0:
                    c.locked_until = now + min(self.max_s, self.base_s * 2 ** min(over - 1, 60))
                self._clients[k] = c
            while len(self._clients) > self.max_clients:
                del self._clients[next(iter(self._clients))]
            return self._wait(keys, now)

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for k in keys:
                self._clients.pop(k, None)

    def reset(self) -> None:
        with self._lock:
            self._clients.clear()
            self._recent.clear()


LIMITER = LoginLimiter()  # one per server process: every session shares it


def client_keys() -> list[str]:
    """Who is guessing: the connection's IP address and the browser session."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    ip = st.context.ip_address  # None through localhost
    keys = [f"ip:{ip if isinstance(ip, str) and ip else 'local'}"]
    if ctx is not None:
        keys.append(f"session:{ctx.session_id}")
    return keys


def _logout() -> None:
    st.session_state.pop(AUTH_KEY, None)


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
        st.sidebar.button("Log out", on_click=st.logout, key="_nsbi_logout")
        return
    if st.session_state.get(AUTH_KEY):
        st.sidebar.button("Log out", on_click=_logout, key="_nsbi_logout", icon=":material/logout:")
        return
    st.title("nsbi-workbench")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="_nsbi_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        keys = client_keys()
        wait = LIMITER.wait_s(keys)
        if wait > 0:  # refused without comparing: the right password does not help now
            st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.")
            st.stop()
        if password_ok(given, configured_password()):
            LIMITER.succeeded(keys)
            st.session_state[AUTH_KEY] = True
            st.rerun()
        wait = LIMITER.failed(keys)
        st.error(
            "Wrong password."
            + (f" Too many wrong passwords: try again in {math.ceil(wait)} s." if wait else "")
        )
    st.stop()
