"""What a program needs to start: found from its headers, never by running it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardexec.confine import deps, elf
from hardexec.confine.deps import dependencies
from hardexec.confine.landlock import abi

X86_64 = os.uname().machine == "x86_64"
LOADER = "/lib64/ld-linux-x86-64.so.2"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SRC = str(Path(__file__).resolve().parents[2] / "src")
real = os.path.realpath

needs_x86_64_glibc = pytest.mark.skipif(
    not (X86_64 and os.path.exists(LOADER) and os.path.exists(LIBC)),
    reason="the expected paths are those of x86_64 Debian (glibc's loader in /lib64)",
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test looks things up anew: a cached answer from another test proves nothing."""
    deps.clear_cache()
    yield
    deps.clear_cache()


def paths(rules):
    return [path for path, _ in rules]


def executable(path: Path, text: str | bytes) -> str:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(0o755)
    return str(path)


# -- real programs ----------------------------------------------------------------------------


@needs_x86_64_glibc
def test_cat_needs_itself_the_loader_libc_and_the_cache():
    rules = dependencies("/bin/cat")
    assert rules[0] == (real("/bin/cat"), "rx")
    assert (real(LOADER), "rx") in rules
    assert (real(LIBC), "ro") in rules
    assert ("/etc/ld.so.cache", "ro") in rules
    assert len(set(paths(rules))) == len(rules)
    # Resolved paths only: a rule is attached to the inode the path reaches anyway.
    assert all(path == real(path) for path in paths(rules))
    assert LOADER not in paths(rules)


@needs_x86_64_glibc
def test_a_name_is_looked_up_on_the_path_like_subprocess_does():
    assert dependencies("cat", "/nonexistent:/bin") == dependencies("/bin/cat")
    assert dependencies(b"cat", "/bin") == dependencies("/bin/cat")
    assert dependencies("cat", "/nonexistent") == ()
    assert dependencies("cat") == dependencies("/bin/cat")  # os.defpath: /bin:/usr/bin


def test_a_missing_program_needs_nothing(tmp_path):
    assert dependencies(str(tmp_path / "missing")) == ()
    assert dependencies("") == ()
    assert dependencies("a\0b") == ()
    assert dependencies(str(tmp_path)) == ()  # a directory is not executed


def test_a_non_executable_file_is_not_found_on_the_path(tmp_path):
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    assert dependencies("tool", str(tmp_path)) == ()


@needs_x86_64_glibc
def test_sh_script_needs_the_shell_and_its_libraries(tmp_path):
    script = executable(tmp_path / "run.sh", "#!/bin/sh\necho hi\n")
    rules = dependencies(script)
    assert rules[0] == (script, "rx")
    assert rules[1] == (real("/bin/sh"), "rx")
    assert set(dependencies("/bin/sh")) <= set(rules)
    assert (real(LIBC), "ro") in rules


def test_shebang_with_blanks_and_an_argument(tmp_path):
    script = executable(tmp_path / "s", "#! \t/bin/sh  -e -u \t\nexit 0\n")
    assert paths(dependencies(script))[:2] == [script, real("/bin/sh")]


@needs_x86_64_glibc
@pytest.mark.parametrize(
    "line",
    [
        "#!/usr/bin/env python3",
        "#!/usr/bin/env -S python3 -u",
    ],
)
def test_env_script_needs_env_and_the_command(tmp_path, line):
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 to look up")
    script = executable(tmp_path / "tool", line + "\nprint('hi')\n")
    rules = dependencies(script, "/usr/bin:/bin")
    assert rules[0] == (script, "rx")
    assert set(dependencies("/usr/bin/env")) <= set(rules)
    python = dependencies("/usr/bin/python3")
    assert set(python) <= set(rules)
    assert python[0] == (real("/usr/bin/python3"), "rx")


@pytest.mark.parametrize(
    ("arg", "command"),
    [
        ("python3", "python3"),
        ("python3 -u", "python3 -u"),  # without -S env is given one argument, blanks and all
        ("-S python3 -u", "python3"),
        ("-Spython3 -u", "python3"),
        # env's own options and assignments are not followed: what it runs then is not
        # allowed, and the run fails closed (a crafted line must not choose a file to allow).
        ("-S -i -u HOME LANG=C python3", None),
        ("-S --unset=HOME -C /tmp node", None),
        ("-S -iS/bin/cat /etc/shadow", None),
        ("-S -i", None),
        ("", None),
    ],
)
def test_env_command(arg, command):
    assert deps._env_command(arg) == command


def test_a_shebang_naming_a_file_that_is_no_program_allows_nothing_of_it(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not a program\n")
    for line in (f"#!{secret}", f"#!/usr/bin/env -S -iS/bin/cat {secret}"):
        script = executable(tmp_path / "evil", line + "\n")
        deps.clear_cache()
        assert str(secret) not in paths(dependencies(script, "/usr/bin:/bin")), line


def test_env_command_not_found_leaves_env_alone(tmp_path):
    script = executable(tmp_path / "tool", "#!/usr/bin/env no-such-command-anywhere\n")
    env = paths(dependencies("/usr/bin/env"))
    assert paths(dependencies(script, str(tmp_path))) == [script, *env]


def test_interpreter_chains_are_bounded(tmp_path):
    # Each script is the next one's interpreter, deeper than the kernel follows; and a
    # script that is its own interpreter.
    previous = "/bin/sh"
    for index in range(8):
        previous = executable(tmp_path / f"s{index}", f"#!{previous}\n")
    start = time.monotonic()
    rules = dependencies(previous)
    assert len(rules) <= 5 + 5  # the script, four interpreters, nothing of /bin/sh
    assert real("/bin/sh") not in paths(rules)
    loop = executable(tmp_path / "loop", f"#!{tmp_path / 'loop'}\n")
    assert dependencies(loop) == ((loop, "rx"),)
    env_loop = executable(tmp_path / "env-loop", "#!/usr/bin/env env-loop\n")
    assert dependencies("env-loop", str(tmp_path))[0] == (env_loop, "rx")
    assert time.monotonic() - start < 2


# -- hostile and odd files --------------------------------------------------------------------


def test_garbage_gives_just_the_file(tmp_path):
    garbage = executable(tmp_path / "garbage", os.urandom(4096).replace(b"#!", b"xx"))
    assert dependencies(garbage) == ((garbage, "rx"),)


def test_a_truncated_elf_header_gives_just_the_file(tmp_path):
    with open("/bin/cat", "rb") as f:
        head = f.read(40)
    truncated = executable(tmp_path / "truncated", head)
    assert dependencies(truncated) == ((truncated, "rx"),)
    magic = executable(tmp_path / "magic", b"\x7fELF")
    assert dependencies(magic) == ((magic, "rx"),)


def test_an_unreadable_program_is_allowed_alone(tmp_path):
    program = executable(tmp_path / "secret", "#!/bin/sh\n")
    os.chmod(program, 0o111)
    if os.geteuid() != 0:
        assert dependencies(program) == ((program, "rx"),)
        return
    # Root reads any file: ask from a root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    # (dropped from the bounding set, so execve does not give them), to whom 0111 is unreadable.
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to look as a root without DAC overrides")
    code = (
        "import sys\n"
        "from hardexec.confine.deps import dependencies\n"
        "try:\n"
        "    open(sys.argv[1]).close(); print('readable')\n"
        "except PermissionError:\n"
        "    print(dependencies(sys.argv[1]))\n"
    )
    drop = "--bounding-set=-dac_override,-dac_read_search"
    done = subprocess.run(
        ["setpriv", drop, sys.executable, "-c", code, program],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == f"{((program, 'rx'),)!r}\n", done.stderr


def test_a_fifo_on_a_search_path_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "libc.so.6")
    start = time.monotonic()
    assert elf.open_regular(str(tmp_path / "libc.so.6")) is None
    assert time.monotonic() - start < 1


ET_DYN, EM_X86_64, PT_LOAD, PT_DYNAMIC, PT_INTERP = 3, 62, 1, 2, 3
DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RUNPATH = 1, 5, 10, 29


def crafted_elf(
    *,
    interp: str | None = LOADER,
    needed: tuple[str, ...] = (),
    runpath: str | None = None,
    dyn_filesz: int | None = None,
    strsz: int | None = None,
    phnum: int | None = None,
    phoff: int = 64,
    dyn_offset_override: int | None = None,
    repeat: int = 1,
    terminate: bool = True,
    elf_class: int = 2,
) -> bytes:
    """A 64-bit little-endian x86_64 ET_DYN file laid out by hand: header, PT_LOAD (the whole
    file at address 0, so addresses are offsets), PT_INTERP, PT_DYNAMIC, strings, dynamic."""
    strings = b"\0"
    offsets = []
    for name in (*needed, runpath or ""):
        offsets.append(len(strings))
        strings += name.encode() + b"\0"
    phdrs_at = 64
    interp_at = phdrs_at + 3 * 56
    interp_bytes = interp.encode() + b"\0" if interp else b""
    strtab_at = interp_at + len(interp_bytes)
    dyn_at = strtab_at + len(strings)
    entries = [(DT_STRTAB, strtab_at), (DT_STRSZ, strsz if strsz is not None else len(strings))]
    entries += [(DT_NEEDED, off) for off in offsets[: len(needed)]] * repeat
    if runpath is not None:
        entries.append((DT_RUNPATH, offsets[-1]))
    if terminate:
        entries.append((0, 0))
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    size = dyn_at + len(dynamic)
    count = 3 if phnum is None else phnum
    header = b"\x7fELF" + bytes((elf_class, 1, 1)) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", ET_DYN, EM_X86_64, 1, 0, phoff, 0, 0, 64, 56, count,
                          0, 0, 0)  # fmt: skip
    phdr = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
    phdrs = phdr.pack(PT_LOAD, 5, 0, 0, 0, size, size, 0x1000)
    length = len(interp_bytes)
    phdrs += phdr.pack(PT_INTERP if interp else 0, 4, interp_at, interp_at, 0, length, length, 1)
    dyn_offset = dyn_at if dyn_offset_override is None else dyn_offset_override
    filesz = len(dynamic) if dyn_filesz is None else dyn_filesz
    phdrs += phdr.pack(PT_DYNAMIC, 6, dyn_offset, dyn_at, 0, filesz, filesz, 8)
    return header + phdrs + interp_bytes + strings + dynamic


@needs_x86_64_glibc
def test_the_crafted_elf_builder_makes_what_the_parser_reads(tmp_path):
    program = executable(tmp_path / "ok", crafted_elf(needed=("libc.so.6",)))
    assert paths(dependencies(program)) == [
        program, real(LOADER), "/etc/ld.so.cache", real(LIBC)
    ]  # fmt: skip


@needs_x86_64_glibc
@pytest.mark.parametrize(
    "shape",
    [
        {"dyn_filesz": 1 << 62, "terminate": False, "repeat": 20000},  # huge, no DT_NULL
        {"dyn_filesz": (1 << 64) - 1},
        {"dyn_offset_override": 1 << 63},
        {"strsz": (1 << 64) - 1},
        {"phnum": 0xFFFF},  # PN_XNUM: more program headers than the kernel reads
        {"phoff": (1 << 64) - 64},
        {"interp": "/" * 5000},
        {"needed": tuple(f"libx{i}.so" for i in range(3000)),
         "runpath": ":".join(f"/nonexistent/{i}" for i in range(1000))},
        {"needed": ("$ORIGIN/self",)},  # a library that is the program itself: a loop
    ],
)  # fmt: skip
def test_a_crafted_elf_ends_fast(tmp_path, shape):
    program = executable(tmp_path / "self", crafted_elf(**shape))
    start = time.monotonic()
    rules = dependencies(program)
    assert time.monotonic() - start < 1
    assert rules[0] == (program, "rx")
    assert len(rules) <= 4  # itself, maybe the loader and the cache; nothing invented


@needs_x86_64_glibc
def test_a_crafted_elf_gets_other_elf_objects_only(tmp_path):
    """What a program names itself is checked: only ELF objects of its architecture."""
    (tmp_path / "secret.so").write_text("not a library")
    names = (str(tmp_path / "secret.so"), "/etc/passwd", LIBC)
    program = executable(tmp_path / "p", crafted_elf(needed=names, interp="/etc/passwd"))
    assert dependencies(program) == ((program, "rx"),)  # no such loader: nothing else
    program = executable(tmp_path / "q", crafted_elf(needed=names))
    assert paths(dependencies(program)) == [
        program, real(LOADER), "/etc/ld.so.cache", real(LIBC)
    ]  # fmt: skip


@needs_x86_64_glibc
def test_a_library_of_another_class_is_skipped(tmp_path):
    wrong = tmp_path / "lib32"
    wrong.mkdir()
    # A 32-bit ELF header with the name the program needs, first on its RUNPATH.
    header = b"\x7fELF" + bytes((1, 1, 1)) + bytes(9)
    header += struct.pack("<HHIIIIIHHHHHH", ET_DYN, 3, 1, 0, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    header += struct.pack("<IIIIIIII", PT_LOAD, 0, 0, 0, 84, 84, 5, 0x1000)
    (wrong / "libc.so.6").write_bytes(header)
    program = executable(tmp_path / "p", crafted_elf(needed=("libc.so.6",), runpath=str(wrong)))
    rules = paths(dependencies(program))
    assert str(wrong / "libc.so.6") not in rules
    assert real(LIBC) in rules


# -- built with gcc ---------------------------------------------------------------------------


def gcc(*args: str, cwd: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the test programs cannot be built")
    done = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"gcc could not build the test program: {done.stderr.strip()[:200]}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """main (RUNPATH $ORIGIN/lib) and main-rpath (DT_RPATH) -> lib/libhx.so -> lib/libhy.so."""
    root = tmp_path_factory.mktemp("built")
    (root / "lib").mkdir()
    (root / "hy.c").write_text("int hy(void) { return 2; }\n")
    (root / "hx.c").write_text("int hy(void);\nint hx(void) { return hy() + 1; }\n")
    (root / "m.c").write_text("int hx(void);\nint main(void) { return hx() == 3 ? 0 : 1; }\n")
    gcc("-shared", "-fPIC", "-o", "lib/libhy.so", "hy.c", cwd=root)
    gcc("-shared", "-fPIC", "-o", "lib/libhx.so", "hx.c", "-Llib", "-lhy", cwd=root)
    for name, dtags in (("main", "--enable-new-dtags"), ("main-rpath", "--disable-new-dtags")):
        gcc("-o", name, "m.c", "-Llib", "-lhx", "-Wl,-rpath,$ORIGIN/lib", f"-Wl,{dtags}",
            "-Wl,-rpath-link,lib", cwd=root)  # fmt: skip
    return root


def test_runpath_origin(built):
    rules = dependencies(str(built / "main"))
    assert (str(built / "lib" / "libhx.so"), "ro") in rules
    # RUNPATH serves the program's own needs only: libhx.so's libhy.so is not found, and
    # the real loader agrees (the program cannot start).
    assert str(built / "lib" / "libhy.so") not in paths(rules)
    assert subprocess.run([built / "main"], capture_output=True).returncode == 127


def test_rpath_is_inherited_by_what_the_program_loads(built):
    rules = dependencies(str(built / "main-rpath"))
    assert (str(built / "lib" / "libhx.so"), "ro") in rules
    assert (str(built / "lib" / "libhy.so"), "ro") in rules
    assert subprocess.run([built / "main-rpath"]).returncode == 0


def test_origin_is_the_programs_resolved_directory(built, tmp_path):
    link = tmp_path / "elsewhere"
    link.symlink_to(built / "main-rpath")
    assert dependencies(str(link)) == dependencies(str(built / "main-rpath"))


def test_glibc_hwcaps_variants_are_included(built, tmp_path):
    shutil.copytree(built, tmp_path / "copy")
    variant = tmp_path / "copy" / "lib" / "glibc-hwcaps" / "x86-64-v3"
    variant.mkdir(parents=True)
    shutil.copy(built / "lib" / "libhx.so", variant / "libhx.so")
    rules = paths(dependencies(str(tmp_path / "copy" / "main")))
    assert str(variant / "libhx.so") in rules
    assert str(tmp_path / "copy" / "lib" / "libhx.so") in rules  # for a CPU without v3


def test_a_static_binary_has_no_loader(tmp_path):
    (tmp_path / "s.c").write_text("int main(void) { return 0; }\n")
    gcc("-static", "-o", "static", "s.c", cwd=tmp_path)
    program = str(tmp_path / "static")
    assert dependencies(program) == ((program, "rx"),)


# -- configuration ----------------------------------------------------------------------------


def test_ld_so_conf_includes_are_followed(tmp_path, monkeypatch):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b\n# /opt/comment\n")
    (tmp_path / "conf.d" / "a.conf").write_text("/opt/a/ # trailing\ninclude more/*.conf\n")
    (tmp_path / "conf.d" / "a.txt").write_text("/opt/not-conf\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("/opt/hidden\n")
    (tmp_path / "conf.d" / "more").mkdir()  # a relative include: from the includer's directory
    (tmp_path / "conf.d" / "more" / "x.conf").write_text("/opt/x=libc6\nhwcap 0 x\nrelative\n")
    (tmp_path / "ld.so.conf").write_text(
        f"/opt/first\ninclude {tmp_path}/conf.d/*.conf\ninclude\t{tmp_path}/ld.so.conf\n"
    )
    monkeypatch.setattr(deps, "_LD_SO_CONF", str(tmp_path / "ld.so.conf"))
    dirs = deps._conf_dirs()
    # The self-include is bounded, and lists its directories again (as ldconfig would).
    assert dirs[:5] == ["/opt/first", "/opt/a", "/opt/x", "/opt/b", "/opt/first"]
    assert "/opt/not-conf" not in dirs and "/opt/hidden" not in dirs


@pytest.mark.parametrize(
    ("name", "pattern", "match"),
    [
        ("libc.conf", "*.conf", True),
        ("libc.conf.bak", "*.conf", False),
        ("a.conf", "?.conf", True),
        ("ab.conf", "?.conf", False),
        ("x86_64-linux-gnu.conf", "*linux*.conf", True),
        (".conf", "*.conf", False),
        ("zz.conf", "[xyz]z.conf", True),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*a*a*c", False),
    ],
)
def test_wildcards(name, pattern, match):
    assert deps._matches(name, pattern) is match


@needs_x86_64_glibc
def test_ld_so_preload_libraries_are_included(tmp_path, monkeypatch):
    preload = tmp_path / "ld.so.preload"
    preload.write_text(f"libm.so.6 {tmp_path}/not-a-lib.so\n")
    monkeypatch.setattr(deps, "_LD_SO_PRELOAD", str(preload))
    rules = dependencies("/bin/cat")
    assert (str(preload), "ro") in rules
    assert (real("/lib/x86_64-linux-gnu/libm.so.6"), "ro") in rules


# -- cache ------------------------------------------------------------------------------------


@needs_x86_64_glibc
def test_answers_are_cached_and_fast():
    start = time.perf_counter()
    first = dependencies("/bin/cat")
    uncached = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        again = dependencies("/bin/cat")
    cached = (time.perf_counter() - start) / 100
    assert again is first
    # Generous bounds (a loaded CI machine); measured here: ~0.3 ms and ~10 us.
    assert uncached < 0.05, uncached
    assert cached < 0.001, cached


def test_a_changed_program_or_dependency_is_looked_up_again(tmp_path):
    shell = tmp_path / "shell"
    shell.symlink_to("/bin/sh")
    script = executable(tmp_path / "s", f"#!{shell}\n")
    assert paths(dependencies(script))[1] == real("/bin/sh")
    # The interpreter's symlink now reaches another file: the cached answer is stale.
    shell.unlink()
    shell.symlink_to(real("/bin/cat"))
    assert paths(dependencies(script))[1] == real("/bin/cat")
    executable(tmp_path / "s", "#!/bin/cat -\n")  # the program itself changed
    assert paths(dependencies(script))[1] == real("/bin/cat")


def test_env_path_is_part_of_the_key(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        executable(tmp_path / name / "tool", f"#!/bin/{'sh' if name == 'one' else 'cat'}\n")
    script = executable(tmp_path / "s", "#!/usr/bin/env tool\n")
    one = dependencies(script, str(tmp_path / "one"))
    two = dependencies(script, str(tmp_path / "two"))
    assert str(tmp_path / "one" / "tool") in paths(one)
    assert str(tmp_path / "two" / "tool") in paths(two)


def test_the_cache_is_bounded(tmp_path):
    for index in range(deps._CACHE_SIZE + 10):
        dependencies(executable(tmp_path / f"s{index}", "#!/bin/sh\n"))
    assert len(deps._cache) == deps._CACHE_SIZE


# -- the rules suffice: a live Landlock run ---------------------------------------------------

APPLY = r"""
import ctypes, os, struct, sys
from hardexec.confine.config import Confinement
from hardexec.confine.deps import dependencies
from hardexec.confine.landlock import compile_rules

allowed, target, with_deps = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
found = dependencies("/bin/cat") if with_deps else ()
blob = compile_rules(Confinement(fs=[(allowed, "ro")]), deps=found).blob()
entries = [entry.partition(b"=") for entry in blob.split(b"\0")[:-1]]
handled = {key: int(value, 16) for key, _, value in entries if key in (b"fs", b"net")}
rules = [value.split(b":", 1) for key, _, value in entries if key == b"path"]

libc = ctypes.CDLL(None, use_errno=True)
syscall = libc.syscall
syscall.restype = ctypes.c_long

def check(result, what):
    if result < 0:
        raise OSError(ctypes.get_errno(), what)

attr = struct.pack("=Q", handled[b"fs"])  # the ABI-1 size: no network rights handled
ruleset = syscall(ctypes.c_long(444), attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
check(ruleset, "landlock_create_ruleset")
for rights, path in rules:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    beneath = struct.pack("=Qi", int(rights, 16), fd)  # landlock_path_beneath_attr, packed
    check(syscall(ctypes.c_long(445), ctypes.c_int(ruleset), ctypes.c_int(1), beneath,
                  ctypes.c_uint32(0)), "landlock_add_rule " + os.fsdecode(path))
    os.close(fd)
check(libc.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
      "prctl(PR_SET_NO_NEW_PRIVS)")
check(syscall(ctypes.c_long(446), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
      "landlock_restrict_self")
os.close(ruleset)
try:
    os.execv("/bin/cat", ["cat", target])
except OSError as err:
    print("execv:", err.strerror, file=sys.stderr)
    sys.exit(126)
"""


def test_live_landlock_cat_starts_with_the_found_rules_only(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the live Landlock check is part of the root run on the test machine")
    if abi() == 0:
        pytest.skip("this kernel has no Landlock (or it is disabled): nothing to check against")
    data = tmp_path / "data.txt"
    data.write_text("allowed contents\n")
    other = tmp_path / "other.txt"
    other.write_text("secret\n")

    def run(target, with_deps):
        env = {**os.environ, "PYTHONPATH": SRC, "LC_ALL": "C"}
        return subprocess.run(
            [sys.executable, "-c", APPLY, str(data), str(target), "1" if with_deps else "0"],
            capture_output=True,
            text=True,
            env=env,
        )

    allowed = run(data, True)
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, "allowed contents\n", "")
    denied = run(other, True)
    assert denied.returncode == 1 and denied.stdout == ""
    assert "Permission denied" in denied.stderr
    # And the rules are needed: without them cat cannot even be executed.
    bare = run(data, False)
    assert bare.returncode == 126 and "Permission denied" in bare.stderr
