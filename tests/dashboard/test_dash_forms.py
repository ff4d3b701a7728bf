"""The campaign form as data: values -> config, errors filed under the field they belong to."""

from __future__ import annotations

import pytest

from backend.campaigns import CampaignConfigError, expand, validate_config
from dashboard import forms


def test_default_values_build_a_config_the_backend_accepts():
    result = forms.build_config(forms.default_values())
    assert result.ok, result.errors
    cfg = validate_config(result.config)
    tasks = {p.task for p in expand(cfg) if p.kind == "train"}
    assert (
        tasks
        == set(forms.ratio_task_names(result.config))
        == {"S_vs_B", "SBI_vs_B", "m4l_scale_up_B", "m4l_scale_down_B"}
    )


def test_grid_lines_become_a_training_grid():
    grid, errors = forms.parse_grid("learning_rate = 1e-3, 3e-4\n# comment\nwidth = 32, 64\n")
    assert errors == [] and grid == {"learning_rate": [1e-3, 3e-4], "width": [32, 64]}
    values = forms.default_values() | {"grid": "learning_rate = 1e-3, 3e-4\nwidth = 32, 64"}
    cfg = validate_config(forms.build_config(values).config)
    n_train = sum(1 for p in expand(cfg) if p.kind == "train")
    # 4 tasks x 4 grid points x (ensemble 4 / 2 members per job)
    assert n_train == 4 * 4 * 2


@pytest.mark.parametrize(
    "change,field,text",
    [
        ({"name": " "}, "name", "name"),
        (
            {"samples": [{"process": "S", "source": "demo", "n": 10, "seed": 1}]},
            "samples",
            "at least two",
        ),
        (
            {
                "samples": [
                    {"process": "X", "source": "demo", "n": 10, "seed": 1},
                    {"process": "B", "source": "demo", "n": 10, "seed": 2},
                ]
            },
            "samples",
            "demo simulator",
        ),
        ({"reference": "nope"}, "reference", "reference"),
        ({"members_per_job": 9}, "ensemble_size", "between 1 and the ensemble size"),
        ({"grid": "colour = red"}, "grid", "unknown key 'colour'"),
        ({"launcher": "gce"}, "machine", "cloud machine type"),
        ({"launcher": "gce", "machine_type": "n1-standard-4"}, "zones", "zone"),
        ({"gpu_type": "nvidia-l4", "gpu_count": 0}, "machine", "GPU count is 0"),
        ({"fit": False, "impacts": True}, "stages", "need the fit stage"),
    ],
)
def test_form_errors_are_filed_by_field(change, field, text):
    result = forms.build_config(forms.default_values() | change)
    assert field in result.errors, result.errors
    assert any(text in m for m in result.errors[field])


def test_backend_errors_are_mapped_onto_fields():
    values = forms.default_values() | {
        "launcher": "gce",
        "machine_type": "no-such-machine",
        "zones": "us-central1-a",
    }
    result = forms.build_config(values)
    assert result.ok
    with pytest.raises(CampaignConfigError) as info:
        validate_config(result.config)
    filed = forms.file_backend_errors(info.value.errors)
    assert list(filed) == ["machine"] and "no-such-machine" in filed["machine"][0]
    assert (
        forms.field_for_path("training.params.width: 0 is less than the minimum of 1")
        == "architecture"
    )
    assert forms.field_for_path("systematics[0].process: 'Q' is not a process") == "systematics"
    assert forms.field_for_path("something else entirely") is None
