"""Reload when the config file changes on disk (`reload.watch`): its identity and size are compared at an interval.

An editor that saves by renaming a new file into place changes the inode, one that writes in place changes the
modification time and often the size; a Kubernetes ConfigMap swaps a symlink (stat follows it). A change is
acted on once the file held still for one interval, so a file caught halfway through a slow write is not read.
"""

from __future__ import annotations

import os
from pathlib import Path

Signature = tuple[int, int, int, int]  # device, inode, modification time (ns), size


def signature(path: Path) -> Signature | None:
    """What identifies this version of the file; None while it is missing or unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


class ConfigWatch:
    def __init__(self, path: Path, interval_s: float, now: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self._applied = signature(path)  # the version the running config was loaded from (or last tried)
        self._seen = self._applied
        self._checked_at = now

    def loaded(self) -> None:
        """A reload (by signal or by this watch) read the file now: that version is the baseline."""
        self._applied = self._seen = signature(self.path)

    def due(self, now: float) -> bool:
        """True once a changed file held still for one interval (checked at most every interval)."""
        if now - self._checked_at < self.interval_s:
            return False
        self._checked_at = now
        current = signature(self.path)
        if current is None or current == self._applied:
            self._seen = current
            return False
        settled = current == self._seen
        self._seen = current
        return settled
