"""The tiny contract between the daemon and a source: a source emits records until it is told to stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sources.units import ByteSize


class SourceConfig(BaseModel):
    """Fields every source has. Subclasses add their own and set `type` to a `Literal` of their name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(
        default=None, description="Name used in logs, metrics and checkpoints (default: the type, numbered)."
    )


class SourceContext(Protocol):
    """What the daemon hands a running source."""

    @property
    def name(self) -> str: ...

    @property
    def stopping(self) -> bool:
        """True once the daemon asked the source to stop."""
        ...

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        """Hand one record over; blocks while the buffer is full.

        `data` is what will be shipped, `event` its parsed form (sinks read keys from it), `origin` where
        it came from (`path:line`). A source with checkpoints gives `token=(key, position)`: `position` is
        where it would resume after this record (JSON-able), `key` names the stream of positions it belongs
        to (a file's identity; None for a source with one cursor). The daemon folds the tokens of the
        longest prefix of acknowledged records (delivered or dead-lettered) into `{key: position}` and
        hands that to `Source.checkpoint_state`. Returns False when the daemon is stopping: the source
        must then stop.
        The record was either not taken, or taken and kept as unsent in the dead-letter file (it is
        accounted either way); do not emit it again in this run.
        """
        ...

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        """Hand over input that cannot become a record: it is dead-lettered with the reason and counted.

        `token` as for `emit`: a dead-lettered input is done, so the checkpoint may pass it."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True early, as soon as the daemon is stopping."""
        ...

    # Live sources (network streams) also report their connection; file-like sources need none of these.

    def connection(self, connected: bool, detail: str = "") -> None:
        """The source (dis)connected from its server: `tweet_producer_source_connected` follows it, each change is logged.

        `detail` names the server or the cause; it must never carry a secret (tokens, keys, signed URLs).
        """
        ...

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        """The source will reconnect after `delay_s`: counted by `reason` (e.g. `stall`, `http_429`, `network`),
        logged at most once per interval and reason. Wait with `wait(delay_s)` so a stop cuts it short."""
        ...

    def protocol_message(self, kind: str, detail: str) -> None:
        """A protocol message that is not a record (an in-band error, an operational notice, an unknown event
        kind): counted by `kind`, logged at most once per interval and kind. Payloads meant as records but
        unreadable go to `reject` instead."""
        ...


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """One input a source stepped over without reading it as a record: its raw bytes and where it was, and the
    checkpoint token of the position after it (as `emit` takes), so a checkpoint can pass it."""

    data: bytes
    origin: str
    token: Any = None


class Source(ABC):
    """A source reads its input and calls `ctx.emit` for each record. `run` returns when it is done or stopping.

    An exception escaping `run` is a crash: the daemon logs it and restarts the source with backoff. A
    source that can say where it is reading (`position`) and step over one input (`skip`) is never stopped
    by one input: when it crashes twice at the same position, the daemon dead-letters that input
    (reason `source_crash`) and restarts the source after it.
    """

    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @abstractmethod
    def run(self, ctx: SourceContext) -> None: ...

    def position(self) -> Hashable | None:
        """An opaque, comparable token naming the next input `run` would read; None without positions.

        Called by the daemon after `run` crashed, from the source's own thread. The default (no positions)
        means crashes are only ever retried with backoff.
        """
        return None

    def skip(self, position: Hashable) -> SkippedInput | None:
        """Step over the input at `position` (a value `position` returned): the next `run` resumes after it.

        Returns that input's raw bytes and origin, for the dead-letter file, or None when it cannot be
        skipped (no such input, or it cannot be read): the daemon then keeps restarting with backoff.
        """
        return None

    def checkpoints(self) -> bool:
        """Whether this source keeps a checkpoint (it then passes `token=` to emit and reject)."""
        return False

    def resume(self, state: Mapping[str, Any]) -> None:
        """Called once, before the first `run`, with the state a checkpoint of an earlier run saved.

        Raise `CheckpointUnusable` when it does not fit this source (another format, another input): the
        daemon reports it, sets the file aside and the source starts from its configured beginning.
        """
        return None

    def checkpoint_state(self, committed: Mapping[Hashable, Any]) -> dict[str, Any]:
        """The JSON-able state to save: `committed` holds, per token key, the position after the last
        record of the acknowledged prefix in this run (empty before the first). Keep what `resume` got for
        keys this run did not reach. Called from the daemon's checkpoint thread: read, do not mutate,
        what `run` changes, and keep it short."""
        return {}


class CheckpointUnusable(Exception):
    """A saved checkpoint does not fit the source; the message says why (it is logged)."""


class SpoolSettings(BaseModel):
    """The durable spool of a live source that cannot replay: records are on disk before they count as
    received, and leave it once delivered or dead-lettered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Spool this source's records on disk (in state.directory).")
    max_bytes: ByteSize = Field(default=1024**3, description="Disk the spool may use at most.")
    when_full: Literal["block", "drop_oldest"] = Field(
        default="block",
        description="block: the source waits (a live server may disconnect it); drop_oldest: the oldest "
        "records not yet sent are dropped, counted and logged.",
    )
    segment_bytes: ByteSize = Field(default=64 * 1024**2, description="Size of one spool segment file.")


SOURCE_TYPES: dict[str, type[Source]] = {}

S = TypeVar("S", bound=type[Source])


def register_source(cls: S) -> S:
    """Register a source class under the `type:` literal of its config model."""
    type_name = cls.config_model.model_fields["type"].default
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__}.config_model must give `type` a default literal name")
    SOURCE_TYPES[type_name] = cls
    return cls
