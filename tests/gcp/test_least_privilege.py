"""Worker VMs get least privilege by default (issue 16, finding 5).

Without NSBI_GCE_SERVICE_ACCOUNT every VM used to run as the project's default compute
account (Editor on the whole project) with the ``cloud-platform`` scope and an external IP.
Now: a dedicated worker account is required (the default one only with
NSBI_GCE_ALLOW_DEFAULT_SA=1), the VM gets the storage, logging and monitoring scopes only,
and no external IP unless NSBI_GCE_EXTERNAL_IP=1. Checked on the insert request that the fake
Compute service received from the real google-cloud-compute client, built from the
environment the way `nsbi controller` builds it.
"""

from __future__ import annotations

import pytest

from backend.launchers import LauncherError, LaunchRequest, get_launcher
from backend.settings import Settings
from nsbi_testing.gce_fake import FakeCompute

AUTH = "https://www.googleapis.com/auth/"
MINIMAL = [AUTH + "devstorage.read_write", AUTH + "logging.write", AUTH + "monitoring.write"]
WORKER_SA = "nsbi-worker@nsbi-test.iam.gserviceaccount.com"


@pytest.fixture
def fake():
    with FakeCompute(boot=False) as service:
        yield service


@pytest.fixture
def launch(fake, monkeypatch, tmp_path):
    """launch(**NSBI_GCE_* variables) -> the body of the instance the fake received."""
    made = []

    def run(**env: str) -> dict:
        base = {
            "NSBI_GCE_PROJECT": fake.project,
            "NSBI_GCE_ZONES": "us-central1-a",
            "NSBI_GCE_ENDPOINT": fake.endpoint,
            "NSBI_GCE_URL_SCHEME": "http",
            "NSBI_GCE_RUNTIME": "python",
        }
        for name, value in {**base, **env}.items():
            monkeypatch.setenv(name, value)
        launcher = get_launcher("gce", Settings.from_env())
        made.append(launcher)
        job = f"j{len(made)}"
        req = LaunchRequest("lp", job, 1, f"gs://b/campaigns/lp/jobs/{job}")
        launcher.launch_many([req], timeout=30)
        vm = fake.find(f"lp-{job}-1")
        assert vm is not None and fake.stats.bad_requests == []
        return vm.body

    yield run
    for launcher in made:
        launcher.close()


def _clear_gce_env(monkeypatch):
    for name in ("NSBI_GCE_SERVICE_ACCOUNT", "NSBI_GCE_ALLOW_DEFAULT_SA", "NSBI_GCE_SCOPES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NSBI_GCE_EXTERNAL_IP", raising=False)


def test_default_vm_has_the_worker_account_minimal_scopes_and_no_external_ip(launch, monkeypatch):
    _clear_gce_env(monkeypatch)
    body = launch(NSBI_GCE_SERVICE_ACCOUNT=WORKER_SA)
    assert body["serviceAccounts"] == [{"email": WORKER_SA, "scopes": MINIMAL}]
    assert AUTH + "cloud-platform" not in body["serviceAccounts"][0]["scopes"]
    (nic,) = body["networkInterfaces"]
    assert "accessConfigs" not in nic or nic["accessConfigs"] == []  # no public address


def test_external_ip_and_scopes_are_settings(launch, monkeypatch):
    _clear_gce_env(monkeypatch)
    body = launch(
        NSBI_GCE_SERVICE_ACCOUNT=WORKER_SA,
        NSBI_GCE_EXTERNAL_IP="1",
        NSBI_GCE_SCOPES="devstorage.read_only, https://www.googleapis.com/auth/logging.write",
    )
    assert body["networkInterfaces"][0]["accessConfigs"] == [
        {"name": "External NAT", "type": "ONE_TO_ONE_NAT"}
    ]
    assert body["serviceAccounts"] == [
        {"email": WORKER_SA, "scopes": [AUTH + "devstorage.read_only", AUTH + "logging.write"]}
    ]


@pytest.mark.parametrize(
    "account",
    [
        None,
        "",
        "default",
        "123456789012-compute@developer.gserviceaccount.com",
        "nsbi-test@appspot.gserviceaccount.com",
    ],
)
def test_the_default_account_is_refused_with_a_clear_message(fake, launch, monkeypatch, account):
    _clear_gce_env(monkeypatch)
    env = {} if account is None else {"NSBI_GCE_SERVICE_ACCOUNT": account}
    with pytest.raises(LauncherError) as err:
        launch(**env)
    msg = str(err.value)
    assert "Editor role" in msg and "NSBI_GCE_SERVICE_ACCOUNT=" in msg
    assert "NSBI_GCE_ALLOW_DEFAULT_SA=1" in msg and "docs/gcp.md" in msg
    if account:
        assert account in msg
    assert fake.stats.inserts == 0  # refused before any VM was requested


def test_the_default_account_only_when_explicitly_allowed(launch, monkeypatch):
    _clear_gce_env(monkeypatch)
    body = launch(NSBI_GCE_ALLOW_DEFAULT_SA="1")
    # still the minimal scopes: the default account's Editor role is cut down by them
    assert body["serviceAccounts"] == [{"email": "default", "scopes": MINIMAL}]
    body = launch(
        NSBI_GCE_ALLOW_DEFAULT_SA="true",
        NSBI_GCE_SERVICE_ACCOUNT="123456789012-compute@developer.gserviceaccount.com",
    )
    assert (
        body["serviceAccounts"][0]["email"] == "123456789012-compute@developer.gserviceaccount.com"
    )


def test_the_fake_refuses_what_the_real_api_refuses(fake):
    """The fake checks the fields this test reads, as the real API does (400s)."""
    import json
    import urllib.error
    import urllib.request

    def post(body: dict) -> int:
        req = urllib.request.Request(
            f"http://{fake.endpoint}/compute/v1/projects/{fake.project}/zones/us-central1-a/instances",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    ok = {
        "name": "vm-1",
        "machineType": "zones/us-central1-a/machineTypes/n1-standard-8",
        "disks": [
            {"boot": True, "initializeParams": {"sourceImage": "projects/x/global/images/y"}}
        ],
        "networkInterfaces": [{"network": "global/networks/default"}],
        "serviceAccounts": [{"email": WORKER_SA, "scopes": MINIMAL}],
    }
    bad_scope = {**ok, "serviceAccounts": [{"email": WORKER_SA, "scopes": ["storage"]}]}
    bad_email = {**ok, "serviceAccounts": [{"email": "nobody", "scopes": MINIMAL}]}
    bad_nat = {**ok, "networkInterfaces": [{"accessConfigs": [{"type": "TWO_TO_ONE"}]}]}
    assert [post(b) for b in (bad_scope, bad_email, bad_nat)] == [400, 400, 400]
    assert post(ok) == 200
