"""The Campaigns page starts a campaign from an analysis file; a bad file shows its problems."""

from __future__ import annotations

import subprocess
import sys

from dash_testkit import REPO, page
from streamlit.testing.v1 import AppTest

DEMO = REPO / "examples" / "analysis-demo.yaml"
FOLDER_MODE = "A file in the analysis folder"


def _page(folder_mode: bool = True) -> AppTest:
    at = AppTest.from_file(page("campaigns"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if folder_mode:  # uploads are the default; a path names a file in the analysis folder
        at.radio(key="a-mode").set_value(FOLDER_MODE).run()
    return at


def test_valid_analysis_file_creates_and_launches_campaign(empty_db, tmp_path):
    from backend import service

    folder = tmp_path / "analyses"
    folder.mkdir()
    (folder / "demo.yaml").write_text(DEMO.read_text())
    at = _page()
    at.text_input(key="a-path").set_value("demo.yaml")
    at.button(key="a-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    (c,) = service.list_campaigns()
    assert c.name == "offshell-demo" and c.status == "ACTIVE"
    assert c.counts["PENDING"] == c.n_jobs > 0  # nothing ran before: nothing reused
    prov = service.campaign_analysis(c.id)
    assert prov["analysis"]["path"] == str(folder / "demo.yaml")
    assert len(prov["analysis"]["file_hash"]) == 64
    assert at.dataframe[0].value["id"].tolist() == [c.id]  # listed like any other campaign


def test_malformed_analysis_file_shows_problems_and_creates_nothing(empty_db, tmp_path):
    from backend import service

    bad = tmp_path / "analyses" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(
        DEMO.read_text().replace("reference: B", "reference: Q").replace("width: 64", "width: -3")
    )
    at = _page()
    at.text_input(key="a-path").set_value("bad.yaml")
    at.button(key="a-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("reference" in e and "bad.yaml:" in e for e in errors), errors
    assert any("width" in e for e in errors), errors
    assert service.list_campaigns() == []


def test_missing_file_and_empty_input_are_reported(empty_db, tmp_path):
    from backend import service

    at = _page(folder_mode=False)
    at.button(key="a-check").click().run()
    assert [e.value for e in at.error] == [
        "upload an analysis file (or choose “A file in the analysis folder”)"
    ]
    at.radio(key="a-mode").set_value(FOLDER_MODE).run()
    at.button(key="a-check").click().run()
    assert [e.value for e in at.error] == [
        "give the name of an analysis file in the analysis folder"
    ]
    at.text_input(key="a-path").set_value("nope.yaml").run()
    at.button(key="a-run").click().run()
    assert at.error and "nope.yaml: no such file" in at.error[0].value
    assert service.list_campaigns() == []


def test_an_upload_creates_and_launches_campaign(empty_db, tmp_path):
    from backend import service

    at = _page(folder_mode=False)
    at.file_uploader(key="a-upload").upload("mine.yaml", DEMO.read_bytes(), "application/yaml")
    at.run()
    at.button(key="a-check").click().run()
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.success] == ["mine.yaml: valid."]
    at.button(key="a-run").click().run()
    assert not at.error, [e.value for e in at.error]
    (c,) = service.list_campaigns()
    assert c.name == "offshell-demo"
    assert service.campaign_analysis(c.id)["analysis"]["path"].startswith(
        str(tmp_path / "analyses")
    )


def test_dashboard_analysis_path_imports_no_jax(tmp_path):
    """What the page calls (validate + create) must not pull JAX into the dashboard process."""
    code = (
        "import sys, os\n"
        "from dashboard import intents\n"
        "from backend.db import get_engine, init_db\n"
        "init_db(get_engine())\n"
        f"assert intents.analysis_problems({str(DEMO)!r}) == []\n"
        f"cid = intents.create_from_analysis({str(DEMO)!r}, launch=False)\n"
        "bad = [m for m in sys.modules if m == 'jax' or m.startswith('google.cloud')]\n"
        "assert not bad, bad\n"
        "print(cid)\n"
    )
    env = {"NSBI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_uploaded_file_is_kept_under_home_and_validates(empty_db, tmp_path):
    from dashboard import intents

    data = DEMO.read_bytes()
    path = intents.save_upload("my analysis.yaml", data)
    assert path == intents.save_upload("my analysis.yaml", data)  # same content: same file
    assert (
        path.startswith(str(tmp_path))
        and "/analyses/" in path
        and path.endswith("-my analysis.yaml")
    )
    assert intents.analysis_problems(path) == []
    other = intents.save_upload("x.yaml", data.replace(b"reference: B", b"reference: C"))
    assert other != path and any("reference" in p for p in intents.analysis_problems(other))
