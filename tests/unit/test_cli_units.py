"""Sizes at the command line."""

import pytest

from hardexec.cli import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("10", 10), ("4K", 4096), ("64M", 64 << 20), ("2g", 2 << 30), ("1T", 1 << 40),
     ("256MiB", 256 << 20), ("10KB", 10 << 10), (" 8M ", 8 << 20)],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "12X", "1 M B", "0x10"])
def test_unparsable_sizes_exit_125_naming_the_option(text, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_size(text, "--fsize")
    assert stop.value.code == 125
    assert capsys.readouterr().err == (
        f"hardexec: --fsize: {text!r} is not a size (a whole number with an optional K, M, G "
        "suffix)\n"
    )


def test_format_size():
    sizes = (64 << 20, 1 << 30, 1536 << 10, 1536, 1000)
    assert [format_size(n) for n in sizes] == ["64M", "1G", "1536K", "1536", "1000"]
