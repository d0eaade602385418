"""``hardexec run`` when it stays resident: a cgroup, ``--usage``, ``--timeout``,
``--max-output``, ``--json-result``, a syscall filter or ``--verify`` needs someone there
(``--verify``: the tracer that checks the program at its exec, :mod:`hardexec.verify`).

Its duties, so that the program behaves as if hardexec were not there:

* Signals. The program runs in a process group of its own, so a signal sent to hardexec's
  group reaches hardexec alone, which forwards it (SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1,
  SIGUSR2) to the program's group once. A signal hardexec inherited as ignored (``nohup``) gets
  no handler, so the program inherits it ignored too.
* The terminal. When hardexec is its terminal's foreground group, it hands the terminal to the
  program's group (so ^C, ^Z and reads reach the program directly) and takes it back at the end.
  When the program stops (^Z), hardexec takes the terminal back and stops itself, so the shell
  sees the job stopped; continued (``fg``, ``bg``), it gives the terminal back if it is in the
  foreground and continues the program's group.
* Leftovers. When the program ends (or hardexec is told to end and forwards it, and the program
  then ends), what it started is killed: its cgroup (everything, setsid'd daemons too) or, with
  no cgroup, its process group; the group is removed before hardexec exits. ``--keep-leftovers``
  waits for them to end instead.
* The task options (:mod:`.task`). ``--timeout``: SIGTERM to the tree, ``--kill-after``, SIGKILL,
  exit 124. ``--max-output``: the program's output passes through pipes, copied byte for byte up
  to the cap. ``--json-result``: the run as the runner's ``Result``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import warnings

from ..spawn_core import process_group_alive
from .options import EXIT_FAILURE, EXIT_NOEXEC, EXIT_NOTFOUND, EXIT_TIMEOUT, format_size
from .signals import Signals, Terminal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..cgroups import Cgroup
    from ..spawn import Popen
    from ..usage import Usage
    from .options import Request
    from .task import Clock, Passthrough, ResultFile

_CGROUP_STEPS = ("cgroup", "cgroup_join")
_EMPTY_TIMEOUT = 10.0  # s for a killed group to empty (a process in D state may take a while)
_POLL_STEP = 0.05  # s between checks of a process group (it has no event to wait on)


def supervise(req: Request) -> int:
    """Run the program, do the duties above, and return its status (``-N``: killed by N)."""
    from .task import Clock, Passthrough, ResultFile

    task = req.task
    result_file = ResultFile(req.json_result) if req.json_result else None
    signals = Signals()
    terminal = Terminal()
    clock = Clock(task.timeout if task else None, task.kill_after if task else 5.0)
    copier = None
    try:
        child = _start(req)
        if isinstance(child, tuple):
            status, message = child
            print(f"hardexec: {message}", file=sys.stderr)
            if result_file is not None:  # this run's result, not a stale one: it never started
                result_file.write_unstarted(req, clock, message)
            return status
        warned = [_warning_text(warning, req) for warning in child.stage_warnings]
        for text in warned:
            print(f"hardexec: warning: {text}", file=sys.stderr)
        for note in child.stage_notes:
            print(f"hardexec: note: {note}", file=sys.stderr)
        if req.max_output:
            copier = Passthrough(child, req.max_output)
        try:
            _Run(
                child, signals, terminal, req.keep_leftovers, clock=clock, copier=copier
            ).until_done()
        except BaseException:  # a bug of ours: leave nothing running behind
            child.kill_tree()
            child.wait()
            if copier is not None:
                copier.finish(clock)
            raise
        status = child.returncode
    finally:
        terminal.close()
        signals.restore()
    return _ended(
        req, child, status, clock=clock, copier=copier, warned=warned, result_file=result_file
    )


def _start(req: Request) -> Popen | tuple[int, str]:
    """The program, started under its policy; or the exit status and the one line saying why
    it could not be."""
    from ..errors import HardexecError
    from ..spawn import Popen
    from ..spawn_core import exec_time_environ

    task = req.task
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed by the caller, in the command's own words
            # close_fds=False: fds hardexec inherited are the program's, as across exec
            # (`3<file`, socket activation); hardexec's own are all close-on-exec.
            # env: the environment hardexec was started with, not os.environ, which
            # CPython's C-locale coercion may have changed (LC_CTYPE); then the --env options.
            # stdout/stderr: through pipes only when --max-output caps them; otherwise the
            # program writes to hardexec's own, byte for byte, terminal and all.
            piped = subprocess.PIPE if req.max_output else None
            return Popen(
                req.argv,
                policy=req.policy,
                process_group=0,
                close_fds=False,
                env=exec_time_environ() if req.env is None else req.env,
                cwd=task.cwd if task else None,
                stdout=piped,
                stderr=piped,
                verify=req.verify,
            )
    except FileNotFoundError as err:
        return EXIT_NOTFOUND, f"{req.argv[0]}: {err.strerror}"
    except HardexecError as err:  # StageError, CgroupError, …: before the OSError catch-all
        return EXIT_FAILURE, _refusal(err, req)
    except OSError as err:  # the program exists but cannot be executed
        return EXIT_NOEXEC, f"{req.argv[0]}: {err.strerror}"


def _ended(
    req: Request,
    child: Popen,
    status: int,
    *,
    clock: Clock,
    copier: Passthrough | None,
    warned: list[str],
    result_file: ResultFile | None,
) -> int:
    """Say how the run ended, write its result, and give the command's exit status."""
    from .task import say_dropped

    _say_how_it_ended(child, status, req)
    if clock.timed_out:
        print(
            f"hardexec: timed out after {clock.timeout:g} s: the program's tree was sent "
            f"SIGTERM{', then SIGKILL' if status == -signal.SIGKILL else ''}",
            file=sys.stderr,
        )
    if copier is not None:
        warned += say_dropped(copier, format_size(req.max_output or 0))
    if result_file is not None:
        result_file.write(req, child, clock=clock, copier=copier, warnings=warned)
    return EXIT_TIMEOUT if clock.timed_out else status


class _Run:
    """One supervised program, from its start to its group's removal."""

    def __init__(
        self,
        child: Popen,
        signals: Signals,
        terminal: Terminal,
        keep: bool,
        *,
        clock: Clock,
        copier: Passthrough | None,
    ) -> None:
        self.child = child
        self.pid = child.pid  # leader of its own group: process_group=0
        self.signals = signals
        self.terminal = terminal
        self.keep = keep
        self.clock = clock
        self.copier = copier
        self.alive = True

    def until_done(self) -> None:
        self.signals.on_continue = self._resume
        self.signals.attach(self.pid)
        self.terminal.give(self.pid)
        self._watch()
        self.alive = False
        # A zombie now: its pid (and group id) cannot be reused until it is reaped below.
        group = self.child.cgroup
        self.terminal.take_back()
        if group is not None:
            self._end_group(group)
        else:
            self._end_process_group()
        self.signals.pgid = None
        if self.copier is not None:
            self.copier.finish(self.clock)
        self.child.wait()  # reaps (wait4: the rusage) and, with a cgroup, reads its usage
        if group is not None:
            _remove(group)

    def _watch(self) -> None:
        """Return once the program has exited, leaving it unreaped; follow its stops.

        With a timeout or output to pass through, hardexec cannot block in waitid: it waits
        in select for output, a forwarded signal or SIGCHLD (both wake it), or the clock.
        """
        flags = os.WEXITED | os.WSTOPPED | os.WNOWAIT
        busy = self.clock.timeout is not None or self.copier is not None
        if busy:
            self.signals.wake_on_child()
            flags |= os.WNOHANG
        while True:
            info = os.waitid(os.P_PID, self.pid, flags)
            if info is None:  # WNOHANG: nothing yet
                self._idle()
                continue
            if info.si_code in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED):
                return
            if info.si_code == os.CLD_STOPPED:
                os.waitid(os.P_PID, self.pid, os.WSTOPPED | os.WNOHANG)  # consume this report
                self._stopped(info.si_status)

    def _idle(self) -> None:
        """Wait for output, a wake-up or the clock's next step; copy, or take the step."""
        copier = self.copier
        readers = [self.signals.wake_fd, *(copier.readers() if copier else ())]
        writers = copier.writers() if copier else []
        readable, writable, _ = select.select(readers, writers, [], self.clock.left())
        if self.signals.wake_fd in readable:
            os.read(self.signals.wake_fd, 4096)
        if copier is not None:
            copier.ready(readable, writable)
        self.clock.tick(self.child)

    def _stopped(self, signum: int) -> None:
        if signum in (signal.SIGTTIN, signal.SIGTTOU) and self.terminal.holds(self.pid):
            # It touched the terminal just before hardexec handed it over: let it retry.
            self._continue()
            return
        if self.terminal.fd < 0 or not _continuable():
            # No terminal, or no shell above us in the session (hardexec leads it): nobody
            # would continue a stopped hardexec. The program stays
            # stopped until someone continues it; hardexec goes on waiting (and its clock on
            # running: a timeout still ends the program).
            return
        # ^Z (or any stop): the job is stopped, so hardexec stops too and the shell sees it.
        # SIGSTOP, not the program's SIGTSTP: the kernel discards that one in an orphaned
        # process group, and hardexec would not stop (a shell then says "Stopped (signal)").
        self.terminal.take_back()
        os.kill(os.getpid(), signal.SIGSTOP)
        self._resume()

    def _resume(self) -> None:
        """hardexec was continued: the program is too, with the terminal if hardexec has it."""
        if self.alive:
            self.terminal.give(self.pid)
            self._continue()

    def _continue(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)

    def _end_group(self, group: Cgroup) -> None:
        """Kill what the program left in its cgroup (or wait for it) until the group is empty."""
        if self.keep:
            while group.populated() and not self.signals.told_to_end:
                _wait_for_event(group, self.signals)
        group.kill()
        if not _wait_empty(group, _EMPTY_TIMEOUT):
            print(
                f"hardexec: warning: {group.path} still holds processes after "
                f"{_EMPTY_TIMEOUT:.0f} s of SIGKILL (stuck in the kernel?)",
                file=sys.stderr,
            )

    def _end_process_group(self) -> None:
        """No cgroup: the program's process group is what it left (setsid'd ones escape)."""
        if self.keep:
            while process_group_alive(self.pid, but=self.pid) and not self.signals.told_to_end:
                self.signals.wait(_POLL_STEP)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            # The program switched to another user and hardexec lacks CAP_KILL: what it left
            # in its process group is out of reach. Said, not a traceback.
            if process_group_alive(self.pid):
                print(
                    "hardexec: warning: cannot kill what the program left in its process group "
                    "(it runs as another user and hardexec lacks CAP_KILL)",
                    file=sys.stderr,
                )


def _continuable() -> bool:
    """Whether a stopped hardexec would be continued: its parent (a shell with job control)
    is in hardexec's session. When it is not, hardexec leads its session itself (``script
    -c``, a container's tty) and a stop would be for good."""
    try:
        return os.getsid(os.getppid()) == os.getsid(0)
    except OSError:
        return False


def _wait_for_event(group: Cgroup, signals: Signals) -> None:
    """Sleep until the group's ``cgroup.events`` changes or a forwarded signal arrives."""
    try:
        fd = os.open(group.path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        poller.register(signals.wake_fd, select.POLLIN)
        os.pread(fd, 4096, 0)  # arm: the next change is an event
        if group.populated():
            for ready, _ in poller.poll():
                if ready == signals.wake_fd:
                    os.read(ready, 4096)
    finally:
        os.close(fd)


def _wait_empty(group: Cgroup, timeout: float) -> bool:
    """Whether the group emptied within ``timeout`` s (killed processes still have to exit)."""
    import time

    try:
        fd = os.open(group.path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        deadline = time.monotonic() + timeout
        while b"populated 1" in os.pread(fd, 4096, 0):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(left * 1000)
        return True
    finally:
        os.close(fd)


def _remove(group: Cgroup) -> None:
    """Remove the (empty) group now: a janitor thread would die with this process."""
    from ..cgroups import remove_tree

    path = group.path
    for _ in range(3):
        try:
            remove_tree(path)  # with any group the program made inside it
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY:  # something is still in it: kill and wait again
                break
            group.kill()
            _wait_empty(group, _EMPTY_TIMEOUT)
    if path.exists():
        print(f"hardexec: warning: could not remove {path}", file=sys.stderr)


def in_cli_words(message: str) -> str:
    """A library message as the command line says it: its option, not the Python field."""
    from ..confine.compile import BEST_EFFORT

    return message.replace(BEST_EFFORT, "--best-effort")


def _refusal(err: Exception, req: Request) -> str:
    """One line for a refused run; a cgroup that cannot be applied says what to do."""
    from ..errors import CgroupError

    if isinstance(err, CgroupError) or getattr(err, "step", None) in _CGROUP_STEPS:
        named = " ".join(req.ceilings)
        them = "them" if len(req.ceilings) > 1 else "it"
        return (
            f"{named} cannot be applied: {err}; give a --cgroup-parent delegated to you, or "
            f"--best-effort to run without {them}"
        )
    return in_cli_words(str(err))


def _warning_text(warning: Warning, req: Request) -> str:
    if getattr(warning, "step", None) in _CGROUP_STEPS:
        cause = getattr(warning, "cause", "") or str(warning)
        return f"the program runs WITHOUT {' '.join(req.ceilings)}: {cause}"
    return str(warning)


def _say_how_it_ended(child: Popen, status: int, req: Request) -> None:
    usage = child.usage
    if usage is not None and usage.oom_killed:
        limits = req.policy.cgroups
        memory = limits.memory if limits else None
        limit = f" (memory.max={format_size(memory)})" if memory else ""
        if status == -signal.SIGKILL:
            print(f"hardexec: killed by the OOM killer{limit}", file=sys.stderr)
        else:
            print(f"hardexec: the OOM killer killed a process of the group{limit}", file=sys.stderr)
    if req.usage and usage is not None:
        print(f"hardexec: usage: {_describe_usage(usage)}", file=sys.stderr)
    denied = child.denied_syscalls
    if denied:
        said = ", ".join(f"{name} ({count})" for name, count in sorted(denied.items()))
        print(f"hardexec: denied syscalls: {said}", file=sys.stderr)


def _describe_usage(usage: Usage) -> str:
    parts = []
    if usage.cpu_user is not None and usage.cpu_system is not None:
        parts.append(f"cpu {usage.cpu_user:.3f}s user {usage.cpu_system:.3f}s system")
    if usage.cpu_throttled is not None:
        parts.append(f"throttled {usage.cpu_throttled:.3f}s")
    if usage.memory_peak is not None:
        parts.append(f"memory peak {usage.memory_peak}")
    if usage.pids_peak is not None:
        parts.append(f"pids peak {usage.pids_peak}")
    if usage.oom_killed is not None:
        parts.append(f"oom killed {'yes' if usage.oom_killed else 'no'}")
    return ", ".join(parts) + f" (from {usage.source})"
