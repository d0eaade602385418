"""What a program needs to start, found without running anything: Landlock rules for it.

A Landlock path policy denies every file no rule names, and a dynamically linked program
opens more than itself before ``main``: its ELF interpreter (the dynamic loader), every shared
library the loader maps, ``/etc/ld.so.cache``; a ``#!`` script needs its interpreter and all
of that for it. Listing those by hand is the chore :func:`dependencies` removes.

It reads files, never runs them (``ldd`` may run the program's own loader): the ``#!`` line as
the kernel's ``binfmt_script`` reads it, ELF headers with :mod:`struct` (32 and 64-bit, either
byte order), and the library search of glibc's loader: ``DT_RPATH`` (of the object and the
objects that loaded it, ignored when the object has ``DT_RUNPATH``), ``DT_RUNPATH``,
``/etc/ld.so.conf`` (with its ``include``\\s), then the default directories; ``$ORIGIN``,
``$LIB`` and ``$PLATFORM`` expanded; ``glibc-hwcaps`` subdirectories and
``/etc/ld.so.preload`` included. Not covered: ``LD_LIBRARY_PATH`` and ``LD_PRELOAD`` (the
program's environment is not known here), entries of ``/etc/ld.so.cache`` not in a configured
directory, ``binfmt_misc`` handlers, musl's loader configuration, and what a program opens after
it started (``dlopen``, locales, gconv modules): those need rules of their own.

A crafted program chooses what its headers name: it can obtain read access to other ELF
objects of its own architecture (never to other files; each is checked to be one), and execute
access to the interpreter it names. For an untrusted program, write the rules yourself
(``Confinement(fs_dependencies=False)``).
"""

from __future__ import annotations

import os
import stat
from _thread import allocate_lock

from .elf import (
    EF_ARM_ABI_FLOAT_HARD,
    ET_DYN,
    ET_EXEC,
    MULTIARCH,
    SCRIPT_HEAD,
    Elf,
    open_regular,
    parse_elf,
    runnable_elf,
)

__all__ = ["clear_cache", "dependencies"]

# Bounds, so a crafted file cannot make a look-up hang or eat memory (the ELF reader has its
# own). Real programs stay far below each: a few dozen libraries, a few hundred probes.
_MAX_INTERPRETERS = 4  # #! interpreters in a chain: the kernel's BINPRM_MAX_RECURSION
_MAX_PROGRAMS = 16  # programs looked at in one call (interpreters, env's commands)
_MAX_OBJECTS = 512  # ELF objects in one program's tree
_MAX_QUEUE = 16384  # library names waiting to be looked up
_MAX_PROBES = 8192  # candidate files looked at in one call
_MAX_DIRS = 256  # directories of one search list
_MAX_CONF_FILES = 64  # files of /etc/ld.so.conf and its includes
_MAX_CONF_BYTES = 65536  # bytes read of each
_CACHE_SIZE = 128

_LD_SO_CACHE = "/etc/ld.so.cache"
_LD_SO_PRELOAD = "/etc/ld.so.preload"
_LD_SO_CONF = "/etc/ld.so.conf"


def _which(name: str, env_path: str) -> str | None:
    """Where ``execvpe`` finds ``name`` (no slash in it): the first executable regular file."""
    for directory in env_path.split(os.pathsep)[:_MAX_DIRS]:
        candidate = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.stat(candidate).st_mode) and os.access(candidate, os.X_OK):
                return os.path.abspath(candidate)
        except (OSError, ValueError):
            continue
    return None


def _shebang(head: bytes) -> tuple[str, str] | None:
    """The interpreter and its one optional argument of a ``#!`` line, split as the kernel does:
    the name ends at a blank, the argument is the rest of the line without outer blanks."""
    line = head[2:]
    end = line.find(b"\n")
    if end < 0:
        # No end of line in what the kernel reads: it still runs the script when the name
        # ends before the buffer does.
        end = len(line)
    line = line[:end].split(b"\0", 1)[0].strip(b" \t")
    if not line:
        return None
    cut = next((i for i, byte in enumerate(line) if byte in b" \t"), len(line))
    return os.fsdecode(line[:cut]), os.fsdecode(line[cut:].strip(b" \t"))


def _env_command(arg: str) -> str | None:
    """The command ``env`` runs, given the one argument of a ``#!/usr/bin/env ...`` line.

    Only the plain form (``env NAME``, ``env -S NAME ARGS``) is followed: any other option of
    env's changes what it runs in ways not worth parsing here, and a mistake would allow a
    file the #! line chose; then the interpreter is not allowed, and the run fails closed."""
    if arg.startswith(("-S", "--split-string")):  # env splits the rest into arguments
        words = arg.split()
        words = words[1:] if words[0] in ("-S", "--split-string") else [words[0][2:], *words[1:]]
    else:
        words = [arg] if arg else []  # one argument, blanks and all, is what env is given
    if not words or not words[0] or words[0].startswith("-") or "=" in words[0]:
        return None
    return words[0]


class _Node:
    """A loaded ELF object: where it was found, what it needs, who loaded it (its loader)."""

    __slots__ = ("elf", "origin", "parent", "path", "rpath", "runpath")

    def __init__(self, path: str, elf: Elf, parent: _Node | None, origin: str, lib: str) -> None:
        self.path = path
        self.elf = elf
        self.parent = parent
        self.origin = origin
        # The loader ignores DT_RPATH in an object that has DT_RUNPATH.
        self.runpath = None if elf.runpath is None else _search_list(elf.runpath, origin, lib)
        self.rpath = (
            _search_list(elf.rpath, origin, lib)
            if elf.rpath is not None and elf.runpath is None
            else ()
        )


def _expand(text: str, origin: str, lib: str) -> str:
    """The loader's dynamic string tokens: ``$ORIGIN`` (the object's directory), ``$LIB``,
    ``$PLATFORM``; an unknown ``$NAME`` is left as it is, as the loader leaves it."""
    if "$" not in text:
        return text
    platform = os.uname().machine
    for token, value in (("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)):
        text = text.replace("${" + token + "}", value).replace("$" + token, value)
    return text


def _search_list(text: str, origin: str, lib: str) -> tuple[str, ...]:
    dirs = []
    for item in text.split(":")[:_MAX_DIRS]:
        directory = _expand(item, origin, lib)
        # An empty or relative entry is relative to the program's working directory at exec,
        # unknown here; leaving it out at worst makes the program fail to start (closed).
        if directory.startswith("/"):
            dirs.append(directory.rstrip("/") or "/")
    return tuple(dirs)


def _conf_dirs() -> list[str]:
    """The directories of ``/etc/ld.so.conf``, ``include`` globs followed, in order."""
    dirs: list[str] = []
    files = 0

    def read(path: str, depth: int) -> None:
        nonlocal files
        files += 1
        if files > _MAX_CONF_FILES or depth > 8:
            return
        opened = open_regular(path)
        if opened is None:
            return
        fd = opened[1]
        try:
            text = os.fsdecode(os.pread(fd, _MAX_CONF_BYTES, 0))
        except OSError:
            return
        finally:
            os.close(fd)
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith(("include ", "include\t")):
                for pattern in line[8:].split():
                    for name in _glob(os.path.join(os.path.dirname(path), pattern)):
                        read(name, depth + 1)
            elif line.startswith(("hwcap ", "hwcap\t")):
                continue
            elif line.startswith("/") and len(dirs) < _MAX_DIRS:
                dirs.append(line.split("=", 1)[0].rstrip().rstrip("/") or "/")

    read(_LD_SO_CONF, 0)
    return dirs


def _glob(pattern: str) -> list[str]:
    """The files ``pattern`` names, sorted as ldconfig's ``glob()`` sorts them.

    Wildcards are matched in the last component only (``/etc/ld.so.conf.d/*.conf``, the form
    every distribution uses): the glob module would cost more start-up time (it imports re)
    than the whole look-up of a program takes.
    """
    directory, base = os.path.split(pattern)
    if not any(c in base for c in "*?["):
        return [pattern]
    if any(c in directory for c in "*?["):
        return []  # a wildcard in a directory: not followed (the program may fail to start)
    try:
        names = os.listdir(directory or ".")
    except (OSError, ValueError):
        return []
    matches = [os.path.join(directory, name) for name in names if _matches(name, base)]
    return sorted(matches)[:_MAX_CONF_FILES]


def _matches(name: str, pattern: str) -> bool:
    """Shell wildcard match of one file name: ``*``, ``?``, ``[...]``; a leading dot only by
    a leading dot, as glob() does."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    if "[" in pattern:
        import fnmatch  # rare in ld.so.conf: its import cost is paid only here

        return fnmatch.fnmatchcase(name, pattern)
    # Greedy match with backtracking to the last star: linear in practice, bounded by
    # len(name) * len(pattern) at worst.
    n = p = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]):
            n, p = n + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, n, p + 1
        elif star >= 0:
            mark += 1
            n, p = mark, star + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


class _Walk:
    """One look-up: the rules found so far and the bounded work left."""

    def __init__(self, env_path: str) -> None:
        self.env_path = env_path
        self.rules: dict[str, str] = {}  # resolved path -> "rx" or "ro", in the order found
        # (path as found, resolved path, st_dev, st_ino) of each rule: a cached answer is
        # still right while each path reaches the same file.
        self.checks: list[tuple[str, str, int, int]] = []
        self.probes = _MAX_PROBES
        self.programs: set[str] = set()
        self.conf: list[str] | None = None
        self.hwcaps: dict[str, list[str]] = {}

    def add(self, found: str, st: os.stat_result, word: str) -> str:
        """Allow ``found``. By its resolved path only: a Landlock rule is attached to the
        inode the stage opens (following symlinks), and the kernel checks the inode an open
        reaches, so a rule on a symlink's own path would name the very same file again."""
        real = os.path.realpath(found)
        if self.rules.get(real) != "rx":
            self.rules[real] = word
        self.checks.append((found, real, st.st_dev, st.st_ino))
        return real

    def unreadable(self, path: str) -> bool:
        """Allow a program that cannot be read (execute-only): False if it is no file."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return False
        if not stat.S_ISREG(st.st_mode):
            return False  # a directory, a device: execve refuses it anyway
        self.add(path, st, "rx")
        return True

    def program(self, path: str, depth: int) -> bool:
        """Allow ``path`` to be executed with what it needs; False when it does not exist."""
        if path in self.programs:
            return True  # an env command naming its own script: done already
        if len(self.programs) >= _MAX_PROGRAMS:
            return False
        self.programs.add(path)
        opened = open_regular(path)
        if opened is None:
            # An interpreter must show what it is (below) to be allowed; the program itself,
            # a regular file that cannot be read, is allowed alone.
            return depth == 0 and self.unreadable(path)
        st, fd = opened
        try:
            head = os.pread(fd, SCRIPT_HEAD, 0)
        except OSError:
            head = b""
        # A script's #! line chooses its interpreter, and so what is allowed: only a file
        # that is itself a program (an ELF executable, or a script) is, never any other file
        # (a #! naming /etc/shadow must not make it readable).
        if depth > 0 and not (head.startswith(b"#!") or runnable_elf(fd, head)):
            os.close(fd)
            return False
        # The kernel opens what it executes for reading and execution (Landlock checks
        # READ_FILE and EXECUTE), the dynamic loader included; libraries are only read.
        self.add(path, st, "rx")
        try:
            if head.startswith(b"#!"):
                self.script(head, depth)
            elif head.startswith(b"\x7fELF"):
                elf = parse_elf(fd, head)
                if elf is not None and elf.interp is not None:
                    self.dynamic(path, elf)
        except OSError:
            pass  # unreadable after all: the program itself is allowed, nothing more
        finally:
            os.close(fd)
        return True

    def script(self, head: bytes, depth: int) -> None:
        line = _shebang(head)
        if line is None or depth >= _MAX_INTERPRETERS:
            return
        interpreter, arg = line
        interpreter = os.path.abspath(interpreter)
        if not self.program(interpreter, depth + 1):
            return
        if os.path.basename(interpreter) == "env":
            command = _env_command(arg)
            if command is None:
                return
            found = command if "/" in command else _which(command, self.env_path)
            if found is not None:
                # env execs it anew: its own #! chain starts again, as the kernel's does.
                self.program(os.path.abspath(found), 0)

    def dynamic(self, path: str, elf: Elf) -> None:
        """The loader, its cache and configuration, the libraries, for a dynamic program."""
        interp = os.path.abspath(elf.interp or "")
        found = self.probe(interp, elf.machine, (ET_DYN, ET_EXEC))
        if found is None:
            return  # no such loader here: the exec fails whatever the rules say
        st, loader = found
        self.add(interp, st, "rx")
        for extra in (_LD_SO_CACHE, _LD_SO_PRELOAD):
            try:
                extra_st = os.stat(extra)
            except OSError:
                continue
            if stat.S_ISREG(extra_st.st_mode):
                self.add(extra, extra_st, "ro")
        lib = self.lib_dir(elf)
        main = _Node(path, elf, None, os.path.dirname(os.path.realpath(path)), lib)
        # A name the loader already has is not searched again: its own name and soname.
        names = {os.path.basename(interp)}
        if loader.soname:
            names.add(loader.soname)
        objects = {os.path.realpath(interp), os.path.realpath(path)}
        queue = [(main, name) for name in self.preloaded()]
        queue.extend((main, name) for name in elf.needed)
        # Breadth first, as the loader maps them: a library's loader is the first object
        # that needed it, whose RPATH chain the search then follows.
        index = 0
        while index < len(queue) and len(objects) < _MAX_OBJECTS and self.probes > 0:
            node, name = queue[index]
            index += 1
            if name in names:
                continue
            names.add(name)
            for lib_path, lib_st, lib_elf in self.find(name, node, main, lib):
                real = self.add(lib_path, lib_st, "ro")
                if lib_elf.soname:
                    names.add(lib_elf.soname)
                if real in objects:
                    continue
                objects.add(real)
                child = _Node(lib_path, lib_elf, node, os.path.dirname(lib_path), lib)
                room = _MAX_QUEUE - len(queue)
                queue.extend((child, needed) for needed in lib_elf.needed[: max(room, 0)])

    def preloaded(self) -> list[str]:
        """The libraries ``/etc/ld.so.preload`` names (blank or colon separated)."""
        opened = open_regular(_LD_SO_PRELOAD)
        if opened is None:
            return []
        try:
            text = os.fsdecode(os.pread(opened[1], _MAX_CONF_BYTES, 0))
        except OSError:
            return []
        finally:
            os.close(opened[1])
        return text.replace(":", " ").split()[:_MAX_DIRS]

    def lib_dir(self, elf: Elf) -> str:
        """``$LIB``: the distribution's library directory for this architecture."""
        multiarch = self.multiarch(elf)
        if multiarch and os.path.isdir("/lib/" + multiarch):
            return "lib/" + multiarch
        return "lib64" if elf.machine[1] == 2 and os.path.isdir("/lib64") else "lib"

    @staticmethod
    def multiarch(elf: Elf) -> str | None:
        name = MULTIARCH.get(elf.machine)
        if name is None and elf.machine[0] == 40:  # 32-bit ARM: the float ABI names it
            hard = elf.flags & EF_ARM_ABI_FLOAT_HARD
            name = "arm-linux-gnueabihf" if hard else "arm-linux-gnueabi"
        return name

    def find(
        self, name: str, node: _Node, main: _Node, lib: str
    ) -> list[tuple[str, os.stat_result, Elf]]:
        """Where the loader finds library ``name`` needed by ``node``: the file it maps, and
        the ``glibc-hwcaps`` variants met before it (which one the CPU picks is not known)."""
        want = main.elf.machine
        if "/" in name:  # a path, not searched
            path = os.path.abspath(_expand(name, node.origin, lib))
            found = self.probe(path, want, (ET_DYN,))
            return [] if found is None else [(path, *found)]
        hits = []
        for directory in self.search_dirs(node, main):
            for sub in self.hwcaps_dirs(directory):
                path = f"{sub}/{name}"
                found = self.probe(path, want, (ET_DYN,))
                if found is not None:
                    hits.append((path, *found))
            path = f"{directory}/{name}" if directory != "/" else "/" + name
            found = self.probe(path, want, (ET_DYN,))
            if found is not None:
                hits.append((path, *found))
                break
            if self.probes <= 0:
                break
        return hits

    def search_dirs(self, node: _Node, main: _Node) -> list[str]:
        dirs: list[str] = []
        if node.runpath is None:
            walker: _Node | None = node
            while walker is not None:  # RPATH of the object, its loader, ..., the program
                dirs.extend(walker.rpath)
                walker = walker.parent
        dirs.extend(node.runpath or ())
        if self.conf is None:
            self.conf = _conf_dirs()
        dirs.extend(self.conf)
        multiarch = self.multiarch(main.elf)
        if multiarch:
            dirs.extend(("/lib/" + multiarch, "/usr/lib/" + multiarch))
        dirs.extend(("/lib64", "/usr/lib64", "/lib", "/usr/lib"))
        return list(dict.fromkeys(dirs))  # the first mention counts; a repeat finds nothing new

    def hwcaps_dirs(self, directory: str) -> list[str]:
        found = self.hwcaps.get(directory)
        if found is None:
            base = directory.rstrip("/") + "/glibc-hwcaps"
            found = []
            try:
                with os.scandir(base) as entries:
                    for entry in entries:  # a handful in practice (x86-64-v2, v3, v4)
                        if len(found) >= 16:
                            break
                        found.append(f"{base}/{entry.name}")
            except (OSError, ValueError):
                pass
            found.sort()
            self.hwcaps[directory] = found
        return found

    def probe(
        self, path: str, machine: tuple[int, int, int], kinds: tuple[int, ...]
    ) -> tuple[os.stat_result, Elf] | None:
        """``path``'s stat and ELF object when it is one the loader would take: of the
        program's machine, class and byte order, and of one of ``kinds``."""
        if self.probes <= 0:
            return None
        self.probes -= 1
        opened = open_regular(path)
        if opened is None:
            return None
        st, fd = opened
        try:
            elf = parse_elf(fd, os.pread(fd, 64, 0))
        except OSError:
            return None
        finally:
            os.close(fd)
        if elf is None or elf.machine != machine or elf.kind not in kinds:
            return None  # e.g. the 32-bit library of the same name: the loader skips it too
        return st, elf


_cache: dict[tuple[object, ...], tuple[tuple[tuple[str, str], ...], tuple[object, ...]]] = {}
_cache_lock = allocate_lock()


def dependencies(program: str | bytes, env_path: str | None = None) -> tuple[tuple[str, str], ...]:
    """The ``(path, access word)`` Landlock rules ``program`` needs to start.

    Args:
        program: the program as it will be executed: a path, or a name without a slash,
            looked up in ``env_path`` as ``subprocess`` does (the first executable file).
        env_path: the program's ``PATH`` (also where ``#!/usr/bin/env NAME`` finds ``NAME``);
            None: ``os.defpath``.

    Returns:
        Resolved paths (symlinks followed) in the order found: the program, ``"rx"``; for a
        ``#!`` script its interpreter's rules (for ``env``, also those of the command it
        runs); for a dynamically linked ELF program its loader (``"rx"``), ``/etc/ld.so.cache``
        and ``/etc/ld.so.preload`` when they exist, and each library (``"ro"``: mapping a
        library for execution needs only read access under Landlock). ``()`` when the
        program does not exist (its exec reports that); the program alone when it cannot be
        read or is no ELF object this can parse.

    Answers are cached per program file (path, device, inode, modification time, size) and
    ``env_path``, and a cached answer is used only while every path in it still reaches the
    same file (a library upgraded, a symlink moved: it is looked up again). A file installed
    meanwhile earlier on a search path is not noticed until the program itself changes.
    Never raises on a hostile file; every read and loop is bounded.
    """
    name = os.fsdecode(program) if isinstance(program, bytes) else program
    search = os.defpath if env_path is None else env_path
    if not name or "\0" in name:
        return ()
    path = os.path.abspath(name) if "/" in name else _which(name, search)
    if path is None:
        return ()
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ()
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, search)
    with _cache_lock:
        cached = _cache.pop(key, None)
        if cached is not None:
            _cache[key] = cached  # most recently used last: the oldest is evicted first
    if cached is not None and _still_valid(cached[1]):
        return cached[0]
    walk = _Walk(search)
    if not walk.program(path, 0):
        return ()
    rules = tuple(walk.rules.items())
    with _cache_lock:
        _cache[key] = (rules, tuple(walk.checks))
        while len(_cache) > _CACHE_SIZE:
            del _cache[next(iter(_cache))]
    return rules


def _still_valid(checks: tuple[object, ...]) -> bool:
    try:
        for found, real, dev, ino in checks:  # type: ignore[misc]
            st = os.stat(found)
            if (st.st_dev, st.st_ino) != (dev, ino):
                return False
            if real != found:
                st = os.stat(real)
                if (st.st_dev, st.st_ino) != (dev, ino):
                    return False
    except (OSError, ValueError):
        return False
    return True


def clear_cache() -> None:
    """Forget every cached answer (tests; after changing the library configuration)."""
    with _cache_lock:
        _cache.clear()
