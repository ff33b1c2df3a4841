"""What a reload would change: sources sorted by name into started, stopped, restarted and unchanged; a sink change;
and the restart-only keys refused at their line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import Config, load_config
from daemon.reload_plan import RESTART_HINT, plan_reload, restart_required

BASE = """\
embedded:
  enabled: false
metrics:
  listen: 127.0.0.1:9477
sources:
{sources}
sink:
  type: kinesis
  stream: {stream}
"""


def source(name: str, rate: int = 0) -> str:
    return f"  - name: {name}\n    type: file\n    paths: [{name}.jsonl]\n    rate: {rate}\n"


def load(tmp_path: Path, text: str, file_name: str = "config.yaml") -> tuple[Path, Config]:
    path = tmp_path / file_name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path, load_config(path)


def test_sources_are_sorted_by_name_into_what_the_reload_does_to_them(tmp_path: Path) -> None:
    """Added, removed, changed and unchanged sources are told apart by name and by value."""
    _, old = load(tmp_path, BASE.format(sources=source("a") + source("b") + source("d"), stream="s"), "old.yaml")
    _, new = load(tmp_path, BASE.format(sources=source("a", rate=5) + source("c") + source("d"), stream="s"), "new.yaml")
    plan = plan_reload(old, new)
    assert (plan.started, plan.stopped, plan.restarted, plan.unchanged) == (["c"], ["b"], ["a"], ["d"])
    assert not plan.sink_changed and not plan.changes_nothing


def test_the_same_file_changes_nothing_and_a_new_stream_changes_the_sink(tmp_path: Path) -> None:
    """Reloading an unchanged file plans nothing; another stream is a sink change with every source unchanged."""
    text = BASE.format(sources=source("a"), stream="s")
    _, old = load(tmp_path, text, "old.yaml")
    _, same = load(tmp_path, text, "same.yaml")
    _, moved = load(tmp_path, BASE.format(sources=source("a"), stream="other"), "moved.yaml")
    assert plan_reload(old, same).changes_nothing
    plan = plan_reload(old, moved)
    assert plan.sink_changed and plan.unchanged == ["a"]


def test_restart_only_keys_are_refused_at_their_line(tmp_path: Path) -> None:
    """A changed metrics.listen and buffer size are refused, each at the line that sets it in the new file."""
    _, old = load(tmp_path, BASE.format(sources=source("a"), stream="s"), "old.yaml")
    text = BASE.format(sources=source("a"), stream="s").replace("9477", "9478") + "buffer:\n  max_records: 5\n"
    path, new = load(tmp_path, text, "new.yaml")
    problems = restart_required(old, new, path)
    lines = textwrap.dedent(text).splitlines()
    assert [str(p) for p in problems] == [
        f"{path}:{lines.index('  listen: 127.0.0.1:9478') + 1}: metrics.listen: {RESTART_HINT}",
        f"{path}:{lines.index('  max_records: 5') + 1}: buffer.max_records: {RESTART_HINT}",
    ]


def test_a_restart_only_key_left_to_its_default_is_named_at_its_section(tmp_path: Path) -> None:
    """Removing `metrics:` from the file changes metrics.listen back to its default: named, at the nearest line."""
    text = BASE.format(sources=source("a"), stream="s")
    _, old = load(tmp_path, text.replace("9477", "9999"), "old.yaml")
    path, new = load(tmp_path, text.replace("metrics:\n  listen: 127.0.0.1:9477\n", ""), "new.yaml")
    problems = restart_required(old, new, path)
    assert [(p.key, p.message) for p in problems] == [("metrics.listen", RESTART_HINT)]
    assert problems[0].line is not None


def test_reloadable_sections_are_not_refused(tmp_path: Path) -> None:
    """shutdown, supervision, sources and sink change without a restart."""
    _, old = load(tmp_path, BASE.format(sources=source("a"), stream="s"), "old.yaml")
    reloadable = "shutdown: {flush_deadline: 3s}\nsupervision: {restart_max_backoff: 5s}\nreload: {watch: true}\n"
    text = BASE.format(sources=source("b"), stream="t") + reloadable
    path, new = load(tmp_path, text, "new.yaml")
    assert restart_required(old, new, path) == []


@settings(max_examples=40, deadline=None)
@given(
    old=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), min_size=1, max_size=6),
    new=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), min_size=1, max_size=6),
)
def test_every_source_is_in_exactly_one_outcome(
    tmp_path_factory: pytest.TempPathFactory, old: dict[str, int], new: dict[str, int]
) -> None:
    """For any pair of source sets, each name lands in exactly one list, and only where the configs say so."""
    tmp_path = tmp_path_factory.mktemp("plan")
    _, old_config = load(tmp_path, BASE.format(sources="".join(source(n, r) for n, r in old.items()), stream="s"), "o.yaml")
    _, new_config = load(tmp_path, BASE.format(sources="".join(source(n, r) for n, r in new.items()), stream="s"), "n.yaml")
    plan = plan_reload(old_config, new_config)
    lists = plan.started + plan.stopped + plan.restarted + plan.unchanged
    assert sorted(lists) == sorted(set(old) | set(new))
    assert set(plan.started) == set(new) - set(old) and set(plan.stopped) == set(old) - set(new)
    assert set(plan.restarted) == {n for n in set(old) & set(new) if old[n] != new[n]}
