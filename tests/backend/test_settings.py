"""`backend.settings`: every environment variable, its default, its parsing and its error."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from backend.launchers import LauncherError, get_launcher
from backend.launchers.gce_spec import DEFAULT_IMAGE, GceConfig, MachineSpec, config_from_env
from backend.settings import (
    DashboardSettings,
    GceSettings,
    GcsSettings,
    LocalLauncherSettings,
    Settings,
    SettingsError,
    WorkerSettings,
    get_settings,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_when_nothing_is_set(tmp_path):
    s = Settings.from_env({"NSBI_HOME": str(tmp_path)})
    assert (s.home, s.database_url, s.store_uri) == (
        tmp_path,
        f"sqlite:///{tmp_path / 'nsbi.db'}",
        f"file://{tmp_path / 'store'}",
    )
    assert s.prices is None and s.browser_path is None
    assert s.local == LocalLauncherSettings(max_concurrent=2, grace_s=25.0)
    assert s.gcs == GcsSettings(project=None, retry_deadline_s=120.0, emulator_host=None)
    assert s.worker == WorkerSettings(
        interval_s=5.0, stop_grace_s=15.0, instance_id=None, visible_gpus=None
    )
    assert s.dashboard.password is None
    g = s.gce
    assert (g.project, g.zones, g.machine_type, g.gpu_type, g.gpu_count, g.spot) == (
        "",
        (),
        "n1-standard-8",
        "nvidia-tesla-t4",
        1,
        True,
    )
    assert (g.max_instances, g.max_run_hours, g.insert_threads, g.image) == (
        1000,
        24.0,
        32,
        DEFAULT_IMAGE,
    )
    # the groups' own defaults are the same as parsing an empty environment
    assert s.gce == GceSettings() and s.local == LocalLauncherSettings()
    assert Settings(s.home, s.database_url, s.store_uri) == s


def test_the_gce_defaults_are_the_launchers_defaults():
    env = {
        "NSBI_GCE_PROJECT": "p",
        "NSBI_GCE_ZONES": "z-a1-b",
        "NSBI_GCE_WORKER_IMAGE": "img",
        "NSBI_GCE_SERVICE_ACCOUNT": "w@p.iam.gserviceaccount.com",
    }
    assert config_from_env(env) == GceConfig(
        project="p",
        zones=("z-a1-b",),
        worker_image="img",
        machine=MachineSpec(zones=("z-a1-b",)),
        service_account="w@p.iam.gserviceaccount.com",
    )


def test_every_variable_is_parsed_to_its_type(tmp_path):
    env = {
        "NSBI_HOME": str(tmp_path),
        "NSBI_PRICES": "/etc/prices.toml",
        "BROWSER_PATH": "/usr/bin/chromium",
        "NSBI_LOCAL_MAX_CONCURRENT": " 4 ",
        "NSBI_LOCAL_GRACE_S": "2.5",
        "NSBI_GCE_PROJECT": "proj",
        "NSBI_GCE_ZONES": " us-east1-c, ,us-east1-d ",
        "NSBI_GCE_GPU_COUNT": "2",
        "NSBI_GCE_SPOT": "No",
        "NSBI_GCE_EXTERNAL_IP": "off",
        "NSBI_GCE_MAX_RUN_HOURS": "1.5",
        "NSBI_GCE_MAX_INSTANCES": "7",
        "NSBI_GCE_SERVICE_ACCOUNT": "sa@proj",
        "NSBI_GCE_ENDPOINT": "127.0.0.1:9",
        "NSBI_GCS_PROJECT": "gp",
        "NSBI_GCS_RETRY_DEADLINE_S": "3",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
        "NSBI_WORKER_INTERVAL_S": "0.2",
        "NSBI_WORKER_STOP_GRACE_S": "1",
        "NSBI_INSTANCE_ID": "c-j-1",
        "CUDA_VISIBLE_DEVICES": "0, 2,GPU-1234",
        "NSBI_DASHBOARD_PASSWORD": "s3cret",
    }
    s = Settings.from_env(env)
    assert s.prices == Path("/etc/prices.toml") and s.browser_path == "/usr/bin/chromium"
    assert s.local == LocalLauncherSettings(max_concurrent=4, grace_s=2.5)
    g = s.gce
    assert g.project == "proj" and g.zones == ("us-east1-c", "us-east1-d")
    assert (g.gpu_count, g.spot, g.external_ip, g.max_run_hours, g.max_instances) == (
        2,
        False,
        False,
        1.5,
        7,
    )
    assert (g.service_account, g.endpoint, g.subnetwork) == ("sa@proj", "127.0.0.1:9", None)
    assert s.gcs == GcsSettings(
        project="gp", retry_deadline_s=3.0, emulator_host="http://127.0.0.1:9023"
    )
    assert s.worker == WorkerSettings(
        interval_s=0.2, stop_grace_s=1.0, instance_id="c-j-1", visible_gpus=(0, 2)
    )
    assert s.dashboard == DashboardSettings(password="s3cret")
    assert "s3cret" not in repr(s)  # the password never lands in a log line


def test_gce_special_cases():
    g = GceSettings.from_env({"GOOGLE_CLOUD_PROJECT": "fallback", "NSBI_GCE_GPU_TYPE": ""})
    assert g.project == "fallback" and g.gpu_type is None and g.gpu_count == 0
    assert (
        GceSettings.from_env({"NSBI_GCE_PROJECT": "own", "GOOGLE_CLOUD_PROJECT": "x"}).project
        == "own"
    )
    assert GceSettings.from_env({"NSBI_GCE_MAX_INSTANCES": " "}).max_instances is None  # unlimited
    for text, value in [("1", True), ("YES", True), ("on", True), ("0", False), ("", False)]:
        assert GceSettings.from_env({"NSBI_GCE_SPOT": text}).spot is value
    assert (
        config_from_env(
            {
                "NSBI_GCE_PROJECT": "p",
                "NSBI_GCE_ZONES": "z",
                "NSBI_GCE_RUNTIME": "python",
                "NSBI_GCE_MAX_RUN_HOURS": "0.5",
                "NSBI_GCE_ALLOW_DEFAULT_SA": "1",
            }
        ).max_run_duration_s
        == 1800
    )


def test_cuda_visible_devices():
    assert WorkerSettings.from_env({}).visible_gpus is None  # unset: every GPU
    assert WorkerSettings.from_env({"CUDA_VISIBLE_DEVICES": ""}).visible_gpus == ()  # none
    assert WorkerSettings.from_env({"CUDA_VISIBLE_DEVICES": "3,1"}).visible_gpus == (3, 1)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NSBI_LOCAL_MAX_CONCURRENT", "two", "an integer"),
        ("NSBI_LOCAL_MAX_CONCURRENT", "", "an integer"),
        ("NSBI_LOCAL_GRACE_S", "25s", "a number"),
        ("NSBI_GCE_GPU_COUNT", "1.5", "an integer"),
        ("NSBI_GCE_MAX_INSTANCES", "many", "an integer"),
        ("NSBI_GCE_MAX_RUN_HOURS", "1d", "a number"),
        ("NSBI_GCE_SPOT", "maybe", "true/false"),
        ("NSBI_GCE_EXTERNAL_IP", "2", "true/false"),
        ("NSBI_GCS_RETRY_DEADLINE_S", "2m", "a number"),
        ("NSBI_WORKER_INTERVAL_S", "fast", "a number"),
        ("NSBI_WORKER_STOP_GRACE_S", "-", "a number"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(name, value, expected):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert str(err.value) == f"{name}={value!r}: expected {expected}"
    assert isinstance(err.value, ValueError)


def test_the_gce_launcher_reports_a_bad_value_as_a_launcher_error():
    with pytest.raises(LauncherError, match=r"NSBI_GCE_GPU_COUNT='x': expected an integer"):
        config_from_env({"NSBI_GCE_GPU_COUNT": "x"})


def test_get_settings_reads_the_environment_afresh(monkeypatch, tmp_path):
    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    monkeypatch.setenv("NSBI_WORKER_INTERVAL_S", "0.5")
    assert get_settings().home == tmp_path and get_settings().worker.interval_s == 0.5
    monkeypatch.setenv("NSBI_WORKER_INTERVAL_S", "7")
    assert get_settings().worker.interval_s == 7.0
    monkeypatch.setenv("NSBI_LOCAL_GRACE_S", "oops")
    with pytest.raises(SettingsError, match="NSBI_LOCAL_GRACE_S='oops'"):
        get_settings()


def test_the_local_launcher_takes_its_settings_from_the_environment(monkeypatch, tmp_path):
    class S:
        home = tmp_path

    monkeypatch.setenv("NSBI_LOCAL_MAX_CONCURRENT", "5")
    monkeypatch.setenv("NSBI_LOCAL_GRACE_S", "3")
    lau = get_launcher("local", S(), gpus=[])
    assert (lau.max_concurrent, lau.grace_s) == (5, 3.0)
    # keyword overrides win
    assert get_launcher("local", S(), gpus=[], max_concurrent=1).max_concurrent == 1


class _Recording(Mapping[str, str]):
    """An empty environment that remembers every name asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_the_readme_table_lists_every_variable_the_settings_read():
    env = _Recording()
    Settings.from_env(env)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}
    assert len(env.asked) > 30
    assert sorted(env.asked - documented) == []


# Modules that still touch os.environ themselves. Pass-through: they hand the environment on
# to a child process or set a variable for a library. Pending: reads that should become
# get_settings() (issue 15). Any other module reads its variables through backend.settings.
ENVIRON_ALLOWED = {
    "backend/settings.py",
    "backend/launchers/local.py",  # pass-through: the worker's environment
    "backend/commands/up.py",  # pass-through: the controller's and dashboard's environment
    "backend/analysis/report.py",  # sets BROWSER_PATH for kaleido
    "dashboard/export.py",  # sets BROWSER_PATH for kaleido
    "backend/launchers/slurm.py",  # pass-through to sbatch; NSBI_SLURM_* (README) like local.py
    "backend/commands/fit.py",  # JAX's own JAX_COORDINATOR_ADDRESS/... as flag defaults
}


def test_no_new_module_reads_the_environment_directly():
    files = [
        *(ROOT / "backend").rglob("*.py"),
        *(ROOT / "dashboard").rglob("*.py"),
        ROOT / "app.py",
    ]
    reading = {
        str(f.relative_to(ROOT))
        for f in files
        if re.search(r"\bos\.environ\b|\bgetenv\(|\bfrom os import environ", f.read_text())
    }
    assert sorted(reading - ENVIRON_ALLOWED) == []
