"""Sizes as config.yaml may write them (`1048576`, `512KiB`, `64MiB`, `1GiB`), for every config model: the
daemon's sections and the plugins' own (sources may not import the daemon, so the parsing lives here)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
# A value quoted in an error message is cut to this many characters (a huge value must not flood the terminal).
_SHOWN_CHARS = 80


def parse_size(value: Any) -> Any:
    """Bytes as an integer, or a string such as "64MiB", "512KiB"; anything else is left to the model's type check."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            shown = repr(value) if len(repr(value)) <= _SHOWN_CHARS else repr(value)[:_SHOWN_CHARS] + "..."
            raise ValueError(f"{shown} is not a size (examples: 1048576, 512KiB, 64MiB)")
        return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    return value


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
