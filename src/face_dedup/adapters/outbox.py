"""Local outbox adapter of the notifier: one JSON line per notification, for a mail relay or
a person to pick up. Carries only the case id and a link (see `Notification`)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict
from pathlib import Path

from face_dedup.adapters.private_files import private_dir
from face_dedup.domain import Notification, utc_now
from face_dedup.ports import Notifier


class OutboxNotifier(Notifier):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        private_dir(path.parent)

    def notify(self, notification: Notification) -> None:
        line = json.dumps({"at": utc_now(), **asdict(notification)}, sort_keys=True)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def read_all(self) -> list[dict[str, str]]:
        if not self._path.is_file():
            return []
        lines = self._path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
