"""structlog setup: readable console lines on a terminal, JSON lines otherwise (journald, files, pipes)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json_lines else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_lines else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (botocore, werkzeug in moto) stay quiet below WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("werkzeug", "botocore", "urllib3", "moto"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(**bindings: Any) -> Any:
    return structlog.get_logger("tweet-producer").bind(**bindings)


class RateLimitedLog:
    """Lets one line per key through each `interval_s`; the next line that passes carries how many were held back.

    Counting is not rate-limited (the caller's counters see every event); only the log lines are, so a flood
    (a stream that denies every request, a file of bad lines) cannot drown the log or cost a write per record.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None to hold this line back; otherwise the number of lines held back for `key` since the last one."""
        now = self._clock()
        with self._lock:
            if now < self._next_at.get(key, float("-inf")):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._next_at[key] = now + self.interval_s
            return self._suppressed.pop(key, 0)

    def emit(self, key: Hashable, log: Callable[..., Any], event: str, **fields: Any) -> bool:
        """Log `event` via `log` (a bound logger method) unless held back; True when it was logged."""
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        log(event, **fields)
        return True
