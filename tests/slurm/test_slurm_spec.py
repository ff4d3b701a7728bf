"""The slurm launcher's pure parts, no Slurm needed: options from the campaign config (and
their located errors), the batch script, Slurm's time format, states and outputs."""

from __future__ import annotations

import copy
import subprocess

import pytest

from backend.launchers import InstanceState, LauncherError, LaunchRequest, get_launcher
from backend.launchers.base import worker_hours
from backend.launchers.slurm_spec import (
    ArrayTask,
    SlurmOptions,
    build_script,
    map_state,
    parse_scontrol,
    parse_squeue,
    sbatch_options,
    slurm_time_seconds,
    slurm_time_text,
)


def slurm_config(**block):
    from backend.campaigns import DEMO_CONFIG

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["backend"]["launcher"] = "slurm"
    cfg["backend"]["slurm"] = block
    return cfg


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("5:30", 330),
        ("1:00:00", 3600),
        ("2-0", 172800),
        ("1-2:30", 95400),
        ("1-00:00:10", 86410),
    ],
)
def test_slurm_time_formats(text, seconds):
    assert slurm_time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1h", "1:2:3:4", "-5", "soon"])
def test_bad_slurm_times_are_refused(text):
    with pytest.raises(ValueError):
        slurm_time_seconds(text)


def test_time_text_rounds_up_to_minutes():
    assert slurm_time_text(61) == "00:02:00"
    assert slurm_time_text(3600) == "01:00:00"
    assert slurm_time_text(2 * 86400 + 60) == "2-00:01:00"


def test_the_config_accepts_a_slurm_block_and_fills_no_defaults_elsewhere():
    from backend.campaigns import DEMO_CONFIG, validate_config

    cfg = validate_config(
        slurm_config(
            partition="gpu",
            account="atlas",
            qos="normal",
            time_limit="2:00:00",
            gpu_type="a100",
            constraint="a100&ib",
            extra_sbatch=["--exclusive", "--mail-type=END"],
            gpu_hour_usd=0.5,
        )
    )
    assert cfg.launcher == "slurm" and cfg.backend["slurm"]["partition"] == "gpu"
    assert "slurm" not in validate_config(DEMO_CONFIG).backend  # other configs: unchanged


@pytest.mark.parametrize(
    ("block", "where", "says"),
    [
        ({"partition": "two words"}, "backend.slurm.partition", "one word"),
        ({"time_limit": "1h"}, "backend.slurm.time_limit", "not a Slurm time"),
        ({"time_limit": "5", "signal_before_s": 300}, "backend.slurm", "shorter than"),
        ({"extra_sbatch": ["--array=0-3"]}, "backend.slurm.extra_sbatch[0]", "set by the slurm"),
        ({"extra_sbatch": ["exclusive"]}, "backend.slurm.extra_sbatch[0]", "start with '-'"),
        ({"extra_sbatch": ["--x\n#SBATCH --y"]}, "backend.slurm.extra_sbatch[0]", "one sbatch"),
        ({"mem": "lots"}, "backend.slurm.mem", "pattern"),
        ({"gpu_hour_usd": -1}, "backend.slurm.gpu_hour_usd", ">= 0"),
        ({"nodes": 4}, "backend.slurm", "nodes"),
    ],
)
def test_bad_slurm_keys_are_located_errors(block, where, says):
    from backend.campaigns import CampaignConfigError, validate_config

    with pytest.raises(CampaignConfigError) as err:
        validate_config(slurm_config(**block))
    text = str(err.value)
    assert where in text and says in text, text


def test_sbatch_options_from_a_request():
    req = LaunchRequest(
        "c",
        "j",
        1,
        "file:///s",
        gpus=2,
        options={
            "partition": "gpu",
            "account": "atlas",
            "qos": "high",
            "time_limit": "30",
            "gpu_type": "a100",
            "constraint": "ib",
            "mem": "16G",
            "cpus_per_task": 8,
            "signal_before_s": 120,
            "extra_sbatch": ["--exclusive"],
        },
    )
    assert sbatch_options(req) == (
        "--no-requeue",
        "--partition=gpu",
        "--account=atlas",
        "--qos=high",
        "--constraint=ib",
        "--mem=16G",
        "--cpus-per-task=8",
        "--gres=gpu:a100:2",
        "--time=00:30:00",
        "--signal=B:TERM@120",
        "--exclusive",
    )
    # no campaign limit: the job's own (rounded up to a minute), the default warning time
    own = LaunchRequest("c", "j", 1, "u", time_limit_s=3000)
    assert "--time=00:50:00" in sbatch_options(own)
    assert "--signal=B:TERM@300" in sbatch_options(own)
    assert not any(
        o.startswith(("--time", "--signal", "--gres"))
        for o in sbatch_options(LaunchRequest("c", "j", 1, "u"))
    )


def test_options_refuse_what_validation_would(tmp_path):
    with pytest.raises(LauncherError, match="partition"):
        SlurmOptions.from_config({"partition": "a b"})
    with pytest.raises(LauncherError, match="unknown backend.slurm keys"):
        SlurmOptions.from_config({"nodes": 2})
    assert SlurmOptions.from_config(None) == SlurmOptions()
    assert SlurmOptions(gpu_hour_usd=2.0, cpu_hour_usd=0.1, cpus_per_task=4).price_per_hour(
        3
    ) == pytest.approx(6.4)


def test_the_batch_script_quotes_every_value_and_execs_the_worker(tmp_path):
    tasks = [
        ArrayTask("c-j-1", "file:///store with space/j", 1, {"X": "a 'b'"}),
        ArrayTask("c-k-2", "file:///s/k;rm -rf /", 2),
    ]
    script = build_script(
        name="nsbi-c-1234",
        options=("--no-requeue", "--time=00:10:00"),
        tasks=tasks,
        python="/opt/py/bin/python",
        log_dir="/logs",
        env={"JAX_FOO": "1"},
        cwd="/work",
    )
    assert "#SBATCH --array=0-1" in script and "#SBATCH --time=00:10:00" in script
    assert "exec /opt/py/bin/python -m backend.commands.worker" in script
    path = tmp_path / "s.sh"
    path.write_text(script.replace("exec ", "echo "))
    for i, task in enumerate(tasks):
        out = subprocess.run(
            ["bash", str(path)],
            env={"SLURM_ARRAY_TASK_ID": str(i), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        if out.returncode != 0 and "cd:" in out.stderr:  # /work may be absent: run without it
            path.write_text(script.replace("exec ", "echo ").replace("cd /work\n", ""))
            out = subprocess.run(
                ["bash", str(path)],
                env={"SLURM_ARRAY_TASK_ID": str(i), "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
            )
        assert out.stdout.split() == [
            "/opt/py/bin/python",
            "-m",
            "backend.commands.worker",
            *task.job_uri.split(),
            "--attempt",
            str(task.attempt),
        ], out


def test_slurm_states_map_onto_instance_states():
    assert map_state("PENDING") is InstanceState.PENDING
    assert map_state("RUNNING") is InstanceState.RUNNING
    assert map_state("COMPLETING") is InstanceState.RUNNING
    assert map_state("COMPLETED") is InstanceState.EXITED
    assert map_state("FAILED") is InstanceState.EXITED
    assert map_state("CANCELLED by 0") is InstanceState.EXITED
    assert map_state("TIMEOUT") is InstanceState.PREEMPTED
    assert map_state("PREEMPTED") is InstanceState.PREEMPTED
    assert map_state("NODE_FAIL") is InstanceState.PREEMPTED
    assert map_state("DEADLINE") is InstanceState.GONE


def test_squeue_and_scontrol_outputs_parse():
    q = parse_squeue("12_0|RUNNING|None\n12_1|PENDING|Resources\n\n")
    assert q["12_1"].state == "PENDING" and q["12_1"].reason == "Resources"
    text = (
        "JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=nsbi-x UserId=root(0) "
        "JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=75:0 RunTime=00:00:27"
    )
    job = parse_scontrol(text)["12_1"]
    assert (job.state, job.exit_code) == ("FAILED", 75)


def test_worker_hours_from_the_exit_record():
    assert worker_hours({"started_at": 100.0, "finished_at": 3700.0}) == pytest.approx(1.0)
    assert worker_hours({"started_at": 100.0}) is None
    assert worker_hours(None) is None


def test_the_registry_builds_the_slurm_launcher(tmp_path, monkeypatch):
    from backend.settings import get_settings

    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    monkeypatch.setenv("NSBI_SLURM_MAX_JOBS", "7")
    launcher = get_launcher("slurm", get_settings())
    assert launcher.name == "slurm" and launcher.max_jobs == 7
    assert launcher.var_dir == tmp_path / "launchers" / "slurm"
    monkeypatch.setenv("NSBI_SLURM_MAX_JOBS", "many")
    with pytest.raises(LauncherError, match="NSBI_SLURM_MAX_JOBS"):
        get_launcher("slurm", get_settings())


def test_an_unreachable_slurm_controller_means_try_again_later(tmp_path):
    """sbatch/squeue that cannot reach slurmctld: CapacityError (the controller keeps the
    attempt LAUNCHING and tries again next pass), not a failed attempt."""
    from backend.launchers import CapacityError
    from backend.launchers.slurm import SlurmLauncher

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sbatch"):
        exe = bin_dir / name
        exe.write_text(
            "#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller (connect "
            "failure)' >&2\nexit 1\n"
        )
        exe.chmod(0o755)
    launcher = SlurmLauncher(tmp_path / "var", bin_dir=str(bin_dir))
    with pytest.raises(CapacityError, match="Unable to contact"):
        launcher.launch(LaunchRequest("c", "j", 1, "file:///nowhere"))
    assert not list(launcher.instances_dir.iterdir())
