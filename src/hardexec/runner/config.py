"""How a runner treats its tasks' output: per-line caps (:class:`LogConfig`) and per-stream
memory caps (:class:`OutputLimits`)."""

from __future__ import annotations

import logging

from .._record import frozen
from ..errors import PolicyError

__all__ = ["KEEP", "LogConfig", "OutputLimits"]

KEEP = ("head", "tail", "both")
_ZERO = {  # solti-exec's own messages
    "max_line_length": "log_config.max_line_length cannot be zero",
    "max_line_bytes": "log_config.max_line_bytes cannot be zero (all output would be swallowed)",
}


@frozen
class LogConfig:
    """Line handling, as solti-exec's ``LogConfig``.

    Args:
        max_line_length: characters kept of one line; the rest is cut and the line ends with
            ``... (truncated N chars)``.
        max_line_bytes: bytes held of one line while it is read (the line is never read whole
            into memory); beyond it the rest is skipped up to the newline and the line ends with
            ``... (truncated N bytes)``.
        level: the :mod:`logging` level of output lines on the ``hardexec.runner`` logger.
        log_lines: whether output lines go to :mod:`logging` at all (results and sinks get them
            either way).
    """

    max_line_length: int = 4096
    max_line_bytes: int = 65536
    level: int = logging.INFO
    log_lines: bool = True

    def __post_init__(self) -> None:
        for name in ("max_line_length", "max_line_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyError(f"log.{name}: expected a whole number, got {value!r}")
            if value == 0:
                raise PolicyError(_ZERO[name])
            if value < 0:
                raise PolicyError(f"log.{name}: {value} is negative")
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise PolicyError(f"log.level: expected a logging level number, got {self.level!r}")
        if not isinstance(self.log_lines, bool):
            raise PolicyError(f"log.log_lines: expected True or False, got {self.log_lines!r}")


@frozen
class OutputLimits:
    """How much of each stream (stdout, stderr) a result keeps in memory.

    Args:
        max_bytes: bytes kept per stream; ``None``: no cap (only for output you trust).
        keep: ``"head"`` (the first ``max_bytes``), ``"tail"`` (the last) or ``"both"`` (half
            each). Whole lines are kept; what is dropped is counted in ``Result.truncated``.
    """

    max_bytes: int | None = 16 << 20
    keep: str = "both"

    def __post_init__(self) -> None:
        value = self.max_bytes
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyError(f"output.max_bytes: expected a whole number, got {value!r}")
            if value <= 0:
                raise PolicyError(f"output.max_bytes: {value} is not a positive number of bytes")
        if self.keep not in KEEP:
            raise PolicyError(f"output.keep: {self.keep!r} is not 'head', 'tail' or 'both'")
