"""Output bytes → capped lines → capped memory. Pure: no I/O, no asyncio.

:class:`LineSplitter` turns a stream's chunks into lines under :class:`LogConfig`'s two caps,
holding at most ``max_line_bytes`` of an unfinished line (the rest of an over-long line is
counted and skipped up to its newline, so the next line survives). :class:`StreamBuffer` keeps
what a result holds of a stream under :class:`OutputLimits`, whole lines, counting what it drops.

Both work a chunk at a time where they can (one split, one decode, one join per chunk), so
output of ordinary lines costs C-speed work rather than Python per line: the runner's output
throughput target is measured against a plain asyncio readline loop.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LineSplitter", "StreamBuffer", "cut_chars"]


def cut_chars(line: str, max_chars: int) -> str:
    """``line`` cut to ``max_chars`` characters, marked as solti-exec marks it."""
    return f"{line[:max_chars]}... (truncated {len(line) - max_chars} chars)"


def _size(text: str) -> int:
    """UTF-8 length (``isascii`` is a flag test in CPython: the common case costs nothing)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class LineSplitter:
    """Splits one stream into lines: ``feed(chunk)`` → finished lines, ``finish()`` → the last.

    Lines come without their ``\\n`` (and without the ``\\r`` of a CR LF); invalid UTF-8 becomes
    U+FFFD. A line over ``max_line_bytes`` keeps its first ``max_line_bytes`` (cut at a character
    boundary) and ends with ``... (truncated N bytes)``; a line over ``max_line_length`` characters
    keeps that many and ends with ``... (truncated N chars)``. :attr:`cut` counts cut lines.
    """

    def __init__(self, max_line_length: int, max_line_bytes: int) -> None:
        self.max_chars = max_line_length
        self.max_bytes = max_line_bytes
        self.cut = 0
        self._pending = bytearray()  # the unfinished line, at most max_bytes
        self._kept: bytes | None = None  # an over-long line's head, while its rest is skipped
        self._skipped = 0
        self._cr = False  # the last byte skipped was a CR: maybe the line's CR LF

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` finishes (possibly none)."""
        lines: list[str] = []
        start = 0
        if self._kept is not None:  # skipping the rest of an over-long line
            end = data.find(b"\n")
            if end < 0:
                self._skipped += len(data)
                self._cr = data.endswith(b"\r") or (self._cr and not data)
                return lines
            # The CR of a CR LF ends the line: it is no byte of it (it may have come earlier).
            crlf = data[end - 1] == 0x0D if end else self._cr
            self._skipped += end - crlf
            lines.append(self._close_long())
            start = end + 1
        last = data.rfind(b"\n", start)
        if last < 0:
            self._hold(data, start)
            return lines
        if self._pending:
            self._pending += data[start : last + 1]
            block = bytes(self._pending)
            self._pending.clear()
        else:
            block = data[start : last + 1]
        lines.extend(self._block(block))
        self._hold(data, last + 1)
        return lines

    def finish(self) -> str | None:
        """The last line if the stream did not end with a newline (else ``None``)."""
        if self._kept is not None:
            return self._close_long()
        if not self._pending:
            return None
        line = self._pending.decode("utf-8", "replace")
        self._pending.clear()
        return self._cap_chars(line)

    # --- inside --------------------------------------------------------------------------

    def _hold(self, data: bytes, start: int) -> None:
        """Keep ``data[start:]`` (no newline in it) as the unfinished line, within the cap."""
        if start >= len(data):
            return
        pending = self._pending
        pending += data[start:] if start else data
        # A final CR may be half of the line's CR LF: it does not count against the cap yet.
        if len(pending) - pending.endswith(b"\r") > self.max_bytes:
            cut = _boundary(pending, self.max_bytes)
            self._kept = bytes(pending[:cut])
            self._skipped = len(pending) - cut
            self._cr = pending.endswith(b"\r")
            pending.clear()

    def _close_long(self) -> str:
        kept, skipped = self._kept or b"", self._skipped
        self._kept, self._skipped, self._cr = None, 0, False
        if len(kept) > self.max_chars:  # the char cap cuts too: find where, in raw bytes
            # surrogateescape maps each invalid byte to one character, so the first max_chars
            # characters encode back to exactly the bytes they came from.
            head = kept.decode("utf-8", "surrogateescape")[: self.max_chars]
            size = len(head.encode("utf-8", "surrogateescape"))
            skipped += len(kept) - size
            kept = kept[:size]
        self.cut += 1
        return f"{kept.decode('utf-8', 'replace')}... (truncated {skipped} bytes)"

    def _block(self, block: bytes) -> list[str]:
        """Complete lines (``block`` ends with a newline) → their texts."""
        if len(block) > self.max_bytes + 1 and max(map(len, block.split(b"\n"))) > self.max_bytes:
            return [self._one(raw) for raw in block[:-1].split(b"\n")]
        lines = block[:-1].decode("utf-8", "replace").split("\n")
        if b"\r" in block:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if len(block) > self.max_chars and max(map(len, lines)) > self.max_chars:
            lines = [self._cap_chars(line) for line in lines]
        return lines

    def _one(self, raw: bytes) -> str:
        """One complete line, byte cap and all (the slow path: a chunk held an over-long line)."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) <= self.max_bytes:
            return self._cap_chars(raw.decode("utf-8", "replace"))
        cut = _boundary(raw, self.max_bytes)
        self._kept, self._skipped = raw[:cut], len(raw) - cut
        return self._close_long()

    def _cap_chars(self, line: str) -> str:
        if len(line) <= self.max_chars:
            return line
        self.cut += 1
        return cut_chars(line, self.max_chars)


def _boundary(data: bytes | bytearray, cut: int) -> int:
    """``cut``, moved back to the start of the UTF-8 character it would split (at most 3)."""
    for _ in range(3):
        if cut > 0 and data[cut] & 0xC0 == 0x80:
            cut -= 1
    return cut


class StreamBuffer:
    """What a result keeps of one stream: whole lines, at most ``max_bytes`` (UTF-8) of them.

    ``keep="head"`` keeps the first lines that fit, ``"tail"`` the last, ``"both"`` half of the
    budget each. Memory stays within the budget (plus one chunk in passing) however much is
    written; :attr:`dropped_bytes` and :attr:`dropped_lines` count what was left out.
    """

    def __init__(self, max_bytes: int | None, keep: str = "both") -> None:
        self.dropped_bytes = 0
        self.dropped_lines = 0
        if max_bytes is None:
            self._head = _Part(None)
            self._tail = None
        elif keep == "head":
            self._head, self._tail = _Part(max_bytes), None
        elif keep == "tail":
            self._head, self._tail = _Part(0), _Part(max_bytes)
        else:
            half = max_bytes // 2
            self._head, self._tail = _Part(half), _Part(max_bytes - half)

    def add(self, lines: list[str], terminated: bool = True) -> None:
        """Append finished ``lines`` (``terminated=False``: the stream's last, newline-less)."""
        if not lines:
            return
        blob = "\n".join(lines) + "\n" if terminated else "\n".join(lines)
        entry = (blob, _size(blob), len(lines))
        rest = self._head.take(entry)
        if rest is None:
            return
        if self._tail is None:
            self._count(rest)
            return
        for dropped in self._tail.push(rest):
            self._count(dropped)

    def text(self) -> str:
        """The kept lines, as the program wrote them (newlines included)."""
        parts = [blob for blob, _, _ in self._head.entries]
        if self._tail is not None:
            parts.extend(blob for blob, _, _ in self._tail.entries)
        return "".join(parts)

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._head.size + (self._tail.size if self._tail is not None else 0)

    def _count(self, entry: tuple[str, int, int]) -> None:
        self.dropped_bytes += entry[1]
        self.dropped_lines += entry[2]


class _Part:
    """A run of entries (blob, bytes, lines) within ``limit`` bytes (``None``: unbounded)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0
        self.full = limit == 0
        self.entries: deque[tuple[str, int, int]] = deque()

    def take(self, entry: tuple[str, int, int]) -> tuple[str, int, int] | None:
        """As head: keep what fits of ``entry``; return the rest (``None``: all kept)."""
        if self.full:
            return entry
        if self.limit is None or self.size + entry[1] <= self.limit:
            self._append(entry)
            return None
        kept, rest = _split(entry, self.limit - self.size, from_end=False)
        if kept is not None:
            self._append(kept)
        self.full = True
        return rest

    def push(self, entry: tuple[str, int, int]) -> list[tuple[str, int, int]]:
        """As tail: append ``entry``, then drop the oldest lines beyond the limit; the dropped."""
        self._append(entry)
        dropped = []
        assert self.limit is not None
        while self.size > self.limit:
            oldest = self.entries.popleft()
            self.size -= oldest[1]
            if self.size >= self.limit:
                dropped.append(oldest)
                continue
            # Dropping all of it would free more than needed: keep its newest lines that fit.
            kept, rest = _split(oldest, self.limit - self.size, from_end=True)
            if kept is not None:
                self.entries.appendleft(kept)
                self.size += kept[1]
            if rest is not None:
                dropped.append(rest)
        return dropped

    def _append(self, entry: tuple[str, int, int]) -> None:
        self.entries.append(entry)
        self.size += entry[1]


def _split(
    entry: tuple[str, int, int], budget: int, from_end: bool
) -> tuple[tuple[str, int, int] | None, tuple[str, int, int] | None]:
    """``entry`` cut into (the lines fitting ``budget``, taken from its start or its end; the
    rest), each ``None`` when empty."""
    blob = entry[0]
    lines = _lines(blob)
    order = reversed(lines) if from_end else lines
    kept: list[str] = []
    used = 0
    for line in order:
        size = _size(line)
        if used + size > budget:
            break
        kept.append(line)
        used += size
    if from_end:
        kept.reverse()
        rest_lines = lines[: len(lines) - len(kept)]
    else:
        rest_lines = lines[len(kept) :]
    return _entry(kept, used), _entry(rest_lines, None)


def _lines(blob: str) -> list[str]:
    """``blob`` split after each ``\\n`` only (``splitlines`` also splits at other breaks)."""
    parts = blob.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _entry(lines: list[str], size: int | None) -> tuple[str, int, int] | None:
    if not lines:
        return None
    blob = "".join(lines)
    return (blob, _size(blob) if size is None else size, len(lines))
