"""What every synthetic kind shares: fast seeded draws, chunked reseeding, timestamps, JSON encoding.

Determinism: record `index` of a kind is a function of (seed, index) and its timestamp only. The draws
are reseeded every `CHUNK_RECORDS` records from (seed, chunk number), so resuming at any index replays at
most one chunk's draws (never the whole history), and reseeding (about 25 us for Python's Mersenne
Twister) costs a fraction of a microsecond per record.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

# Records per reseed: large enough that reseeding is cheap per record, small enough that a resume
# regenerates (and discards) at most a few milliseconds of records.
CHUNK_RECORDS = 256
# Seeds and chunk numbers are packed into one integer seed: seed in the high bits, chunk in the low.
_CHUNK_BITS = 64
T = TypeVar("T")

# The encoding of every synthetic record (and of the bundled sample): compact, UTF-8, no ASCII escapes.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
encode_json: Callable[[Any], str] = _ENCODER.encode
# A JSON string literal for a str, as the encoder above writes it (quotes included).
json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


class Draws:
    """The draws a generator needs, built on `random()` only (Random's own randrange and choice are
    pure Python and several times slower). Same seed, same draws."""

    __slots__ = ("_rng", "bits", "random")

    def __init__(self) -> None:
        self._rng = random.Random()
        self.random = self._rng.random
        self.bits = self._rng.getrandbits

    def reseed(self, seed: int, chunk: int) -> None:
        self._rng.seed((seed << _CHUNK_BITS) | chunk)

    def randrange(self, stop: int) -> int:
        return int(self.random() * stop)

    def randint(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def choice(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        pool = list(items)
        picked = []
        for _ in range(k):
            picked.append(pool.pop(int(self.random() * len(pool))))
        return picked

    def gauss(self, sigma: float) -> float:
        # Irwin-Hall: the sum of three uniforms, centred and scaled to `sigma`; plausible noise, cheap.
        return (self.random() + self.random() + self.random() - 1.5) * 2.0 * sigma


def chunked(seed: int, start: int, make: Callable[[Draws, int], T]) -> Iterator[T]:
    """make(draws, index) for index = start, start + 1, ... with the draws reseeded at each chunk start."""
    draws = Draws()
    chunk_start = start - start % CHUNK_RECORDS
    draws.reseed(seed, chunk_start // CHUNK_RECORDS)
    for skipped in range(chunk_start, start):
        make(draws, skipped)  # replays the chunk's draws up to `start`; the records are dropped
    index = start
    while True:
        if index % CHUNK_RECORDS == 0:
            draws.reseed(seed, index // CHUNK_RECORDS)
        yield make(draws, index)
        index += 1


def uuid_text(draws: Draws) -> str:
    """A random UUID in the version 4 layout, from the draws."""
    text = f"{draws.bits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{'89ab'[int(text[16], 16) & 3]}{text[17:20]}-{text[20:]}"


class Timestamps:
    """Record timestamps as ISO 8601 UTC with milliseconds and a `Z` (the processor reads them).

    With `start_ms` each record's time is start + index * step (fully deterministic); without it, the
    real clock at generation time.
    """

    def __init__(self, start_ms: int | None, step_ms: float) -> None:
        self.start_ms = start_ms
        self.step_ms = step_ms
        self._second = -1
        self._prefix = ""

    def epoch_ms(self, index: int) -> int:
        if self.start_ms is None:
            return int(time.time() * 1000)
        return self.start_ms + int(index * self.step_ms)

    def iso(self, epoch_ms: int) -> str:
        second, millis = divmod(epoch_ms, 1000)
        if second != self._second:  # one strftime per second of record time, not per record
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{millis:03d}Z"
