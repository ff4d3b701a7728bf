"""Dashboard uploads go through the bounded reader and the one validation path (issue 16).

Finding 4 said "dashboard uploads use the same reader" as `nsbi analysis validate`: a 250-byte
alias bomb there took 2.7 GB. Finding 7: non-finite values and duplicate keys slipped into
stored campaigns. Here the real Campaigns page (upload mode, the default) is given an alias
bomb, a file over the size cap, and files with NaN / infinity / duplicate keys: each is
refused quickly with a located problem, and no campaign is created -- not even by
"Create and launch".
"""

from __future__ import annotations

import time

import pytest
from dash_testkit import page
from streamlit.testing.v1 import AppTest

from dashboard import intents

BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)

BASE = (
    "name: upload-check\n"
    "samples:\n"
    "  S: {demo: {process: S, n: 200, seed: 1}}\n"
    "  B: {demo: {process: B, n: 200, seed: 3}}\n"
    "processes:\n"
    "  S: {sample: S, coefficient: mu}\n"
    "  B: {sample: B, coefficient: '1'}\n"
    "reference: B\n"
)


def _page() -> AppTest:
    at = AppTest.from_file(page("campaigns"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="a-mode").value == "Upload a file"  # uploads are the default
    return at


def _upload_and_click(at: AppTest, name: str, data: bytes, button: str) -> list[str]:
    at.file_uploader(key="a-upload").upload(name, data)
    at.run()
    at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return [str(e.value) for e in at.error]


def _campaigns() -> list:
    from backend import service

    return service.list_campaigns()


@pytest.mark.parametrize("button", ["a-check", "a-run"])
def test_an_uploaded_alias_bomb_is_refused_quickly_and_located(empty_db, button):
    at = _page()
    t0 = time.perf_counter()
    errors = _upload_and_click(at, "bomb.yaml", BOMB.encode(), button)
    assert time.perf_counter() - t0 < 10
    assert len(errors) == 1, errors
    assert "bomb.yaml:6: (file): the document expands to more than" in errors[0], errors
    assert "anchors and aliases" in errors[0]
    assert _campaigns() == []


def test_an_oversized_upload_is_refused_and_not_saved(empty_db, tmp_path):
    at = _page()
    big = (BASE + "# " + "x" * intents.MAX_ANALYSIS_BYTES + "\n").encode()
    errors = _upload_and_click(at, "big.yaml", big, "a-run")
    assert errors == ["big.yaml: larger than 1024 kB, not an analysis file"], errors
    assert not list((tmp_path / "analyses").glob("*big.yaml"))  # never written to disk
    assert _campaigns() == []


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ("data: {asimov: {mu: .nan}}\n", ":9: data.asimov.mu: expected a finite number, got"),
        ("poi: {init: .inf}\n", ":9: poi.init: expected a finite number, got"),
        ("backend: {budget_usd: .inf}\n", ":9: backend.budget_usd: expected a finite number"),
        ("reference: S\n", ":9: reference: duplicate key (first given on line 8)"),
    ],
    ids=["nan", "inf", "inf-budget", "duplicate-key"],
)
def test_non_finite_values_and_duplicate_keys_in_an_upload_create_nothing(
    empty_db, extra, fragment
):
    at = _page()
    errors = _upload_and_click(at, "a.yaml", (BASE + extra).encode(), "a-run")
    assert errors and any("a.yaml" + fragment in e for e in errors), errors
    assert _campaigns() == []


def test_a_valid_upload_still_creates_its_campaign(empty_db):
    """The control: the same base file is accepted (so the refusals above are about the
    hostile parts, not about the upload path itself)."""
    at = _page()
    errors = _upload_and_click(at, "a.yaml", BASE.encode(), "a-check")
    assert errors == [] and at.success and at.success[0].value == "a.yaml: valid."
