"""Where a task's output goes as it is read: the result, the log, and the task's events.

:class:`Pipe` is the asyncio protocol of one output stream (bytes → capped lines → result,
logger, :class:`Outlet`); :class:`Input` writes the task's stdin. :class:`Outlet` hands events
to a sink or a :meth:`Runner.stream` consumer: a sync sink is called at once; otherwise events
wait in a queue, a chunk's lines as one batch (expanded into :class:`Event` objects only as they
are consumed), and a few queued batches pause the pipes, so a slow consumer slows the program
down while memory stays at a few chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re

from .lines import LineSplitter, StreamBuffer
from .result import Event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from typing import Any

    from .config import LogConfig, OutputLimits

__all__ = ["END", "Input", "Outlet", "Pipe", "escape", "logger"]

logger = logging.getLogger("hardexec.runner")

#: The last item of an outlet's queue: the task is over.
END: Any = object()

# The log copy of a line (never the result's or a sink's) has its control characters escaped:
# C0 and C1 controls, DEL, and the characters that end a line or reorder text for a reader
# (NEL, the Unicode line and paragraph separators, bidi overrides and isolates), so a task can
# neither forge log lines nor hide text in them.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """``text`` with the characters above as ``\\xNN`` / ``\\uNNNN``."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class _Lines:
    """One chunk's lines of one stream, queued as one item."""

    __slots__ = ("attempt", "first", "lines", "stream", "task")

    def __init__(self, task: str, attempt: int, stream: str, first: int, lines: list[str]):
        self.task, self.attempt, self.stream, self.first, self.lines = (
            task,
            attempt,
            stream,
            first,
            lines,
        )

    def events(self) -> Iterator[Event]:
        """The batch's events, made one at a time (a chunk may hold 100 000 short lines)."""
        for number, line in enumerate(self.lines, self.first):
            yield Event(
                "line", self.task, self.attempt, stream=self.stream, number=number, text=line
            )


class Outlet:
    """A task's events: to a sync ``sink`` at once, or queued (``queued``) for a consumer."""

    HIGH, LOW = 4, 1  # queued line batches (chunks): pause the pipes above, resume at or below

    def __init__(self, sink: Callable[[Event], Any] | None, queued: bool) -> None:
        self.sink = sink
        self.queue: asyncio.Queue[Any] | None = asyncio.Queue() if queued else None
        self.readers: list[asyncio.ReadTransport] = []
        self.batches = 0
        self.flowing = asyncio.Event()  # set while the pipes are read
        self.flowing.set()
        self.stalled = asyncio.Event()  # set while they are paused for a slow consumer
        self._warned = False
        self._released = False

    @property
    def wants_lines(self) -> bool:
        """Whether lines must be turned into events at all."""
        return self.sink is not None or self.queue is not None

    def put(self, event: Event) -> None:
        """One event (``start``, ``exit``)."""
        if self.queue is not None:
            self.queue.put_nowait(event)
        elif self.sink is not None:
            self._call(event)

    def put_lines(self, task: str, attempt: int, stream: str, first: int, lines: list[str]) -> None:
        """A chunk's lines of ``stream``, numbered from ``first``."""
        batch = _Lines(task, attempt, stream, first, lines)
        if self.queue is None:
            for event in batch.events():
                self._call(event)
            return
        self.queue.put_nowait(batch)
        self.batches += 1
        if self.batches > self.HIGH and self.flowing.is_set() and not self._released:
            self.flowing.clear()
            self.stalled.set()
            for reader in self.readers:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    reader.pause_reading()

    async def events(self) -> AsyncIterator[Event]:
        """The queued events, in order, until :data:`END`."""
        assert self.queue is not None
        while (item := await self.queue.get()) is not END:
            if isinstance(item, _Lines):
                for event in item.events():
                    yield event
                self._taken()
            else:
                yield item

    def release(self) -> None:
        """Read on whatever the consumer does (it may be gone: the task was cancelled), so
        the pipes of a dead tree reach their end; what they held is bounded by their size."""
        self._released = True
        self._resume()

    def _taken(self) -> None:
        self.batches -= 1
        if self.batches <= self.LOW:
            self._resume()

    def _resume(self) -> None:
        if not self.flowing.is_set():
            self.flowing.set()
            self.stalled.clear()
            for reader in self.readers:
                with contextlib.suppress(RuntimeError):
                    reader.resume_reading()

    def _call(self, event: Event) -> None:
        try:
            value = self.sink(event)  # type: ignore[misc]
        except Exception:  # a sink's bug must not leave a task's tree running
            logger.exception("hardexec: the output sink raised on %s", event.kind)
            return
        if inspect.isawaitable(value):  # a plain function returning a coroutine: say so
            close = getattr(value, "close", None)
            if close is not None:
                close()  # never awaited: no "was never awaited" noise, no half-run sink
            if not self._warned:
                self._warned = True
                logger.error(
                    "hardexec: the output sink returned an awaitable but is not a coroutine "
                    "function, so nothing awaits it: make it 'async def'"
                )


class Pipe(asyncio.Protocol):
    """One output stream of the program: bytes → capped lines → result, log, events."""

    def __init__(self, name: str, owner: Any) -> None:
        """``owner`` (the attempt) has ``label``, ``number``, ``log``, ``output``, ``outlet``."""
        log: LogConfig = owner.log
        output: OutputLimits = owner.output
        self.name = name
        self.task: str = owner.label
        self.attempt: int = owner.number
        self.log = log
        self.log_lines = log.log_lines and logger.isEnabledFor(log.level)
        self.outlet: Outlet = owner.outlet
        self.splitter = LineSplitter(log.max_line_length, log.max_line_bytes)
        self.buffer = StreamBuffer(output.max_bytes, output.keep)
        self.count = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        lines = self.splitter.feed(data)
        if lines:
            self._lines(lines, True)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        last = self.splitter.finish()
        if last is not None:
            self._lines([last], False)
        if not self.closed.done():
            self.closed.set_result(None)

    def _lines(self, lines: list[str], terminated: bool) -> None:
        self.buffer.add(lines, terminated)
        first = self.count + 1
        self.count += len(lines)
        if self.outlet.wants_lines:
            self.outlet.put_lines(self.task, self.attempt, self.name, first, lines)
        if self.log_lines:
            try:
                self._log(lines, first)
            except Exception:  # a logging filter's or handler's bug: the lines are kept anyway
                logger.exception("hardexec: logging a line of %s raised", self.name)

    def _log(self, lines: list[str], first: int) -> None:
        level, task = self.log.level, escape(self.task)
        for number, line in enumerate(lines, first):
            logger.log(
                level,
                "%s",
                escape(line),
                extra={"task": task, "stream": self.name, "line_number": number},
            )


class Input(asyncio.Protocol):
    """The task's stdin: written, then closed; a program that stops reading is no error."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # gone: nothing left to abort

    def abort(self) -> None:
        """Drop what is still unwritten (a reader outside the tree may never take it)."""
        if self.transport is not None:
            self.transport.abort()
