"""The daemon's configuration: typed models, plugin dispatch by `type:`, and located error messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from daemon.yamlsource import ConfigError, LocatedDocument, Path_, Problem, load_document, shown
from infra.settings import DEFAULT_STACK_NAME, STACK_NAME_PATTERN
from sinks import SINK_TYPES, SinkConfig, load_builtin_sinks
from sources import SOURCE_TYPES, SourceConfig, load_builtin_sources
from sources.units import ByteSize

DEFAULT_CONFIG_PATH = Path("config.yaml")
DEFAULT_EMBEDDED_LISTEN = "127.0.0.1:4566"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9477"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string such as "250ms", "10s", "2m"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{shown(value)} is not a duration (examples: 0.5, 250ms, 10s, 2m)")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return value


def _parse_listen(value: Any) -> Any:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{shown(value)} is not HOST:PORT (example: 127.0.0.1:9477)")
    return value


# Finite: `.inf` as a flush deadline or a backoff would make shutdown or a restart wait forever.
Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, allow_inf_nan=False)]
Listen = Annotated[str, BeforeValidator(_parse_listen)]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddedConfig(_Section):
    """The local stand-in for AWS: used when `enabled` (the default a new user meets)."""

    enabled: bool = Field(default=True, description="Run Kinesis, DynamoDB and the processor locally.")
    listen: Listen = Field(default=DEFAULT_EMBEDDED_LISTEN, description="Address of the local AWS endpoint.")
    region: str = Field(default="us-east-1", description="Region name the local endpoint reports.")


class BufferConfig(_Section):
    """The bounded buffer between sources and the sink; sources block while it is full."""

    max_records: int = Field(default=10_000, ge=1, description="Records held at most.")
    max_bytes: ByteSize = Field(
        default=64 * 1024**2, description="Memory held by buffered records at most: data + key + origin + a fixed overhead each."
    )


class ShutdownConfig(_Section):
    flush_deadline: Duration = Field(
        default=10.0, description="On SIGTERM/SIGINT, time allowed to deliver what is buffered before exiting."
    )


class DeadLetterConfig(_Section):
    path: Path | None = Field(
        default=None,
        description="JSON-lines file of records that cannot be delivered (default: dead-letter.jsonl in state.directory).",
    )


DEFAULT_STATE_DIRECTORY = Path("state")
DEAD_LETTER_FILE_NAME = "dead-letter.jsonl"


class StateConfig(_Section):
    """Where the daemon keeps what must outlive it: checkpoints, spools and (by default) the dead-letter file."""

    directory: Path = Field(
        default=DEFAULT_STATE_DIRECTORY,
        description="The state directory (systemd: StateDirectory=, /var/lib/tweet-producer); created when missing.",
    )
    checkpoint_interval: Duration = Field(
        default=1.0, gt=0, description="How often checkpoints and spool positions are saved (and at shutdown)."
    )
    fsync: Literal["batch", "interval"] = Field(
        default="batch",
        description="batch: spool and dead-letter writes are fsynced in groups as they happen; interval: every fsync_interval.",
    )
    fsync_interval: Duration = Field(default=1.0, gt=0, description="With fsync: interval, the longest a write waits for fsync.")


class MetricsConfig(_Section):
    enabled: bool = True
    listen: Listen = Field(default=DEFAULT_METRICS_LISTEN, description="Address of the Prometheus endpoint.")


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable when stdout is a terminal, JSON lines otherwise."
    )


class SupervisionConfig(_Section):
    restart_initial_backoff: Duration = Field(default=1.0, description="First delay before restarting a source.")
    restart_max_backoff: Duration = Field(default=60.0, description="Longest delay between restarts.")


class ReloadConfig(_Section):
    """Reloading the config without a restart: always on SIGHUP (systemctl reload), and on a change of the file."""

    watch: bool = Field(
        default=False, description="Also reload when the config file changes on disk (checked every watch_interval)."
    )
    watch_interval: Duration = Field(
        default=2.0, gt=0, description="How often the file is checked; a change is applied once it held still for one interval."
    )


class Config(_Section):
    """The whole config.yaml after validation."""

    stack: str = Field(default=DEFAULT_STACK_NAME, pattern=STACK_NAME_PATTERN.pattern)
    embedded: EmbeddedConfig = EmbeddedConfig()
    sources: list[SourceConfig]
    sink: SinkConfig
    buffer: BufferConfig = BufferConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    reload: ReloadConfig = ReloadConfig()


_PLUGIN_KEYS = ("sources", "sink")
# What a document that is not a mapping turned out to be, for the whole-file problem.
_ROOT_KINDS: dict[type, str] = {
    list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"
}  # fmt: skip


def load_config(path: Path) -> Config:
    """Load and validate `path`; raise ConfigError listing every problem found."""
    load_builtin_sources()
    load_builtin_sinks()
    doc = load_document(path)
    if doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(doc.data, dict):
        found = _ROOT_KINDS.get(type(doc.data), "a single value")
        raise ConfigError([doc.whole_file(f"the config is {found}; it must be a mapping of sections (sources:, sink:, ...)")])
    data: dict[str, Any] = dict(doc.data)
    problems: list[Problem] = []

    sources = data.pop("sources", None)
    sink = data.pop("sink", None)
    top = _validate(Config, {**data, "sources": [], "sink": SinkConfig(type="placeholder")}, (), doc, problems)

    source_configs: list[SourceConfig] = []
    if sources is None:
        problems.append(doc.problem(("sources",), "missing: at least one source is required"))
    elif not isinstance(sources, list) or not sources:
        problems.append(doc.problem(("sources",), "must be a non-empty list of sources"))
    else:
        for index, item in enumerate(sources):
            model = _plugin_model(item, ("sources", index), SOURCE_TYPES, "source", doc, problems)
            if model is not None:
                parsed = _validate(model, item, ("sources", index), doc, problems)
                if parsed is not None:
                    source_configs.append(parsed)
    sink_config = None
    if sink is None:
        problems.append(doc.problem(("sink",), "missing: a sink is required"))
    else:
        model = _plugin_model(sink, ("sink",), SINK_TYPES, "sink", doc, problems)
        if model is not None:
            sink_config = _validate(model, sink, ("sink",), doc, problems)

    source_configs = _name_sources(source_configs, doc, problems)
    if problems or top is None or sink_config is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    return top.model_copy(update={"sources": source_configs, "sink": sink_config})


def _plugin_model(
    item: Any, path: Path_, registry: dict[str, Any], kind: str, doc: LocatedDocument, problems: list[Problem]
) -> type[BaseModel] | None:
    if not isinstance(item, dict):
        problems.append(doc.problem(path, f"a {kind} must be a mapping with a `type:` key"))
        return None
    type_name = item.get("type")
    if type_name is None:
        problems.append(doc.problem(path, f"missing `type:` (one of: {', '.join(sorted(registry))})"))
        return None
    plugin = registry.get(type_name) if isinstance(type_name, str) else None
    if plugin is None:
        problems.append(
            doc.problem((*path, "type"), f"unknown {kind} type {shown(type_name)} (one of: {', '.join(sorted(registry))})")
        )
        return None
    model: type[BaseModel] = plugin.config_model
    return model


def _validate(model: type[BaseModel], data: Any, path: Path_, doc: LocatedDocument, problems: list[Problem]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = (*path, *error["loc"])
            problems.append(doc.problem(loc, _describe(error, model, error["loc"])))
        return None


def _describe(error: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"
    if kind == "missing":
        return "missing required key"
    message: str = error["msg"]
    if kind == "value_error":
        # Our validators quote the value themselves; a "(got ...)" would repeat it.
        return message.removeprefix("Value error, ")
    if "input" in error and kind not in ("missing",) and not isinstance(error["input"], dict | list):
        return f"{message} (got {shown(error['input'])})"
    return message


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for 'unknown key' messages."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _name_sources(configs: list[SourceConfig], doc: LocatedDocument, problems: list[Problem]) -> list[SourceConfig]:
    """Give unnamed sources a name (their type, numbered when repeated); names must be unique."""
    named: list[SourceConfig] = []
    seen: set[str] = set()
    for index, config in enumerate(configs):
        name = config.name or (config.type if sum(c.type == config.type for c in configs) == 1 else f"{config.type}-{index}")
        if name in seen:
            problems.append(doc.problem(("sources", index, "name"), f"duplicate source name {name!r}"))
        seen.add(name)
        named.append(config.model_copy(update={"name": name}))
    return named


def dead_letter_path(config: Config) -> Path:
    """The dead-letter file: as configured, or in the state directory."""
    return config.dead_letter.path or config.state.directory / DEAD_LETTER_FILE_NAME


def sink_name(config: Config) -> str:
    return config.sink.name or config.sink.type
