"""`nsbi controller`: run the reconcile loop (launch, poll, ingest, retry, cancel).

Settings come from the environment (NSBI_HOME, DATABASE_URL, NSBI_STORE); the default store
folder under NSBI_HOME is created, an explicitly configured one must already exist. After each
pass the controller writes ``<NSBI_HOME>/controller.json`` ({"pid", "ticks", "time", "role"}).

One controller per NSBI_HOME (``<NSBI_HOME>/controller.lock``) and one *leader* per database:
controllers sharing a DATABASE_URL compete for its leader lease (`backend.leader`); the
leader logs "leader: ..." and reconciles, the others log "standby: ..." and take over within
NSBI_CONTROLLER_LEASE_TTL_S + NSBI_CONTROLLER_LEASE_RENEW_S seconds once the leader stops
renewing it (at once when it exits cleanly).
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between reconcile passes (default 2)"
    )
    parser.add_argument("--once", action="store_true", help="run a single pass and exit")
    parser.add_argument(
        "--until-idle", action="store_true", help="exit once no campaign is active or cancelling"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=180.0,
        help="seconds without a new heartbeat before an attempt is failed (default 180)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=900.0,
        help="seconds from launch to the first heartbeat (default 900)",
    )
    parser.add_argument("--max-ticks", type=int, default=None, help="stop after this many passes")
    parser.add_argument("--quiet", action="store_true", help="only log warnings and errors")


def run(args: argparse.Namespace) -> int:
    from backend.controller import Controller, ControllerConfig, single_instance_lock
    from backend.db import get_engine, init_db
    from backend.launchers import get_launcher
    from backend.leader import LeaderLease, holder_id
    from backend.settings import get_settings
    from backend.stores import StoreError, open_store

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = get_settings()
    default_store = (settings.home / "store").as_uri()
    try:
        # the store is checked before the database is touched: a bad path changes nothing
        store = open_store(
            settings.store_uri,
            create=settings.store_uri.rstrip("/")
            in (default_store, f"file://{settings.home / 'store'}"),
        )
    except StoreError as exc:
        print(
            f"nsbi controller: {exc}; create it or point NSBI_STORE at an existing store. "
            "Nothing was changed in the database.",
            file=sys.stderr,
        )
        return 2
    lock = single_instance_lock(settings.home / "controller.lock")
    if lock is None:
        print(
            f"nsbi controller: another controller holds {settings.home / 'controller.lock'}; "
            "only one may run per NSBI_HOME",
            file=sys.stderr,
        )
        return 1
    engine = init_db(get_engine(settings.database_url))
    config = ControllerConfig(
        tick_interval_s=args.interval,
        heartbeat_timeout_s=args.heartbeat_timeout,
        startup_timeout_s=args.startup_timeout,
    )
    lease = LeaderLease(
        engine,
        ttl_s=settings.controller.lease_ttl_s,
        renew_s=settings.controller.lease_renew_s,
        holder=holder_id(settings.home),
    )
    controller = Controller(
        engine, store, lambda name: get_launcher(name, settings), config, lease=lease
    )
    try:
        lease.start()  # logs "leader: ..." or "standby: ..."; renews / tries on a thread
        if args.once:
            if not lease.is_leader():
                seen = lease.view()
                print(
                    f"nsbi controller: standby: {seen.holder if seen else 'another controller'} "
                    "leads this database; this pass did nothing",
                    file=sys.stderr,
                )
                return 1
            report = controller.tick()
            print(report)
            return 1 if report.errors else 0
        controller.run_forever(
            max_ticks=args.max_ticks,
            until_idle=args.until_idle,
            status_path=settings.home / "controller.json",
        )
    except StoreError as exc:
        print(f"nsbi controller: {exc}", file=sys.stderr)
        return 2
    finally:
        lease.stop(release=True)  # a clean exit hands over at once
    return 0


def main(argv: list[str] | None = None) -> int:
    """Direct entry (``python -m backend.commands.controller``), same as ``nsbi controller``."""
    parser = argparse.ArgumentParser(prog="nsbi controller", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
