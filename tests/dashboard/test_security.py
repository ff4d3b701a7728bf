"""Dashboard security (issue 16).

* Finding 2: the analysis-file form opened any path on the server and echoed the file back
  (a .env with a password, an SSH key). Now a path names a file inside the analysis folder
  (NSBI_ANALYSIS_DIR, resolved: no `..`, absolute path or symlink out of it), uploads are the
  default, and problems never quote what the file holds.
* Finding 3: a websocket upgrade with `Host: rebind.evil.example` got 101 (DNS rebinding).
  Now the real Streamlit server refuses it (server.allowedHosts), as it refuses cross-origin
  websockets and uploads without the XSRF token; `nsbi up` sets the same options.
* Finding 6 (dashboard part): 300 wrong passwords in 1.9 s, then the right one worked, and no
  logout. Now wrong guesses lock the client out with exponential backoff and a global cap,
  and a signed-in session has a "Log out" button.
"""

from __future__ import annotations

import base64
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dash_browser import REPO, chromium_page, free_port, streamlit_server, wait_healthy
from dash_testkit import page
from streamlit.testing.v1 import AppTest

from dashboard import auth, intents

DEMO = REPO / "examples" / "analysis-demo.yaml"
SECRET = "hunter2-very-secret-value"
PASSWORD = "correct horse battery staple"
UPLOAD_MODE = "Upload a file"
FOLDER_MODE = "A file in the analysis folder"


# ============================================================================ finding 2


@pytest.fixture
def folder(empty_db, tmp_path) -> Path:
    """The default analysis folder (<NSBI_HOME>/analyses) with a valid file, and secrets
    next to it (outside the folder) that a path must never reach."""
    root = tmp_path / "analyses"
    (root / "sub").mkdir(parents=True)
    (root / "demo.yaml").write_text(DEMO.read_text())
    (root / "sub" / "demo.yaml").write_text(DEMO.read_text())
    (tmp_path / ".env").write_text(f"DB_PASSWORD={SECRET}\n")
    (tmp_path / "outside.yaml").write_text(f"password: {SECRET}\n")
    (tmp_path / "id_ed25519").write_text(
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "x.yaml").write_text(f"DB_PASSWORD={SECRET}\n")
    (root / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    (root / "env-link.yaml").symlink_to(tmp_path / ".env")
    (root / "linkdir").symlink_to(outside_dir)
    (root / "inner-link.yaml").symlink_to(root / "sub" / "demo.yaml")
    (root / "notes.txt").write_text("not yaml")
    return root


def test_the_default_analysis_folder_is_under_nsbi_home(nsbi_env, tmp_path, monkeypatch):
    from backend.settings import get_settings

    assert get_settings().analysis_dir == tmp_path / "analyses"
    assert intents.analysis_folder() == (tmp_path / "analyses").resolve()
    monkeypatch.setenv("NSBI_ANALYSIS_DIR", str(tmp_path / "mine"))
    assert get_settings().analysis_dir == tmp_path / "mine"


@pytest.mark.parametrize(
    "given",
    [
        "../.env",
        "../outside.yaml",
        "sub/../../outside.yaml",
        "../id_ed25519",
        "/etc/passwd",
        "{tmp}/.env",
        "{tmp}/outside.yaml",
        "link.yaml",  # a symlink out of the folder
        "env-link.yaml",
        "linkdir/x.yaml",  # through a symlinked folder
        "notes.txt",  # inside, but not an analysis file
        ".",
        "",
        "missing.yaml",
    ],
)
def test_paths_outside_the_folder_are_refused_without_reading_them(folder, tmp_path, given):
    given = given.format(tmp=tmp_path)
    with pytest.raises(intents.AnalysisPathError) as info:
        intents.resolve_analysis_path(given)
    assert SECRET not in str(info.value)


def test_files_inside_the_folder_resolve(folder, tmp_path, monkeypatch):
    assert intents.resolve_analysis_path("demo.yaml") == folder / "demo.yaml"
    assert intents.resolve_analysis_path(" sub/demo.yaml ") == folder / "sub" / "demo.yaml"
    assert intents.resolve_analysis_path(str(folder / "demo.yaml")) == folder / "demo.yaml"
    assert intents.resolve_analysis_path("inner-link.yaml") == folder / "sub" / "demo.yaml"
    assert intents.analysis_files() == ["demo.yaml", "inner-link.yaml", "sub/demo.yaml"]
    # the folder itself may be a symlink (NSBI_ANALYSIS_DIR); containment is checked resolved
    alias = tmp_path / "alias"
    alias.symlink_to(folder)
    monkeypatch.setenv("NSBI_ANALYSIS_DIR", str(alias))
    assert intents.resolve_analysis_path("demo.yaml") == folder / "demo.yaml"
    with pytest.raises(intents.AnalysisPathError):
        intents.resolve_analysis_path("../outside.yaml")


def test_problems_never_quote_what_the_file_holds(folder, tmp_path):
    from backend import service

    leak = folder / "leak.yaml"
    leak.write_text(f"DB_PASSWORD={SECRET}\n")
    key = folder / "key.yaml"
    key.write_text((tmp_path / "id_ed25519").read_text())
    odd = folder / "odd.yaml"
    odd.write_text(f"name: x\nsamples: '{SECRET} with spaces'\npoi: {{bounds: [5, {SECRET}]}}\n")
    for path in (leak, key, odd):
        raw = service.analysis_file_problems(str(path))
        shown = intents.analysis_problems(str(path))
        assert len(shown) == len(raw) > 0
        assert all(s.split(": ", 1)[0] == r.split(": ", 1)[0] for s, r in zip(shown, raw))
        assert SECRET not in "\n".join(shown), shown
    # located (file, line, key path), with the value the check found replaced by …
    (problem,) = intents.analysis_problems(str(leak))
    assert problem.startswith(f"{leak}:1: (top level): ") and problem.endswith("…"), problem


def test_redaction_keeps_names_and_yaml_syntax_hints():
    r = intents.redact_problem
    assert r("a.yaml:3: reference: 'Q' is not a process; processes: S, B") == (
        "a.yaml:3: reference: 'Q' is not a process; processes: S, B"
    )
    assert r("a.yaml:1: widht: unknown key 'widht'; allowed keys: width") == (
        "a.yaml:1: widht: unknown key 'widht'; allowed keys: width"
    )
    assert r("a.yaml:3: (file): not valid YAML: expected ',' or ']', but got ':'") == (
        "a.yaml:3: (file): not valid YAML: expected ',' or ']', but got ':'"
    )
    assert r("a.yaml:2: x: expected a number, got a string 'a; b'; see docs") == (
        "a.yaml:2: x: expected a number, got a string …; see docs"
    )
    assert r("a.yaml:2: x: expected a mapping, got a list") == (
        "a.yaml:2: x: expected a mapping, got a list"
    )
    assert r("a.yaml:2: bounds: expected [low, high], got [5, 1]") == (
        "a.yaml:2: bounds: expected [low, high], got …"
    )
    assert r("a.yaml:2: p: only local files can be read, got 'gs://b/x'; copy them") == (
        "a.yaml:2: p: only local files can be read, got …; copy them"
    )
    assert r("a.yaml:4: e: 'mu * secret stuff' is not finite") == "a.yaml:4: e: '…' is not finite"
    # a value the check cut short (no closing quote) is cut too; an apostrophe is not a quote
    assert r("a.yaml:1: x: value 'abc def... is odd") == "a.yaml:1: x: value '…"
    assert r("a.yaml:1: x: got a string '-----BEGIN KEY abc...") == "a.yaml:1: x: got a string …"
    assert r("a.yaml:1: x: unknown key 'widht'; don't") == "a.yaml:1: x: unknown key 'widht'; don't"


def _page() -> AppTest:
    at = AppTest.from_file(page("campaigns"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> str:
    """Every text the page shows (messages, markdown, captions, widget labels and values)."""
    parts: list[str] = []
    for kind in ("error", "warning", "success", "info", "markdown", "caption", "text", "code"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(e.value) for e in at.exception]
    parts += [f"{w.label}={w.value}" for w in at.text_input]
    return "\n".join(parts)


def test_uploads_are_the_default_and_the_path_field_is_confined(folder, tmp_path):
    """Reproduces the finding: before, `<path>/.env` + Check showed the password."""
    from backend import service

    at = _page()
    assert at.radio(key="a-mode").value == UPLOAD_MODE
    assert not [w for w in at.text_input if w.key == "a-path"]  # no path field by default
    at.radio(key="a-mode").set_value(FOLDER_MODE).run()
    assert str(folder) in _shown(at)  # the form says which folder it reads
    for given in (str(tmp_path / ".env"), "../.env", "link.yaml", "linkdir/x.yaml", "leak.yaml"):
        if given == "leak.yaml":
            (folder / "leak.yaml").write_text(f"DB_PASSWORD={SECRET}\n")
        at.text_input(key="a-path").set_value(given).run()
        at.button(key="a-check").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.error, given
        assert SECRET not in _shown(at), (given, _shown(at))
    assert at.error[0].value.startswith("leak.yaml:1:") or "/leak.yaml:1:" in at.error[0].value
    assert at.error[0].value.endswith("…")  # located problem, no value
    at.button(key="a-run").click().run()
    assert SECRET not in _shown(at)
    assert service.list_campaigns() == []


def test_an_uploaded_secret_is_not_echoed_either(folder):
    at = _page()
    at.file_uploader(key="a-upload").upload("x.yaml", f"DB_PASSWORD={SECRET}\n".encode())
    at.run()
    at.button(key="a-check").click().run()
    assert at.error and "x.yaml:1: (top level)" in at.error[0].value
    assert SECRET not in _shown(at)


# ============================================================================ finding 3


def ws_upgrade(port: int, host: str, origin: str | None) -> int:
    """Send a websocket upgrade for Streamlit's stream over a raw socket; the HTTP status."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: streamlit",
        *([f"Origin: {origin}"] if origin else []),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = s.recv(4096).split(b"\r\n", 1)[0]
    return int(status.split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """`streamlit run app.py` with the project's .streamlit/config.toml, on 127.0.0.1."""
    home = tmp_path_factory.mktemp("dash-home")
    with streamlit_server(home) as url:
        yield url, int(url.rsplit(":", 1)[1])


def test_dns_rebinding_websocket_is_refused(server):
    """Reproduces the finding: the same request got 101 Switching Protocols before."""
    _, port = server
    evil = f"rebind.evil.example:{port}"
    assert ws_upgrade(port, evil, f"http://{evil}") == 403
    assert ws_upgrade(port, "rebind.evil.example", None) == 403
    assert ws_upgrade(port, f"127.0.0.1.rebind.evil.example:{port}", None) == 403


def test_websockets_from_the_allowed_names_are_accepted(server):
    _, port = server
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert ws_upgrade(port, host, f"http://{host}") == 101, host


def test_cross_origin_websocket_and_requests_are_refused(server):
    url, port = server
    assert ws_upgrade(port, f"127.0.0.1:{port}", "http://evil.example") == 403
    # no CORS grant for another origin
    req = urllib.request.Request(f"{url}/_stcore/health", headers={"Origin": "http://evil.example"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers.get("Access-Control-Allow-Origin") in (None, url)
    # an upload without the XSRF token (what a cross-site form post would be) is refused
    put = urllib.request.Request(
        f"{url}/_stcore/upload_file/session/file", data=b"x: 1\n", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(put, timeout=10)
    assert info.value.code == 403


def test_up_sets_allowed_hosts_from_the_bind_address_and_the_setting(monkeypatch):
    from backend.commands.up import _dashboard_command, allowed_hosts

    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("10.1.2.3")[-1] == "10.1.2.3"
    everywhere = allowed_hosts("0.0.0.0")
    assert socket.gethostname().lower() in everywhere and "127.0.0.1" in everywhere
    assert allowed_hosts("0.0.0.0", ("Dash.Example.org",)) == [
        "localhost",
        "127.0.0.1",
        "::1",
        "dash.example.org",
    ]
    cmd = _dashboard_command("127.0.0.1", 8501, ["localhost", "dash.example.org"])
    pairs = list(zip(cmd, cmd[1:]))
    assert ("--server.enableXsrfProtection", "true") in pairs
    assert ("--server.enableCORS", "true") in pairs
    assert [v for k, v in pairs if k == "--server.allowedHosts"] == [
        "localhost",
        "dash.example.org",
    ]


@pytest.mark.slow
def test_nsbi_up_refuses_dns_rebinding(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NSBI_STORE")}
    env.update(NSBI_HOME=str(tmp_path / "var"), NSBI_DASHBOARD_ALLOWED_HOSTS="dash.example.org")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up", "--no-controller", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=120)
        evil = f"rebind.evil.example:{port}"
        assert ws_upgrade(port, evil, f"http://{evil}") == 403
        ok = f"dash.example.org:{port}"
        assert ws_upgrade(port, ok, f"http://{ok}") == 101
        assert ws_upgrade(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    finally:
        os.killpg(proc.pid, 2)
        out, _ = proc.communicate(timeout=60)
    assert "dashboard answers to host names localhost, 127.0.0.1, ::1, dash.example.org" in out


# ============================================================================ finding 6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_backs_off_exponentially_per_client():
    clock = Clock()
    lim = auth.LoginLimiter(clock=clock)
    me, other = ["ip:10.0.0.1", "session:a"], ["ip:10.0.0.2", "session:b"]
    for _ in range(auth.FREE_FAILURES):
        assert lim.wait_s(me) == 0
        assert lim.failed(me) == 0
    waits = []
    for _ in range(5):
        waits.append(lim.failed(me))
        assert lim.wait_s(me) == waits[-1]
        clock.now += waits[-1]  # a guess as soon as allowed
        assert lim.wait_s(me) == 0
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert lim.wait_s(other) == 0  # another client is not affected
    for _ in range(30):
        lim.failed(me)
    assert lim.wait_s(me) == auth.BACKOFF_MAX_S  # capped
    lim.succeeded(me)
    assert lim.wait_s(me) == 0
    # the count is forgotten an hour after the last wrong guess
    for _ in range(auth.FREE_FAILURES + 1):
        lim.failed(other)
    clock.now += auth.FORGET_AFTER_S + 1
    assert lim.wait_s(other) == 0 and lim.failed(other) == 0


def test_limiter_global_cap_stops_distributed_guessing():
    clock = Clock()
    lim = auth.LoginLimiter(clock=clock)
    for i in range(auth.GLOBAL_MAX_FAILURES):  # every guess from a new address and session
        clock.now += 1
        lim.failed([f"ip:10.1.{i // 250}.{i % 250}", f"session:{i}"])
    fresh = ["ip:192.0.2.99", "session:new"]
    assert lim.wait_s(fresh) == pytest.approx(auth.GLOBAL_WINDOW_S - auth.GLOBAL_MAX_FAILURES + 1)
    clock.now += auth.GLOBAL_WINDOW_S
    assert lim.wait_s(fresh) == 0


def test_limiter_memory_is_bounded():
    lim = auth.LoginLimiter(max_clients=100, global_max=10**9)
    for i in range(1000):
        lim.failed([f"ip:{i}"])
    assert len(lim._clients) == 100


@pytest.fixture
def password_app(empty_db, monkeypatch) -> Iterator[None]:
    """app.py as served on a non-loopback address with a password (AppTest runs its script
    in this process, so it shares `auth.LIMITER` with the test)."""
    from streamlit import config

    monkeypatch.setenv("NSBI_DASHBOARD_PASSWORD", PASSWORD)
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    auth.LIMITER.reset()
    try:
        yield
    finally:
        config.set_option("server.address", before)
        auth.LIMITER.reset()


def _app() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _login(at: AppTest, password: str) -> None:
    at.text_input(key="_nsbi_password").set_value(password)
    at.button(key="FormSubmitter:login-Log in").click().run()


def _signed_in(at: AppTest) -> bool:
    return bool(at.session_state[auth.AUTH_KEY]) if auth.AUTH_KEY in at.session_state else False


def test_many_wrong_passwords_lock_the_login(password_app):
    """Reproduces the finding: 300 wrong guesses in 1.9 s, then the right one worked."""
    at = _app()
    t0 = time.perf_counter()
    for i in range(300):
        _login(at, f"guess-{i}")
    elapsed = time.perf_counter() - t0
    compared = len(auth.LIMITER._recent)
    # 5 free guesses, then one more each time the backoff (1, 2, 4, ... s) has run out
    assert compared <= auth.FREE_FAILURES + math.ceil(math.log2(elapsed + 1)) + 1, compared
    _login(at, PASSWORD)
    assert not _signed_in(at)
    assert at.error and at.error[0].value.startswith("Too many wrong passwords: try again in")
    print(f"\n300 guesses in {elapsed:.2f} s: {compared} compared ({compared / elapsed:.1f}/s)")


def test_login_after_the_lockout_and_logout(password_app):
    at = _app()
    for i in range(auth.FREE_FAILURES):
        _login(at, f"guess-{i}")
        assert [e.value for e in at.error] == ["Wrong password."]
    _login(at, "one more")
    assert at.error[0].value == "Wrong password. Too many wrong passwords: try again in 1 s."
    _login(at, PASSWORD)  # right, but locked: refused without being compared
    assert not _signed_in(at) and at.error[0].value.startswith("Too many wrong passwords")
    assert sorted(auth.LIMITER._clients)[0] == "ip:local"  # AppTest connects like localhost
    time.sleep(auth.LIMITER.wait_s(list(auth.LIMITER._clients)) + 0.05)
    _login(at, PASSWORD)
    assert _signed_in(at), [e.value for e in at.error]
    assert [t.value for t in at.title] == ["Campaigns"]
    assert auth.LIMITER.wait_s(["ip:local"]) == 0  # a successful login clears the client
    at.sidebar.button(key="_nsbi_logout").click().run()
    assert not _signed_in(at)
    assert [w.key for w in at.text_input] == ["_nsbi_password"]
    assert [t.value for t in at.title] == ["nsbi-workbench"]


def test_the_open_loopback_dashboard_has_no_login_and_no_logout(empty_db):
    at = _app()
    assert [t.value for t in at.title] == ["Campaigns"]
    assert not [b for b in at.sidebar.button if b.key == "_nsbi_logout"]


@pytest.mark.browser
def test_browser_lockout_login_and_logout(tmp_path):
    """The real server on all interfaces (login required), driven by Chromium via 127.0.0.1."""
    from backend.db import get_engine, init_db

    init_db(get_engine(f"sqlite:///{tmp_path / 'nsbi.db'}")).dispose()
    env = {"NSBI_DASHBOARD_PASSWORD": PASSWORD}
    with streamlit_server(tmp_path, extra_env=env, address="0.0.0.0") as url, chromium_page() as pg:
        pg.goto(url)
        box = pg.get_by_label("Password", exact=True)
        log_in = pg.get_by_role("button", name="Log in")
        # wrong guesses until the second lockout (2 s) starts: 5 free, one after 1 s, one more
        second_lockout = pg.get_by_text("Too many wrong passwords: try again in 2 s", exact=False)
        deadline = time.monotonic() + 60
        while not second_lockout.count():
            assert time.monotonic() < deadline, "no lockout"
            box.fill(f"guess-{time.monotonic()}")
            log_in.click()
            time.sleep(0.3)
        box.fill(PASSWORD)
        log_in.click()  # the right password, but locked: refused without being compared
        pg.get_by_text(re.compile(r"^Too many wrong passwords: try again in")).wait_for()
        assert pg.locator("h1", has_text="Campaigns").count() == 0
        time.sleep(2.1)
        box.fill(PASSWORD)
        log_in.click()
        pg.locator("h1", has_text="Campaigns").wait_for()
        pg.get_by_role("button", name="Log out").click()
        pg.get_by_label("Password", exact=True).wait_for()
        assert pg.locator("h1", has_text="Campaigns").count() == 0
