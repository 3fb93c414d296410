"""The plugin's one piece of state: which containers (mount IDs) use which mounted volume.

Saved to a JSON file after every change (write, fsync, rename), so a plugin or
dockerd restart neither unmounts a volume in use nor forgets one to unmount.
A save that fails is an error to the caller, not a log line.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class MountRecord:
    volume_id: str
    device: str
    mountpoint: str
    mount_ids: list[str] = field(default_factory=list)


class MountState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.mounts: dict[str, MountRecord] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            self.mounts = {name: MountRecord(**record) for name, record in raw["mounts"].items()}

    def get(self, name: str) -> MountRecord | None:
        with self._lock:
            return self.mounts.get(name)

    def put(self, name: str, record: MountRecord) -> None:
        """Record `record` for `name`; raises OSError (and changes nothing) if it cannot save."""
        with self._lock:
            self._save({**self.mounts, name: record})

    def drop(self, name: str) -> None:
        with self._lock:
            self._save({key: value for key, value in self.mounts.items() if key != name})

    def _save(self, mounts: dict[str, MountRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".new")
        body = json.dumps(
            {"mounts": {name: asdict(record) for name, record in mounts.items()}}, indent=2
        )
        with open(temporary, "w") as new_state:
            new_state.write(body)
            new_state.flush()
            os.fsync(new_state.fileno())
        os.rename(temporary, self.path)
        self.mounts = mounts
