"""`nsbi bench launch`: how long the GCE launcher takes to request N VMs.

It starts the loopback fake Compute Engine service (:mod:`nsbi_testing.gce_fake`, with
no VM processes), points the real google-cloud-compute client at it, and times
``GceLauncher.launch_many`` over N attempts: ``seconds`` is the wall time until every insert
was accepted; ``seconds_all_listed`` until one aggregated listing shows all N VMs. The fake
answers in microseconds, so this measures our side (thread pool, SDK, serialisation) plus
loopback HTTP, not Google's API latency (see docs/gcp.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the report here (default: print it)")
    parser.add_argument(
        "--vms", type=int, default=1000, help="how many VMs to request (default 1000)"
    )
    parser.add_argument(
        "--threads", type=int, default=32, help="insert thread-pool size (default 32)"
    )
    parser.add_argument(
        "--zones",
        default="us-central1-a,us-central1-b",
        help="comma-separated zones (default us-central1-a,us-central1-b)",
    )
    parser.add_argument(
        "--stockout-first-zone",
        action="store_true",
        help="make the first zone refuse every insert (measures the fall-over path)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_bench(
    vms: int,
    threads: int,
    zones: tuple[str, ...],
    *,
    stockout_first_zone: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    from backend.launchers.base import LaunchRequest
    from backend.launchers.gce import GceLauncher
    from backend.launchers.gce_spec import GceConfig
    from nsbi_testing.gce_fake import FakeCompute

    fake = FakeCompute(boot=False)
    endpoint = fake.start()
    if stockout_first_zone:
        fake.fail_zone(zones[0], "ZONE_RESOURCE_POOL_EXHAUSTED")
    config = GceConfig(
        project=fake.project,
        zones=zones,
        endpoint=endpoint,
        url_scheme="http",
        runtime="python",
        insert_threads=threads,
        max_instances=None,
        service_account=f"nsbi-bench@{fake.project}.iam.gserviceaccount.com",
    )
    launcher = GceLauncher(config, store_opener=lambda uri: _NullStore())
    requests = [
        LaunchRequest(
            "bench", f"job{i:05d}", 1, f"gs://bench-bucket/campaigns/bench/jobs/job{i:05d}"
        )
        for i in range(vms)
    ]
    try:
        _ = launcher.instances, launcher.operations  # build the SDK clients outside the timing
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=vms, desc="VMs requested", unit="vm", file=sys.stderr)
        t0 = time.perf_counter()
        handles = [launcher.launch(r) for r in requests]
        waited = 0
        for h in handles:
            launcher._recs[h.instance_id].inserted.wait(300)
            waited += 1
            if bar is not None and waited % 50 == 0:
                bar.update(50)
        t_requested = time.perf_counter() - t0
        if bar is not None:
            bar.update(vms - bar.n)
            bar.close()
        listed = 0
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            listed = len(launcher._refresh(force=True))
            if listed >= vms:
                break
            time.sleep(0.2)
        t_listed = time.perf_counter() - t0
        failed = [n for n, r in launcher._recs.items() if r.phase == "failed"]
        report = {
            "vms": vms,
            "seconds": round(t_requested, 3),
            "seconds_all_listed": round(t_listed, 3),
            "vms_listed": listed,
            "requests_per_s": round(vms / t_requested, 1) if t_requested else None,
            "threads": threads,
            "zones": list(zones),
            "stockout_first_zone": stockout_first_zone,
            "inserts_by_zone": dict(fake.stats.inserts_by_zone),
            "refused_by_zone": dict(fake.stats.refused_by_zone),
            "failed": len(failed),
            "bad_requests": fake.stats.bad_requests[:5],
            "target": "loopback fake Compute Engine (nsbi_testing.gce_fake), real google-cloud-compute client",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
    finally:
        launcher.close()
        fake.stop()
    return report


class _NullStore:
    """The bench has no artifact store: provisioning notes are dropped."""

    def put_bytes(self, key: str, data: bytes) -> str:
        return key

    def exists(self, key: str) -> bool:
        return False


def run(args: argparse.Namespace) -> int:
    zones = tuple(z.strip() for z in args.zones.split(",") if z.strip())
    if args.vms < 1 or args.threads < 1 or not zones:
        print(
            "nsbi bench launch: --vms and --threads must be >= 1 and --zones non-empty",
            file=sys.stderr,
        )
        return 2
    report = run_bench(
        args.vms,
        args.threads,
        zones,
        stockout_first_zone=args.stockout_first_zone,
        progress=not args.no_progress,
    )
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(
            f"wrote {args.json}: {report['vms']} VMs requested in {report['seconds']} s "
            f"({report['requests_per_s']} /s), all listed after {report['seconds_all_listed']} s",
            file=sys.stderr,
        )
    else:
        print(text)
    return 0 if report["failed"] == 0 and report["vms_listed"] >= report["vms"] else 1
