"""structlog setup: readable console lines on a terminal, JSON lines otherwise (journald, files, pipes)."""

from __future__ import annotations

import logging
import sys
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
