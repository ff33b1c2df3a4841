"""The tiny contract between the daemon and a source: a source emits records until it is told to stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field


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
        it came from (`path:line`). `token`, if given, is handed back to `Source.acknowledge` once the
        record reached its end (the stream, or the dead-letter file). Returns False when the daemon is
        stopping: the source must then stop.
        The record was either not taken, or taken and kept as unsent in the dead-letter file (it is
        accounted either way); do not emit it again in this run.
        """
        ...

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        """Hand over input that cannot become a record: it is dead-lettered with the reason and counted."""
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
    """One input a source stepped over without reading it as a record: its raw bytes and where it was."""

    data: bytes
    origin: str


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

    def acknowledge(self, tokens: Sequence[Any]) -> None:
        """The records emitted with these tokens reached their end: delivered, or dead-lettered with a reason.

        Tokens come in batches, in no particular order (requests complete out of order), from the sink's
        threads: keep this short and thread-safe. A source with checkpoints moves them past the records
        acknowledged so far. Records unsent at shutdown are not acknowledged. The default ignores them.
        """
        return None


SOURCE_TYPES: dict[str, type[Source]] = {}

S = TypeVar("S", bound=type[Source])


def register_source(cls: S) -> S:
    """Register a source class under the `type:` literal of its config model."""
    type_name = cls.config_model.model_fields["type"].default
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__}.config_model must give `type` a default literal name")
    SOURCE_TYPES[type_name] = cls
    return cls
