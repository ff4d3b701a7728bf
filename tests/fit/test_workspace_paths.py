"""A workspace file reads arrays only from its own folder (issue 16, finding 8).

The array references of a workspace JSON ({"file": "ws.arrays/ratio_S.npy"}) used to be
joined to the file's folder as given, so an absolute path or '..' read any .npy/.npz on the
machine. They are refused with a message naming the key and the path.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sbi_engine.fit import Workspace, WorkspaceError
from sbi_engine.fit.workspace import array_path

pytestmark = pytest.mark.filterwarnings("ignore:.*ratios average to:UserWarning")


@pytest.fixture
def saved(tmp_path):
    n = 20
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
        processes={
            "S": {"yield": 10.0, "coefficient": "mu", "ratio": np.linspace(0.5, 2.0, n)},
            "B": {"yield": 90.0, "coefficient": "1", "ratio": np.ones(n)},
        },
        weights=np.full(n, 0.5),
    )
    folder = tmp_path / "analysis"
    folder.mkdir()
    path = ws.save(folder / "ws.json")
    return path


def _point_ratio_at(path, target: str) -> None:
    doc = json.loads(path.read_text())
    doc["processes"][0]["ratio"]["file"] = target
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "nested-dotdot", "npz-dotdot"])
def test_absolute_and_dotdot_array_paths_are_refused(saved, tmp_path, kind):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    np.save(outside / "stolen.npy", np.full(20, 7.0))
    np.savez(outside / "stolen.npz", r=np.full(20, 7.0))
    target = {
        "absolute": str(outside / "stolen.npy"),
        "dotdot": "../elsewhere/stolen.npy",
        "nested-dotdot": "ws.arrays/../../elsewhere/stolen.npy",
        "npz-dotdot": "../elsewhere/stolen.npz",
    }[kind]
    if kind == "npz-dotdot":
        doc = json.loads(saved.read_text())
        doc["processes"][0]["ratio"] = {"file": target, "key": "r"}
        saved.write_text(json.dumps(doc))
    else:
        _point_ratio_at(saved, target)
    with pytest.raises(WorkspaceError) as err:
        Workspace.load(saved)
    msg = str(err.value)
    assert str(saved) in msg and "processes" in msg  # the file and the key path
    assert repr(target) in msg and "relative to the workspace's folder" in msg


def test_relative_paths_below_the_folder_still_load(saved):
    folder = saved.parent
    (folder / "more").mkdir()
    doc = json.loads(saved.read_text())
    shutil.copy(folder / doc["processes"][0]["ratio"]["file"], folder / "more" / "r.npy")
    _point_ratio_at(saved, "more/r.npy")
    ws = Workspace.load(saved)
    np.testing.assert_allclose(ws.processes[0].ratio, np.linspace(0.5, 2.0, 20))


def test_array_path_rules():
    from pathlib import Path

    base = Path("/data/ws")
    assert array_path(base, "ws.arrays/a.npy", "w") == base / "ws.arrays/a.npy"
    assert array_path(base, "a..b.npy", "w") == base / "a..b.npy"  # '..' inside a name is fine
    for bad in (
        "/etc/x.npy",
        "../x.npy",
        "a/../../x.npy",
        "C:/x.npy",
        "\\\\srv\\x.npy",
        "a\\..\\..\\x.npy",
    ):
        with pytest.raises(WorkspaceError, match="must be a path relative"):
            array_path(base, bad, "ws.json: processes.0.ratio")
