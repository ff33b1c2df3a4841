"""The tiny contract between the daemon and a source: a source emits records until it is told to stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
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

    def emit(self, data: bytes, event: Any, origin: str) -> bool:
        """Hand one record over; blocks while the buffer is full.

        `data` is what will be shipped, `event` its parsed form (sinks read keys from it), `origin` where
        it came from (`path:line`). Returns False, without taking the record, when the daemon is stopping.
        """
        ...

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        """Hand over input that cannot become a record: it is dead-lettered with the reason and counted."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True early, as soon as the daemon is stopping."""
        ...


class Source(ABC):
    """A source reads its input and calls `ctx.emit` for each record. `run` returns when it is done or stopping.

    An exception escaping `run` is a crash: the daemon logs it and restarts the source with backoff.
    """

    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @abstractmethod
    def run(self, ctx: SourceContext) -> None: ...


SOURCE_TYPES: dict[str, type[Source]] = {}

S = TypeVar("S", bound=type[Source])


def register_source(cls: S) -> S:
    """Register a source class under the `type:` literal of its config model."""
    type_name = cls.config_model.model_fields["type"].default
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__}.config_model must give `type` a default literal name")
    SOURCE_TYPES[type_name] = cls
    return cls
