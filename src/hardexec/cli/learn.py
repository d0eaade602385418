"""``hardexec learn -o FILE [run options] -- COMMAND [ARG...]``: run COMMAND once under
observation and write the narrowest policy file that let it run (:mod:`hardexec.learn`).

The program's stdin, stdout and stderr are hardexec's own, byte for byte. It stays in
hardexec's process group, so the terminal's ^C and ^\\ reach it directly (hardexec waits them
out, and still writes what it learned); SIGTERM and SIGHUP sent to hardexec are passed on to
it. FILE is written once the program has ended, whatever its exit status, to a new file beside
FILE renamed over it (a symlink at FILE is replaced, not followed; no temporary file is left
behind on any failure); ``.toml`` files start with a comment saying how they were learned.
The run options are the base (``--profile``, ``--policy``, then the options, as for ``run``)
and are written into FILE; ``--timeout`` applies while learning, ``--max-output`` does not
(the output passes through whole). ``--json-result``, ``--keep-leftovers`` and ``--usage`` are
refused.
Exit status: the program's (124 when ``--timeout`` ended it); 125, with one line on stderr,
when hardexec could not start it or cannot write FILE (checked before the program runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from .options import EXIT_FAILURE, EXIT_NOEXEC, EXIT_NOTFOUND, EXIT_TIMEOUT, fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..learn import Learned
    from .options import Request

__all__ = ["learn_command"]

_PASSED_ON = (signal.SIGTERM, signal.SIGHUP)
_WAITED_OUT = (signal.SIGINT, signal.SIGQUIT)  # the terminal sends them to the program too


def learn_command(req: Request, output: str, fmt: str | None = None) -> int:
    """Run ``req``'s program under observation, write the learned policy to ``output``.

    Args:
        req: the run options (its policy, environment, cwd, timeout) and the program.
        output: the policy file to write.
        fmt: ``"toml"`` or ``"json"``; None: from ``output``'s suffix.

    Returns:
        The exit status: the program's (``-N`` when signal N ended it), 124 after the timeout,
        125/126/127 when it could not be started (nothing is written then).
    """
    fmt = _format(output, fmt)
    _check_output(output)
    if req.json_result:
        fail("--json-result: not for hardexec learn (its result is the policy file)")
    if req.keep_leftovers:
        fail("--keep-leftovers: not for hardexec learn (what the program leaves is killed)")
    if req.usage:
        fail("--usage: not for hardexec learn (FILE's header says what was measured)")
    if req.verify:
        fail("--verify: not for hardexec learn (give it to the run of the learned policy)")
    if req.task is not None and req.task.cwd is not None:
        print(
            "hardexec: note: --cwd applies to this run only; a policy file holds no directory",
            file=sys.stderr,
        )
    if req.policy.confinement is not None:
        from .confine_options import check_paths

        check_paths(req.policy.confinement, req.typed_confinement, req.source)
    try:
        # Opened now: the program (perhaps another user) must not choose where root writes.
        directory = open_output_directory(output)
    except OSError as err:
        fail(f"-o/--output: {output!r}: {err.strerror}")
    try:
        return _learn(req, output, fmt, directory)
    finally:
        os.close(directory)


def _learn(req: Request, output: str, fmt: str, directory: int) -> int:
    from ..errors import HardexecError
    from ..learn import learn
    from ..spawn_core import exec_time_environ
    from .supervise import in_cli_words

    base = req.policy_file()
    task = req.task
    child: list[int] = []
    previous = _handle_signals(child)
    try:
        learned = learn(
            req.argv,
            base,
            env=exec_time_environ() if req.env is None else req.env,
            cwd=task.cwd if task is not None else None,
            close_fds=False,  # hardexec's inherited fds are the program's, as with run
            started=child.append,
        )
    except FileNotFoundError as err:
        print(f"hardexec: {req.argv[0]}: {err.strerror}", file=sys.stderr)
        return EXIT_NOTFOUND
    except HardexecError as err:  # StageError, PolicyError, CgroupError: nothing ran
        print(f"hardexec: {in_cli_words(str(err))}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        print(f"hardexec: {req.argv[0]}: {err.strerror}", file=sys.stderr)
        return EXIT_NOEXEC
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _say(learned)
    try:
        text = learned.dumps(fmt)
    except HardexecError as err:  # not expected: what was learned here is valid here
        print(f"hardexec: -o/--output: cannot write the learned policy: {err}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        write_atomically(directory, output, text)
    except OSError as err:
        print(f"hardexec: -o/--output: cannot write {output!r}: {err.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    network = "yes" if learned.network else "no"
    print(
        f"hardexec: learned {len(learned.syscalls)} syscalls, network: {network}; wrote {output}",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT if learned.timed_out else learned.returncode


def _format(output: str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("toml", "json"):
            fail(f"fmt: {fmt!r} is not toml or json")
        return fmt
    from ..policyfile import FORMATS

    suffix = os.path.splitext(output)[1].lower()
    if suffix not in FORMATS:
        fail(f"-o/--output: {output!r}: the file name must end in .toml or .json")
    return FORMATS[suffix]


def _check_output(output: str) -> None:
    """Exit 125 now, before the program runs, when ``output`` could not be written."""
    directory = os.path.dirname(output) or "."
    if os.path.isdir(output):
        fail(f"-o/--output: {output!r} is a directory")
    if not os.path.isdir(directory):
        fail(f"-o/--output: {output!r}: no directory {directory!r}")
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(f"-o/--output: {output!r}: cannot create files in {directory!r}")


def _handle_signals(child: list[int]) -> dict[int, object]:
    """Handlers while the program runs: pass SIGTERM and SIGHUP on, wait out ^C and ^\\.

    Handlers, not SIG_IGN, for the ones waited out: an ignored signal stays ignored across
    exec, and the program must get them as it would without hardexec.
    """

    def pass_on(signum: int, _frame: object) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)

    previous = {}
    for signum in (*_PASSED_ON, *_WAITED_OUT):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue  # inherited as ignored (nohup): the program inherits it so too
        handler = pass_on if signum in _PASSED_ON else (lambda _signum, _frame: None)
        previous[signum] = signal.signal(signum, handler)
    return previous


def _say(learned: Learned) -> None:
    for text in learned.warnings:
        print(f"hardexec: warning: {text}", file=sys.stderr)
    for note in learned.stage_notes:
        print(f"hardexec: note: {note}", file=sys.stderr)
    if learned.denied:
        said = ", ".join(f"{name} ({count})" for name, count in learned.denied)
        print(f"hardexec: denied syscalls: {said}", file=sys.stderr)
    if learned.timed_out:
        print(
            "hardexec: warning: the timeout ended the program: the policy holds only what it "
            "did until then",
            file=sys.stderr,
        )
    elif not learned.succeeded:
        how = (
            f"was killed by signal {-learned.returncode}"
            if learned.returncode < 0
            else f"exited with status {learned.returncode}"
        )
        print(
            f"hardexec: warning: the program {how}: the policy holds only what this failed run did",
            file=sys.stderr,
        )


def write_atomically(directory_fd: int, path: str, text: str) -> None:
    """Write ``text`` to a new file beside ``path`` and rename it over ``path``; on any
    failure the new file is removed. The file gets the mode a new file would (0666 less the
    umask).

    Args:
        directory_fd: ``path``'s directory (:func:`open_output_directory`), opened before the
            program ran: the file is made there even if the program (which may run as another
            user) replaced a directory on the path meanwhile.
        path: the file to write (only its last component is used, in ``directory_fd``).
        text: its content.

    Raises:
        OSError: what creating, writing or renaming raised.
    """
    import secrets

    name = os.path.basename(path)
    temp = f".{name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o666 & ~_umask(), dir_fd=directory_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temp, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=directory_fd)
        raise


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_output_directory(path: str) -> int:
    """``path``'s directory, opened (before the program runs: see :func:`write_atomically`)."""
    return os.open(os.path.dirname(path) or ".", _DIR_FLAGS)


def _umask() -> int:
    """This process's umask, read without changing it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
