"""The README stays true: its quick start is two commands, and its config reference names every key."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from daemon.config import Config
from sinks.kinesis.config import KinesisSinkConfig
from sources.file import FileSourceConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_quick_start_is_two_commands_install_and_run_then_test() -> None:
    """The quick start has exactly two shell commands: install + run, then install + tests."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(commands) == 2
    assert "pip install -e '.[embedded]'" in commands[0] and "tweet-producer run" in commands[0]
    assert "pytest" in commands[1]
    assert "pytest" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_config_reference_names_every_key() -> None:
    """Every key of the config models appears in the README's configuration tables."""
    reference = README.split("## Configuration", 1)[1].split("\n## Metrics", 1)[0]
    keys = _keys(Config) + _keys(FileSourceConfig) + _keys(KinesisSinkConfig)

    def documented(key: str) -> bool:
        return any(form in reference for form in (f"`{key}`", f"`{key}[]`", f"`{key.split('.')[-1]}`"))

    missing = [key for key in keys if not documented(key)]
    assert not missing, missing
