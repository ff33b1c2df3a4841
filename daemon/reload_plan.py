"""What a reload changes: the difference between the running config and a newly loaded one.

Sources are matched by name: unchanged ones keep running, removed ones stop, changed ones restart, new ones
start. A change of `sink:` restarts the record path behind the sources. `shutdown:` and `supervision:` apply
as they are. Every other section shapes parts that live for the whole run (the embedded stack, the metrics
endpoint, the state directory and its lock, the dead-letter file, the buffer, logging): a change there is
refused with its line, and a restart applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from daemon.config import Config
from daemon.yamlsource import LocatedDocument, Problem, dotted, load_document

# Sections only a restart applies (see the module docstring), in the order their problems are listed.
RESTART_ONLY_KEYS = ("stack", "embedded", "metrics", "state", "dead_letter", "buffer", "log")
RESTART_HINT = "changed; only a restart applies it (systemctl restart tweet-producer)"


@dataclass(frozen=True)
class ReloadPlan:
    """Names of the sources by what the reload does to them, and whether the sink changes."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    sink_changed: bool = False

    @property
    def changes_nothing(self) -> bool:
        return not (self.started or self.stopped or self.restarted or self.sink_changed)

    @property
    def restarting(self) -> list[str]:
        """The sources that stop and start again: the changed ones, and every kept one behind a new sink."""
        return self.restarted + self.unchanged if self.sink_changed else self.restarted

    @property
    def staying(self) -> list[str]:
        """The sources that keep running untouched."""
        return [] if self.sink_changed else self.unchanged

    @property
    def leaving(self) -> list[str]:
        """The running sources the reload stops."""
        return self.stopped + self.restarting

    @property
    def starting(self) -> list[str]:
        """The sources the reload starts, once the leaving ones stopped."""
        return self.started + self.restarting


def source_transforms(config: Config, name: str) -> Any:
    """A source's transforms as configured (compared by value), or None."""
    return config.transforms.get(name)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Sort the sources of `new` against those of `old`; `restart_required` must be empty first."""
    old_sources = {source.name: source for source in old.sources}
    new_sources = {source.name: source for source in new.sources}
    started, restarted, unchanged = [], [], []
    for name, config in new_sources.items():
        if name not in old_sources:
            started.append(str(name))
        elif config != old_sources[name] or source_transforms(new, str(name)) != source_transforms(old, str(name)):
            restarted.append(str(name))
        else:
            unchanged.append(str(name))
    stopped = [str(name) for name in old_sources if name not in new_sources]
    return ReloadPlan(started, stopped, restarted, unchanged, sink_changed=new.sink != old.sink)


def restart_required(old: Config, new: Config, path: Path) -> list[Problem]:
    """The keys of restart-only sections whose value changed, located in the new file."""
    changed: list[tuple[str | int, ...]] = []
    for key in RESTART_ONLY_KEYS:
        changed.extend(_changed_paths(getattr(old, key), getattr(new, key), (key,)))
    if not changed:
        return []
    doc = _locator(path)
    return [_located(doc, path, key_path) for key_path in changed]


def _changed_paths(old: Any, new: Any, at: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Dotted paths (as tuples) of the leaves that differ, descending into config sections."""
    if old == new:
        return []
    if isinstance(old, BaseModel) and isinstance(new, BaseModel) and type(old) is type(new):
        paths: list[tuple[str | int, ...]] = []
        for name in type(old).model_fields:
            paths.extend(_changed_paths(getattr(old, name), getattr(new, name), (*at, name)))
        return paths
    return [at]


def _located(doc: LocatedDocument | None, path: Path, key_path: tuple[str | int, ...]) -> Problem:
    """A problem on `key_path`, at its line (or its nearest section's, when the new file leaves it to its default)."""
    if doc is None:
        return Problem(str(path), None, dotted(key_path), RESTART_HINT)
    return doc.problem(key_path, RESTART_HINT)


def _locator(path: Path) -> LocatedDocument | None:
    doc = load_document(path)
    return None if doc.problems else doc
