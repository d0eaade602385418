"""The runner's pure parts: line splitting under the two line caps, the capped stream buffer,
and the validation of LogConfig, OutputLimits and TaskSpec (no process is started here)."""

from __future__ import annotations

import logging
import math
import random

import pytest

from hardexec import PolicyError
from hardexec.runner import LogConfig, OutputLimits, TaskSpec
from hardexec.runner.lines import LineSplitter, StreamBuffer, cut_chars
from hardexec.runner.spec import DEFAULT_PATH, MAX_SCRIPT_BYTES, resolve_env

DEFAULT = LogConfig()


def split(data: bytes, chunk: int | None = None, log: LogConfig = DEFAULT):
    """``data`` through a LineSplitter, ``chunk`` bytes at a time: (lines, last, cut)."""
    splitter = LineSplitter(log.max_line_length, log.max_line_bytes)
    lines: list[str] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        lines += splitter.feed(data[start : start + step])
    return lines, splitter.finish(), splitter.cut


def every_chunking(data: bytes, log: LogConfig):
    """The splitter's output for every chunk size from 1 byte to the whole input."""
    return {chunk: split(data, chunk, log) for chunk in range(1, len(data) + 1)}


# --- LineSplitter --------------------------------------------------------------------------


def test_an_over_long_line_is_cut_and_marked_and_the_next_line_survives():
    log = LogConfig(max_line_bytes=8)
    data = b"AAAAAAAAAAAA\nKEEPME\n"
    for chunk, got in every_chunking(data, log).items():
        assert got == (["AAAAAAAA... (truncated 4 bytes)", "KEEPME"], None, 1), chunk


def test_a_line_exactly_at_the_byte_cap_is_not_marked():
    log = LogConfig(max_line_bytes=8)
    for data in (b"AAAAAAAA\n", b"x\nAAAAAAAA\n"):
        for chunk, (lines, last, cut) in every_chunking(data, log).items():
            assert lines[-1] == "AAAAAAAA" and last is None and cut == 0, chunk
    # the stream's last line, without a newline, at the cap: kept as it is
    for chunk, got in every_chunking(b"x\nAAAAAAAA", log).items():
        assert got == (["x"], "AAAAAAAA", 0), chunk
    # one byte more is cut, newline or not
    assert split(b"AAAAAAAAB\n", log=log) == (["AAAAAAAA... (truncated 1 bytes)"], None, 1)
    assert split(b"AAAAAAAAB", log=log) == ([], "AAAAAAAA... (truncated 1 bytes)", 1)


def test_a_crlf_line_exactly_at_the_byte_cap_is_not_marked_when_fed_whole():
    log = LogConfig(max_line_bytes=8)
    assert split(b"AAAAAAAA\r\nBB\r\n", log=log) == (["AAAAAAAA", "BB"], None, 0)
    assert split(b"AAAAAAAAAAAA\r\nKEEP\r\n", log=log) == (
        ["AAAAAAAA... (truncated 4 bytes)", "KEEP"],
        None,
        1,
    )


def test_crlf_lines_at_the_byte_cap_do_not_depend_on_chunking():
    log = LogConfig(max_line_bytes=8)
    for chunk, got in every_chunking(b"AAAAAAAA\r\nBB\r\n", log).items():
        assert got == (["AAAAAAAA", "BB"], None, 0), chunk
    for chunk, got in every_chunking(b"AAAAAAAAAAAA\r\nKEEP\r\n", log).items():
        assert got == (["AAAAAAAA... (truncated 4 bytes)", "KEEP"], None, 1), chunk


def test_invalid_utf8_becomes_the_replacement_character():
    for chunk, got in every_chunking(b"a\xffb\n\xc3\nok \xe2\x82\n", DEFAULT).items():
        assert got == (["a\ufffdb", "\ufffd", "ok \ufffd"], None, 0), chunk
    # a character split across chunks is decoded whole, not as two replacement characters
    for chunk, got in every_chunking("€uro\n".encode(), DEFAULT).items():
        assert got == (["€uro"], None, 0), chunk


def test_crlf_loses_its_cr_and_a_lone_cr_stays():
    for chunk, got in every_chunking(b"one\r\ntwo\r\n\r\nthree\n", DEFAULT).items():
        assert got == (["one", "two", "", "three"], None, 0), chunk
        assert all("\r" not in line for line in got[0])
    assert split(b"a\rb\n") == (["a\rb"], None, 0)  # only a CR right before LF goes


def test_the_last_line_without_a_newline_is_kept_without_one():
    for chunk, got in every_chunking(b"first\nlast", DEFAULT).items():
        assert got == (["first"], "last", 0), chunk
    assert split(b"first\n") == (["first"], None, 0)  # finish(): nothing more
    assert split(b"") == ([], None, 0)
    assert split(b"\n") == ([""], None, 0)  # an empty line is a line


MB = 1 << 20


@pytest.mark.parametrize("chunk", [None, 65536, 4096, 1000])
def test_a_megabyte_line_with_the_default_caps_keeps_4096_chars(chunk):
    lines, last, cut = split(b"A" * MB + b"\nnext\n", chunk)
    assert lines == ["A" * 4096 + f"... (truncated {MB - 4096} bytes)", "next"]
    assert last is None and cut == 1


def test_a_megabyte_line_without_a_newline_is_cut_the_same_way():
    lines, last, cut = split(b"A" * MB, 65536)
    assert lines == [] and last == "A" * 4096 + f"... (truncated {MB - 4096} bytes)"
    assert cut == 1


def test_the_char_cap_counts_characters_not_bytes():
    log = LogConfig(max_line_length=3)
    text = "é" * 10  # 20 bytes, 10 characters
    for chunk, got in every_chunking((text + "\nabc\n").encode(), log).items():
        assert got == (["ééé... (truncated 7 chars)", "abc"], None, 1), chunk
    assert split(text.encode(), log=log) == ([], "ééé... (truncated 7 chars)", 1)
    assert cut_chars("€" * 5, 2) == "€€... (truncated 3 chars)"


def test_the_byte_cap_cuts_at_a_character_boundary():
    log = LogConfig(max_line_bytes=4)
    for chunk, got in every_chunking("€€€\nok\n".encode(), log).items():  # 9 bytes
        assert got == (["€... (truncated 6 bytes)", "ok"], None, 1), chunk


def test_both_caps_on_one_line_count_every_byte_left_out():
    log = LogConfig(max_line_length=3, max_line_bytes=7)
    # 20 bytes; 6 held (3 characters, a 4th would split at byte 7), all 3 shown: 14 left out
    for chunk, got in every_chunking(("é" * 10 + "\n").encode(), log).items():
        assert got == (["ééé... (truncated 14 bytes)"], None, 1), chunk
    log = LogConfig(max_line_length=2, max_line_bytes=8)
    # 12 bytes: 8 held, 2 shown (2 bytes): 10 left out
    assert split(b"ABCDEFGHIJKL\n", log=log) == (["AB... (truncated 10 bytes)"], None, 1)


def test_the_truncated_byte_count_is_of_the_bytes_the_program_wrote():
    log = LogConfig(max_line_length=4, max_line_bytes=8)
    assert split(b"\xff" * 20 + b"\n", log=log) == (
        ["\ufffd" * 4 + "... (truncated 16 bytes)"],
        None,
        1,
    )


def test_lines_cut_by_either_cap_are_counted():
    log = LogConfig(max_line_length=5, max_line_bytes=10)
    data = b"short\n123456\n" + b"x" * 30 + b"\nok\n" + b"y" * 7
    lines, last, cut = split(data, 3, log)
    assert lines == [
        "short",
        "12345... (truncated 1 chars)",
        "xxxxx... (truncated 25 bytes)",
        "ok",
    ]
    assert last == "yyyyy... (truncated 2 chars)"
    assert cut == 3


def test_the_splitter_holds_at_most_max_line_bytes_of_an_unfinished_line():
    splitter = LineSplitter(4096, 1000)
    for _ in range(100):
        assert splitter.feed(b"z" * 4096) == []
        assert len(splitter._pending) <= 1000
        assert splitter._kept is None or len(splitter._kept) <= 1000
    [line] = splitter.feed(b"\n")
    assert line == "z" * 1000 + f"... (truncated {100 * 4096 - 1000} bytes)"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_output_does_not_depend_on_chunking(newline):
    """Random lines (multi-byte characters, invalid bytes, lengths around both caps), random
    chunkings: the same lines as the whole input at once gives."""
    rng = random.Random(20240611)
    alphabet = ["a", "b", "€", "é", "\udcff"]  # \udcff: the invalid byte 0xFF
    for _ in range(2000):
        log = LogConfig(max_line_length=rng.randint(1, 12), max_line_bytes=rng.randint(1, 16))
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
            for _ in range(rng.randint(1, 6))
        ]
        data = newline.join(line.encode("utf-8", "surrogateescape") for line in lines)
        data += rng.choice((b"", newline))
        whole = split(data, None, log)
        splitter = LineSplitter(log.max_line_length, log.max_line_bytes)
        got, start = [], 0
        while start < len(data):
            step = rng.randint(1, 10)
            got += splitter.feed(data[start : start + step])
            start += step
        assert (got, splitter.finish(), splitter.cut) == whole, (data, log)


def test_valid_utf8_lines_match_a_model_of_both_caps():
    rng = random.Random(99)
    for _ in range(2000):
        mc, mb = rng.randint(1, 12), rng.randint(1, 16)
        lines = ["".join(rng.choice("ab€é") for _ in range(rng.randint(0, 14))) for _ in range(4)]
        data = "\r\n".join(lines).encode() + b"\r\n"
        expected = []
        for line in lines:
            raw = line.encode()
            if len(raw) > mb:
                head = raw[:mb].decode("utf-8", "ignore")[:mc]  # whole characters only
                expected.append(f"{head}... (truncated {len(raw) - len(head.encode())} bytes)")
            elif len(line) > mc:
                expected.append(f"{line[:mc]}... (truncated {len(line) - mc} chars)")
            else:
                expected.append(line)
        chunk = rng.randint(1, 12)
        got = split(data, chunk, LogConfig(max_line_length=mc, max_line_bytes=mb))
        assert got[:2] == (expected, None), (data, mc, mb, chunk)


# --- StreamBuffer --------------------------------------------------------------------------

NUMBERED = [f"{i}\n" for i in range(1, 10001)]
NUMBERED_BYTES = sum(map(len, NUMBERED))


def fitting(lines: list[str], budget: int) -> list[str]:
    """The leading lines of ``lines`` whose UTF-8 sizes fit in ``budget``."""
    kept, used = [], 0
    for line in lines:
        size = len(line.encode())
        if used + size > budget:
            break
        kept.append(line)
        used += size
    return kept


def expected_kept(lines: list[str], max_bytes: int, keep: str) -> list[str]:
    if keep == "head":
        return fitting(lines, max_bytes)
    if keep == "tail":
        return fitting(lines[::-1], max_bytes)[::-1]
    head = fitting(lines, max_bytes // 2)
    rest = lines[len(head) :]
    return head + fitting(rest[::-1], max_bytes - max_bytes // 2)[::-1]


def fill(buffer: StreamBuffer, lines: list[str], sizes) -> None:
    """Add ``lines`` (each with its newline) in batches of the sizes ``sizes`` yields."""
    start = 0
    while start < len(lines):
        step = next(sizes)
        buffer.add([line[:-1] for line in lines[start : start + step]])
        start += step


@pytest.mark.parametrize("keep", ["head", "tail", "both"])
@pytest.mark.parametrize("batch", [1, 7, 500, 10000])
def test_the_buffer_keeps_whole_lines_from_the_chosen_end_and_counts_the_rest(keep, batch):
    buffer = StreamBuffer(1000, keep)
    fill(buffer, NUMBERED, iter(lambda: batch, None))
    kept = expected_kept(NUMBERED, 1000, keep)
    assert buffer.text() == "".join(kept)
    assert buffer.size == len(buffer.text()) <= 1000
    assert buffer.dropped_bytes == NUMBERED_BYTES - buffer.size
    assert buffer.dropped_lines == 10000 - len(kept)
    first, last = kept[0], kept[-1]
    if keep == "head":
        assert first == "1\n" and last != "10000\n"
    elif keep == "tail":
        assert first != "1\n" and last == "10000\n"
    else:
        assert first == "1\n" and last == "10000\n" and "5000\n" not in kept


def test_the_buffer_is_bounded_while_it_fills():
    buffer = StreamBuffer(1000, "both")
    for line in NUMBERED:
        buffer.add([line[:-1]])
        assert buffer.size <= 1000


def test_random_lines_and_batches_keep_what_the_model_says():
    rng = random.Random(4)
    for _ in range(1500):
        lines = [
            "".join(rng.choice("abé€x") for _ in range(rng.randint(0, 30))) + "\n"
            for _ in range(rng.randint(0, 60))
        ]
        keep, budget = rng.choice(["head", "tail", "both"]), rng.randint(1, 200)
        buffer = StreamBuffer(budget, keep)
        fill(buffer, lines, iter(lambda: rng.randint(1, 9), None))
        kept = expected_kept(lines, budget, keep)
        total = sum(len(line.encode()) for line in lines)
        assert buffer.text() == "".join(kept)
        assert buffer.size <= budget
        assert buffer.dropped_bytes == total - buffer.size
        assert buffer.dropped_lines == len(lines) - len(kept)


def test_sizes_are_utf8_bytes():
    buffer = StreamBuffer(10, "head")
    buffer.add(["€€€", "x"])  # 10 bytes, then 2
    assert buffer.text() == "€€€\n"
    assert (buffer.size, buffer.dropped_bytes, buffer.dropped_lines) == (10, 2, 1)


def test_a_line_larger_than_the_budget_is_dropped_whole():
    for keep in ("head", "tail", "both"):
        buffer = StreamBuffer(10, keep)
        buffer.add(["x" * 50])
        assert buffer.text() == "" and buffer.dropped_bytes == 51 and buffer.dropped_lines == 1


def test_no_cap_keeps_everything_and_the_unterminated_last_line():
    buffer = StreamBuffer(None)
    fill(buffer, NUMBERED, iter(lambda: 333, None))
    buffer.add(["tail-without-newline"], terminated=False)
    assert buffer.text() == "".join(NUMBERED) + "tail-without-newline"
    assert (buffer.dropped_bytes, buffer.dropped_lines) == (0, 0)
    capped = StreamBuffer(100, "tail")
    capped.add(["a", "b"])
    capped.add(["c"], terminated=False)
    assert capped.text() == "a\nb\nc"


# --- LogConfig, OutputLimits ---------------------------------------------------------------


def test_log_config_defaults():
    log = LogConfig()
    assert (log.max_line_length, log.max_line_bytes) == (4096, 65536)
    assert log.level == logging.INFO and log.log_lines is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_line_length": 0}, "log_config.max_line_length cannot be zero"),
        ({"max_line_bytes": 0}, "log_config.max_line_bytes cannot be zero"),
        ({"max_line_length": -1}, "log.max_line_length: -1 is negative"),
        ({"max_line_bytes": -5}, "log.max_line_bytes: -5 is negative"),
        ({"max_line_length": 1.5}, "log.max_line_length: expected a whole number"),
        ({"max_line_bytes": True}, "log.max_line_bytes: expected a whole number"),
        ({"level": "INFO"}, "log.level: expected a logging level number"),
        ({"level": True}, "log.level: expected a logging level number"),
        ({"log_lines": 1}, "log.log_lines: expected True or False"),
    ],
)
def test_log_config_refuses(fields, message):
    with pytest.raises(PolicyError) as err:
        LogConfig(**fields)
    assert str(err.value).startswith(message)


def test_output_limits_defaults_and_choices():
    assert OutputLimits() == OutputLimits(max_bytes=16 << 20, keep="both")
    assert OutputLimits(max_bytes=None).max_bytes is None
    assert [OutputLimits(keep=keep).keep for keep in ("head", "tail", "both")] == [
        "head",
        "tail",
        "both",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_bytes": 0}, "output.max_bytes: 0 is not a positive number of bytes"),
        ({"max_bytes": -1}, "output.max_bytes: -1 is not a positive number of bytes"),
        ({"max_bytes": 1.0}, "output.max_bytes: expected a whole number"),
        ({"max_bytes": False}, "output.max_bytes: expected a whole number"),
        ({"keep": "middle"}, "output.keep: 'middle' is not 'head', 'tail' or 'both'"),
    ],
)
def test_output_limits_refuse(fields, message):
    with pytest.raises(PolicyError) as err:
        OutputLimits(**fields)
    assert str(err.value).startswith(message)


# --- TaskSpec ------------------------------------------------------------------------------


def refused(make, *fields: str) -> str:
    """The PolicyError ``make()`` raises, checked to start with one of ``fields``."""
    with pytest.raises(PolicyError) as err:
        make()
    message = str(err.value)
    assert message.startswith(fields), message
    return message


def test_command_spec_normalises_its_fields(tmp_path):
    spec = TaskSpec.command(
        ["/bin/echo", tmp_path / "x"], cwd=tmp_path, env={"A": "1"}, input="é", timeout=2
    )
    assert spec.argv == ("/bin/echo", str(tmp_path / "x"))
    assert spec.cwd == str(tmp_path) and spec.env == (("A", "1"),)
    assert spec.input == "é".encode() and spec.timeout == 2.0
    assert spec.program == "echo" and spec.label == "echo"
    assert TaskSpec.command(["x"], name="mine").label == "mine"
    assert TaskSpec.command(["x"], input=bytearray(b"ab")).input == b"ab"


def test_script_spec_puts_the_interpreter_first():
    spec = TaskSpec.script("node", "console.log(1)", args=["a"])
    assert spec.argv == ("node", "--preserve-symlinks-main")
    assert spec.body == "console.log(1)" and spec.script_args == ("a",)
    assert TaskSpec.script("python", "pass").argv == ("python3",)
    assert TaskSpec.script(["perl", "-w"], "print 1").argv == ("perl", "-w")


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TaskSpec.command("ls -l"), "task.argv:"),
        (lambda: TaskSpec.command([]), "task.argv: empty"),
        (lambda: TaskSpec.command([""]), "task.argv[0]: empty"),
        (lambda: TaskSpec.command(["ls", "a\0b"]), "task.argv[1]:"),
        (lambda: TaskSpec.command(["ls", 3]), "task.argv[1]: expected text"),
        (lambda: TaskSpec(argv=("ls",), script_args=("x",)), "task.script_args:"),
        (lambda: TaskSpec.command(["ls"], cwd=""), "task.cwd: empty"),
        (lambda: TaskSpec.command(["ls"], cwd="/a\0b"), "task.cwd:"),
        (lambda: TaskSpec.command(["ls"], env=[("A", "1")]), "task.env:"),
        (lambda: TaskSpec.command(["ls"], env={"": "x"}), "task.env['']: empty variable"),
        (lambda: TaskSpec.command(["ls"], env={"A=B": "x"}), "task.env['A=B']:"),
        (lambda: TaskSpec.command(["ls"], env={"A\0": "x"}), "task.env['A\\x00']:"),
        (lambda: TaskSpec.command(["ls"], env={"A": "x\0"}), "task.env['A']:"),
        (lambda: TaskSpec.command(["ls"], env={1: "x"}), "task.env:"),
        (lambda: TaskSpec.command(["ls"], env_policy="keep"), "task.env_policy:"),
        (lambda: TaskSpec.command(["ls"], env_policy=3), "task.env_policy:"),
        (lambda: TaskSpec.command(["ls"], env_policy=["HOME", ""]), "task.env_policy[1]:"),
        (lambda: TaskSpec.command(["ls"], env_policy=["A=B"]), "task.env_policy[0]:"),
        (lambda: TaskSpec.command(["ls"], env_policy=["A\0"]), "task.env_policy[0]:"),
        (lambda: TaskSpec.command(["ls"], input=3), "task.input:"),
        (lambda: TaskSpec.command(["ls"], timeout=0), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], timeout=-1), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], timeout=math.nan), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], timeout=math.inf), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], timeout=True), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], timeout="5"), "task.timeout:"),
        (lambda: TaskSpec.command(["ls"], kill_after=-1), "task.kill_after:"),
        (lambda: TaskSpec.command(["ls"], drain_timeout=-0.5), "task.drain_timeout:"),
        (lambda: TaskSpec.command(["ls"], retries=-1), "task.retries:"),
        (lambda: TaskSpec.command(["ls"], retries=1001), "task.retries:"),
        (lambda: TaskSpec.command(["ls"], retries=1.0), "task.retries:"),
        (lambda: TaskSpec.command(["ls"], backoff=-1), "task.backoff:"),
        (lambda: TaskSpec.command(["ls"], fail_on_non_zero=1), "task.fail_on_non_zero:"),
        (lambda: TaskSpec.command(["ls"], name=""), "task.name: empty"),
        (lambda: TaskSpec.command(["ls"], max_script_bytes=0), "task.max_script_bytes:"),
        (lambda: TaskSpec.script("ruby", "puts 1"), "task.interpreter: unknown"),
        (lambda: TaskSpec.script("bash", ""), "task.body: empty script"),
        (lambda: TaskSpec.script("bash", b"echo"), "task.body: expected text"),
        (lambda: TaskSpec.script("bash", "echo", args=["a\0"]), "task.script_args[0]:"),
    ],
)
def test_task_spec_refuses_naming_the_field(make, field):
    refused(make, field)


def test_zero_kill_after_and_drain_timeout_are_allowed():
    spec = TaskSpec.command(["ls"], kill_after=0, drain_timeout=0, backoff=0)
    assert (spec.kill_after, spec.drain_timeout, spec.backoff) == (0.0, 0.0, 0.0)


def test_script_size_limits():
    assert MAX_SCRIPT_BYTES == 2 << 20
    TaskSpec.script("bash", "#" * MAX_SCRIPT_BYTES)  # exactly at the default limit
    message = refused(lambda: TaskSpec.script("bash", "#" * (MAX_SCRIPT_BYTES + 1)), "task.body")
    assert f"{MAX_SCRIPT_BYTES + 1} bytes" in message and "task.max_script_bytes" in message
    # the limit is in UTF-8 bytes: 4 characters of 3 bytes are over a limit of 10
    message = refused(lambda: TaskSpec.script("bash", "€€€€", max_script_bytes=10), "task.body")
    assert "12 bytes" in message and "limit of 10" in message
    TaskSpec.script("bash", "€€€", max_script_bytes=9)


def test_resolve_env_policies():
    base = {"HOME": "/root", "PATH": "/opt/bin", "SECRET": "x"}
    inherit = TaskSpec.command(["env"], env={"A": "1"})
    assert resolve_env(inherit, base=base) == {**base, "A": "1"}
    clear = TaskSpec.command(["env"], env_policy="clear", env={"A": "1"})
    assert resolve_env(clear, base=base) == {"A": "1", "PATH": DEFAULT_PATH}
    own_path = TaskSpec.command(["env"], env_policy="clear", env={"PATH": "/mine"})
    assert resolve_env(own_path, base=base) == {"PATH": "/mine"}
    allow = TaskSpec.command(["env"], env_policy=("HOME", "MISSING"))
    assert resolve_env(allow, base=base) == {"HOME": "/root", "PATH": DEFAULT_PATH}
    allow_path = TaskSpec.command(["env"], env_policy=("PATH",))
    assert resolve_env(allow_path, base=base) == {"PATH": "/opt/bin"}
    over = TaskSpec.command(["env"], env_policy="clear", env={"A": "task", "B": "task"})
    fixed = {"A": "runner"}
    assert resolve_env(over, fixed, base=base) == {"A": "runner", "B": "task", "PATH": DEFAULT_PATH}
