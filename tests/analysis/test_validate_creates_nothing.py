"""`nsbi analysis validate` creates nothing (issue 16, finding 8).

The docs promise that validation creates nothing, but the job preview computed the content
keys of file samples and wrote the checksum memo, <NSBI_HOME>/checksums.json (creating
NSBI_HOME on the way). The listing of a fresh folder holding the analysis file, its samples
and the (absent) NSBI_HOME must be the same before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml


def _listing(folder: Path) -> list[tuple[str, int]]:
    out = []
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            out.append((str(p.relative_to(folder)), p.stat().st_mtime_ns))
    return sorted(out)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A folder with Parquet samples and an analysis file over them; NSBI_HOME inside it but
    not created; the default database and store (both under NSBI_HOME)."""
    from backend.analysis import cache
    from sbi_engine.problems import get_problem

    problem = get_problem("low_stats")
    problem.write_samples(tmp_path / "samples", events_scale=0.5)
    cfg = problem.analysis_config(tmp_path / "samples", relative_to=tmp_path)
    (tmp_path / "analysis.yaml").write_text(yaml.safe_dump(cfg))
    for var in ("DATABASE_URL", "NSBI_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cache.clear_checksum_memo()  # hash the samples afresh, as a new process would
    yield tmp_path
    cache.clear_checksum_memo()


@pytest.mark.parametrize("extra", [[], ["--no-data"]], ids=["with-data", "no-data"])
def test_validate_leaves_the_folder_as_it_was(fresh, capsys, extra):
    from backend.cli import main

    before = _listing(fresh)
    assert main(["analysis", "validate", *extra, "analysis.yaml"]) == 0
    out = capsys.readouterr().out
    assert "valid analysis 'benchmark-low-stats'" in out and "would run 7 jobs" in out
    assert _listing(fresh) == before
    assert not (fresh / "home").exists()  # not even NSBI_HOME or checksums.json


def test_validate_writes_nothing_into_an_existing_home(fresh, capsys):
    from backend.cli import main

    (fresh / "home").mkdir()
    before = _listing(fresh)
    assert main(["analysis", "validate", "analysis.yaml"]) == 0
    assert _listing(fresh) == before
    assert not (fresh / "home" / "checksums.json").exists()


def test_the_memo_file_is_still_written_outside_validation(fresh):
    from backend.analysis import cache

    digest = cache.file_checksum(fresh / "samples" / "S.parquet")
    memo = fresh / "home" / cache.MEMO_FILE
    assert memo.exists() and digest in memo.read_text()
    cache.clear_checksum_memo()
    memo.unlink()
    with cache.memo_read_only():
        assert cache.file_checksum(fresh / "samples" / "S.parquet") == digest
    assert not memo.exists()
