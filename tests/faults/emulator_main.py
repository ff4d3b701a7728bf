"""gcp-storage-emulator for the store-outage test, with crash-safe files.

The emulator's on-disk mode rewrites its index (``.meta``, every object's metadata) in place
on each write; killing it mid-rewrite leaves an empty or truncated index and the restarted
emulator refuses to start or forgets every object (seen on the first try of the test). Real
Cloud Storage never loses an object it acknowledged, so the emulator here writes each file
to a temporary name and renames it into place: a kill at any moment leaves the old or the new
file, and every acknowledged object survives a restart.

    python tests/faults/emulator_main.py --data-dir D start --host 127.0.0.1 --port P ...
"""

from __future__ import annotations

import os
import sys
import tempfile

from gcp_storage_emulator import storage
from gcp_storage_emulator.__main__ import main

_original_write = storage._FileStore.write_bytes


def _atomic_write_bytes(self, rel: str, content: bytes) -> None:
    if self._use_memory:
        _original_write(self, rel, content)
        return
    path = self._disk_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, path)


if __name__ == "__main__":
    storage._FileStore.write_bytes = _atomic_write_bytes
    main(sys.argv[1:])
