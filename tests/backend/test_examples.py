"""The example campaign configs shipped under examples/ stay valid and expand as documented."""

from __future__ import annotations

from pathlib import Path

from backend.campaigns import expand, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_campaign_example_expands_to_ratio_tasks_members_and_fit_stage():
    plans = expand(load_config(EXAMPLES / "campaign-demo.yaml"))
    train = [p for p in plans if p.kind == "train"]
    assert sorted({p.task for p in train}) == [
        "SBI_vs_B",
        "S_vs_B",
        "m4l_scale_down_B",
        "m4l_scale_up_B",
    ]
    members = {
        t: sorted(m for p in train if p.task == t for m in p.members)
        for t in {p.task for p in train}
    }
    assert all(m == list(range(8)) for m in members.values()), members
    assert [p.kind for p in plans if p.kind != "train"] == ["fit", "impacts", "scan"]
    fit = next(p for p in plans if p.kind == "fit")
    assert set(fit.depends_on) == {p.name for p in train}
