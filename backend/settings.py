"""Control-plane settings, read from the environment.

Nothing here touches the disk or a database at import time: `get_settings()` builds a frozen
`Settings` on demand so tests can point `NSBI_HOME` / `DATABASE_URL` elsewhere per process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the control plane keeps its state.

    home: `NSBI_HOME` (default `./var`), the root for the default database and store.
    database_url: `DATABASE_URL` (default `sqlite:///<home>/nsbi.db`, WAL mode).
    store_uri: `NSBI_STORE` (default `file://<home>/store`), the artifact store root.
    """

    home: Path
    database_url: str
    store_uri: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        home = Path(env.get("NSBI_HOME") or "var").expanduser().resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{home / 'nsbi.db'}"
        store_uri = env.get("NSBI_STORE") or f"file://{home / 'store'}"
        return cls(home=home, database_url=database_url, store_uri=store_uri)


def get_settings() -> Settings:
    """The settings of the current process environment (read afresh on every call)."""
    return Settings.from_env()
