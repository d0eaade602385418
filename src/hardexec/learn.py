"""Learning a policy: run a program under observation, then write the narrowest policy it needed.

:func:`learn` runs the program under its base policy plus a seccomp *watch* filter
(:class:`~hardexec.confine.seccomp.WatchFilter`): every syscall of the program, of its threads
and of every process it starts (a filter is inherited) is recorded by hardexec's seccomp hub
and then allowed to run (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``, Linux 5.5). The result,
:class:`Learned`, turns into a :class:`~hardexec.policyfile.PolicyFile`:

- ``confinement.syscalls``: an allow-list of exactly the syscalls that ran, by name, sorted,
  less those of ``@default`` (every allow-list allows them anyway), plus ``sendmsg`` always:
  hardexec's stage hands the seccomp listener over with one ``sendmsg``, and a filter that
  refuses it gets no listener, so its denials would be refused without being counted or
  reported. Allowing ``sendmsg`` costs little next to ``write``, which the program has anyway
  (a base filter that refuses it still does: the learned filter is never wider than the base).
  ``clone`` with a ``CLONE_NEW*`` flag adds ``@namespace`` (every allow-list refuses new
  namespaces unless it allows them). ``clone3`` is told ENOSYS while learning, as every
  learned allow-list tells it, so glibc uses ``clone`` and the two runs agree.
- ``confinement.namespaces`` gains ``net`` when the program made no socket of any family but
  ``AF_UNIX`` (``socket``/``socketpair``'s first argument) and named no abstract unix address
  (``connect``, ``bind``, ``sendto``; abstract addresses belong to a network namespace): it
  then runs with a loopback of its own and no way out. Any other family (``AF_INET``,
  ``AF_INET6``, ``AF_NETLINK``, ``AF_PACKET``, …) keeps the host's network: netlink and packet
  sockets see a new namespace's interfaces, not the host's. So does an address the hub could
  not read in the program's memory. (``sendmsg``'s address, inside its ``msghdr``, is not
  read: a datagram sent with it to an abstract address is missed.)
- ``cgroups``: ``memory`` and ``pids`` ceilings from the peaks measured, with a margin
  (:data:`MEMORY_MARGIN`, :data:`PIDS_MARGIN`), when the program's cgroup had those
  controllers and the base gives no ceiling of its own. Where the host offers no controller
  (no delegation, or none enabled), nothing is measured and :attr:`Learned.notes` says so.

A base with a syscall filter of its own is learned *within*: its rules judge every call as they
would in a plain run (a refused call is refused, counted in :attr:`Learned.denied` and left out
of the allow-list), and the learned filter keeps its ``deny`` and ``default`` rules. The two are
one BPF program, not two stacked filters: the kernel prefers a stacked filter's ERRNO to the
watch's USER_NOTIF, so refused calls would go unseen. A filter the program installs itself is
judged alongside: what it refuses (ERRNO, KILL, TRAP win over USER_NOTIF) is not seen, which
is right, as it needs no allowing; what it hands to a supervisor of its own (its USER_NOTIF,
newer than ours, wins the tie) is not seen either, and would be refused by the learned filter.

What one run did is all that is learned: a code path the run did not take (an error branch, a
``--verbose`` mode) is refused later. Run the program's own self-test, or its widest usual job.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import shlex
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

from ._record import frozen, replace
from .confine.config import Confinement, SyscallFilter
from .errors import CgroupError
from .policy import CgroupLimits, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from .policyfile import PolicyFile
    from .spawn import Popen

__all__ = ["MEMORY_MARGIN", "PIDS_MARGIN", "Learned", "learn"]

#: memory.max = 1.5 times the peak, and at least the peak + 32 MiB, rounded up to a MiB: a run
#: with more input or a colder cache needs more than the one observed.
MEMORY_MARGIN = (1.5, 32 << 20)
#: pids.max = twice the peak, and at least the peak + 16.
PIDS_MARGIN = (2.0, 16)

_MIB = 1 << 20
_LOCAL_FAMILIES = frozenset({"AF_UNIX"})  # the only family that needs no network at all
_NAMESPACED = frozenset({"unix-abstract", "unreadable", "unknown"})  # addresses of a netns
_URING = frozenset({"io_uring_setup", "io_uring_enter", "io_uring_register"})
# To measure peaks the program's group needs the controllers enabled, which only a limit
# asks for: these are as good as none (pids.max takes at most PID_MAX_LIMIT).
_MEASURE_MEMORY = 1 << 62
_MEASURE_PIDS = 4 * 1024 * 1024


@frozen
class Learned:
    """What one observed run of a program did, and the policy that lets it do just that.

    Attributes:
        argv: the program and its arguments.
        base: the policy file it ran under (the learned one starts from it).
        syscalls: every syscall that ran, ``(name, count)``, sorted by name; a number this
            host's table has no name for is ``"syscall N"``.
        denied: the syscalls the base's own filter refused, ``(name, count)``, sorted.
        families: the address families of the sockets made, ``(name, count)``, sorted
            (``"AF_INET"``; a number Python has no name for is ``"family N"``).
        addresses: the kinds of address given to ``connect``, ``bind`` and ``sendto``,
            ``(kind, count)``, sorted (``"inet-loopback"``, ``"unix-abstract"``, … see
            :func:`hardexec.confine.notify.address_kind`; ``"unreadable"``).
        new_namespaces: how many ``clone`` calls asked for a new namespace (``CLONE_NEW*``).
        returncode: the program's exit status; ``-N`` when signal N ended it.
        timed_out: the timeout ended it.
        memory_peak: the most memory the program's tree used, in bytes; None when not measured.
        pids_peak: the most processes it had at once; None when not measured.
        notes: what was not measured or cannot be expressed, and why, one sentence each.
        warnings: what of the base could not be applied while learning (best effort), as
            :class:`~hardexec.StageWarning` texts.
        stage_notes: what hardexec did that the base did not say (``no_new_privs`` implied).
        kernel: this host's kernel (``uname -sr`` and the machine).
        when: when the run started (UTC, ISO 8601, to the second).
    """

    argv: tuple[str, ...]
    base: PolicyFile
    syscalls: tuple[tuple[str, int], ...]
    denied: tuple[tuple[str, int], ...] = ()
    families: tuple[tuple[str, int], ...] = ()
    addresses: tuple[tuple[str, int], ...] = ()
    new_namespaces: int = 0
    returncode: int = 0
    timed_out: bool = False
    memory_peak: int | None = None
    pids_peak: int | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    stage_notes: tuple[str, ...] = ()
    kernel: str = ""
    when: str = ""

    @property
    def network(self) -> bool:
        """Whether the program needs the host's network namespace: it made a socket of a
        family other than ``AF_UNIX``, named an inet or abstract unix address (or one that
        could not be read), or used io_uring (whose sockets no syscall shows)."""
        if any(name not in _LOCAL_FAMILIES for name, _ in self.families):
            return True
        if any(name in _URING for name, _ in self.syscalls):
            return True  # io_uring makes sockets and connects without a syscall of its own
        return any(kind in _NAMESPACED or kind.startswith("inet") for kind, _ in self.addresses)

    @property
    def succeeded(self) -> bool:
        """Whether the program exited with status 0 (and was not timed out)."""
        return self.returncode == 0 and not self.timed_out

    def allowed(self) -> tuple[str, ...]:
        """The learned allow-list: the syscalls that ran (less ``@default``'s), ``sendmsg``
        (unless the base's own filter refuses it: the learned one is never wider), and
        ``@namespace`` after a namespace-making clone; sorted."""
        from .confine import groups
        from .confine.seccomp import permits

        always = set(groups.expand("@default")[0])
        names = {name for name, _ in self.syscalls if not name.startswith("syscall ")}
        names -= always
        conf = self.base.policy.confinement
        if conf is None or conf.syscalls is None or permits(conf.syscalls, "sendmsg"):
            names.add("sendmsg")
        if self.new_namespaces:
            names.add("@namespace")
        return tuple(sorted(names))

    def policy_file(self) -> PolicyFile:
        """The base, narrowed to what this run needed (see the module docstring).

        Raises:
            PolicyError: the learned filter is not valid here (it was learned on a host whose
                syscall table names differ); not expected for a policy learned on this host.
        """
        policy = self.base.policy
        conf = policy.confinement or Confinement()
        base_filter = conf.syscalls
        learned = SyscallFilter(
            allow=self.allowed(),
            deny=base_filter.deny if base_filter is not None else (),
            default=base_filter.default if base_filter is not None else False,
        )
        spaces = tuple(conf.namespaces)
        if not self.network and "net" not in spaces:
            spaces += ("net",)
        conf = replace(conf, syscalls=learned, namespaces=spaces)
        policy = replace(policy, confinement=conf, cgroups=self._ceilings(policy.cgroups))
        return replace(self.base, policy=policy)

    def _ceilings(self, limits: CgroupLimits | None) -> CgroupLimits | None:
        memory = pids = None
        if self.memory_peak is not None and (limits is None or limits.memory is None):
            factor, least = MEMORY_MARGIN
            wanted = max(math.ceil(self.memory_peak * factor), self.memory_peak + least)
            memory = -(-wanted // _MIB) * _MIB
        if self.pids_peak is not None and (limits is None or limits.pids is None):
            factor, least = PIDS_MARGIN
            pids = max(math.ceil(self.pids_peak * factor), self.pids_peak + least)
        if memory is None and pids is None:
            return limits
        # A new group is enforced, as a policy file's cgroup is by default: a learned ceiling
        # that cannot be applied refuses the run rather than being dropped.
        limits = limits or CgroupLimits(fail_on_error=True)
        changes: dict[str, int] = {}
        if memory is not None:
            changes["memory"] = memory
        if pids is not None:
            changes["pids"] = pids
        return replace(limits, **changes)

    def header(self) -> str:
        """How the policy was learned, as comment lines (``# ...``), each ending in a newline."""
        total = sum(count for _, count in self.syscalls)
        if self.timed_out:
            ended = "was ended by the timeout"
        elif self.returncode < 0:
            ended = f"was killed by signal {-self.returncode}"
        else:
            ended = f"exited with status {self.returncode}"
        families = ", ".join(name for name, _ in self.families) or "none"
        addresses = ", ".join(f"{kind} ({count})" for kind, count in self.addresses) or "none"
        lines = [
            f"Learned by hardexec learn on {self.when}, {self.kernel}, from one run of:",
            "  " + shlex.join(self.argv),
            f"The program {ended}; {len(self.syscalls)} distinct syscalls ran ({total} calls);",
            f"socket families: {families}; addresses: {addresses};",
            f"network: {'yes' if self.network else 'no'}.",
        ]
        if self.denied:
            said = ", ".join(f"{name} ({count})" for name, count in self.denied)
            lines.append(f"Refused by the base policy's filter: {said}.")
        if any(name in _URING for name, _ in self.syscalls):
            lines.append(
                "It used io_uring: what io_uring does for it (open, connect, socket, ...) no "
                "seccomp filter sees, so allowing io_uring_setup allows all of that."
            )
        lines[2:] = textwrap.wrap(" ".join(lines[2:]), 96)  # the command stays on one line
        for note in (*(f"Warning: {text}" for text in self.warnings), *self.notes):
            lines += textwrap.wrap(note, 96)
        return "".join(f"# {_printable(line)}\n" for line in lines)

    def dumps(self, fmt: str = "toml") -> str:
        """The learned policy file as text: :meth:`header` then the document, for TOML; JSON
        has no comments, so it is the document alone.

        Args:
            fmt: ``"toml"`` or ``"json"``.
        """
        from .policyfile import dumps

        text = dumps(self.policy_file(), fmt)
        return self.header() + "\n" + text if fmt == "toml" else text


def _printable(text: str) -> str:
    """``text`` with every character a TOML comment cannot hold escaped (a newline in an
    argument would end the comment and make the rest of the line part of the document)."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def learn(
    argv: Sequence[str],
    base: Policy | PolicyFile | None = None,
    *,
    env: Mapping[Any, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    kill_after: float | None = None,
    close_fds: bool = True,
    started: Callable[[int], None] | None = None,
) -> Learned:
    """Run ``argv`` under ``base`` while watching its syscalls; return what it did.

    The program's stdin, stdout and stderr are this process's, and it stays in this process's
    process group. It runs in a cgroup of its own when one can be made (to measure its peaks
    and end its whole tree): what it left running there when it exits is killed; without one
    (a warning in :attr:`Learned.warnings`), what it left running is left alone.

    Args:
        argv: the program and its arguments (searched on ``PATH`` as subprocess does).
        base: the policy to learn within: a :class:`~hardexec.Policy` or a
            :class:`~hardexec.policyfile.PolicyFile` (its run settings give the environment,
            timeout and grace unless the arguments below do; ``max_output`` is kept for the
            learned file but not applied while learning). None: the empty policy.
        env: the program's environment (None: from the base's run settings over this
            process's).
        cwd: the program's working directory.
        timeout: seconds before its tree is sent SIGTERM, then SIGKILL after ``kill_after``
            (default 5 s); None: the base's, else no timeout.
        kill_after: see ``timeout``.
        close_fds: as :class:`subprocess.Popen`'s (False: the program inherits this process's
            inheritable fds, as the command passes them on).
        started: called with the program's pid once it runs (the command forwards signals).

    Returns:
        What the run did (:class:`Learned`), whatever its exit status.

    Raises:
        StageError: this host cannot watch syscalls (no seccomp user notification, or a kernel
            before 5.5), or the base asks for what it cannot enforce.
        PolicyError: a bad base policy.
        OSError: the program could not be started (as subprocess raises it).
    """
    from .policyfile import PolicyFile, RunSettings
    from .runner.spec import TaskSpec, resolve_env

    if isinstance(base, PolicyFile):
        doc = base
    elif base is None or isinstance(base, Policy):
        doc = PolicyFile(policy=base if base is not None else Policy(), run=RunSettings())
    else:
        raise TypeError(
            f"base: expected a hardexec Policy or PolicyFile, got {type(base).__name__}"
        )
    argv = tuple(os.fsdecode(arg) for arg in argv)
    if not argv:
        raise ValueError("argv: the program's argument list is empty")
    run = doc.run
    if env is None:
        spec = TaskSpec(argv=argv, env_policy=run.env_policy, env=run.env)
        env = resolve_env(spec)
    if timeout is None:
        timeout = run.timeout
    if kill_after is None:
        kill_after = run.kill_after if run.kill_after is not None else 5.0
    when = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    notes: list[str] = []
    child, measuring = _start(argv, doc.policy, env, cwd, close_fds)
    timed_out = False
    try:
        if started is not None:
            started(child.pid)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _end(child, kill_after)
    except BaseException:
        child.kill_tree()
        child.wait()
        raise
    finally:
        child.kill_tree()  # what it left running: its peaks are in, its calls are counted
    listener = child._listener  # the watch's records (Popen shows denials only)
    seen = listener.seen() if listener is not None else {}
    families = listener.families() if listener is not None else {}
    addresses = listener.addresses() if listener is not None else {}
    clones = listener.new_namespaces() if listener is not None else 0
    unnamed = sorted(name for name in seen if name.startswith("syscall "))
    if unnamed:
        notes.append(
            f"Not in the allow-list (this host's table has no name for them): {', '.join(unnamed)}."
        )
    memory_peak, pids_peak = _peaks(child, measuring, notes)
    return Learned(
        argv=argv,
        base=doc,
        syscalls=tuple(sorted(seen.items())),
        denied=tuple(sorted(child.denied_syscalls.items())),
        families=tuple(sorted((_family(number), count) for number, count in families.items())),
        addresses=tuple(sorted(addresses.items())),
        new_namespaces=clones,
        returncode=child.returncode,
        timed_out=timed_out,
        memory_peak=memory_peak,
        pids_peak=pids_peak,
        notes=tuple(notes),
        warnings=tuple(str(warning) for warning in child.stage_warnings),
        stage_notes=tuple(child.stage_notes),
        kernel=f"{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        when=when.isoformat().replace("+00:00", "Z"),
    )


def _watching(policy: Policy, cgroups: CgroupLimits | None) -> Policy:
    """``policy`` with its syscall filter (if any) turned into a watch filter of the same
    rules, and ``cgroups`` for its group."""
    from .confine.seccomp import WatchFilter

    conf = policy.confinement or Confinement()
    rules = conf.syscalls
    watch = (
        WatchFilter(allow=rules.allow, deny=rules.deny, default=rules.default)
        if rules is not None
        else WatchFilter()
    )
    # The learning run is supervised: it must not outlive hardexec, even a kill -9 of it. (The
    # file is written from the base, so this is not learned.)
    return replace(
        policy, confinement=replace(conf, syscalls=watch), cgroups=cgroups, die_with_parent=True
    )


def _start(
    argv: tuple[str, ...],
    policy: Policy,
    env: Mapping[Any, Any] | None,
    cwd: str | os.PathLike[str] | None,
    close_fds: bool,
) -> tuple[Popen, tuple[str, ...]]:
    """The program, started under the watch; and the controllers its group measures with."""
    from .spawn import Popen

    attempts: list[tuple[CgroupLimits | None, tuple[str, ...]]] = []
    if policy.cgroups is not None:
        attempts.append((policy.cgroups, policy.cgroups.controllers()))
    else:
        offered = _offered(policy.cgroup_parent)
        wanted = {
            "memory": _MEASURE_MEMORY if "memory" in offered else None,
            "pids": _MEASURE_PIDS if "pids" in offered else None,
        }
        if any(wanted.values()):
            limits = CgroupLimits(**wanted, fail_on_error=True)
            attempts.append((limits, limits.controllers()))
        attempts.append((CgroupLimits(), ()))  # usage and a tree kill, without the peaks
    for index, (limits, controllers) in enumerate(attempts):
        try:
            child = Popen(
                argv,
                policy=_watching(policy, limits),
                warn=False,
                env=env,
                cwd=cwd,
                close_fds=close_fds,
            )
        except CgroupError:
            if index == len(attempts) - 1:
                raise
            continue  # the controllers cannot be enabled there: a group without them
        return child, controllers
    raise AssertionError("unreachable: the last attempt returns or raises")


def _offered(parent: object) -> tuple[str, ...]:
    """The controllers the program's group could have under ``parent`` (default: ours)."""
    from . import cgroups

    try:
        where = cgroups.default_parent() if parent is None else Path(parent)  # type: ignore[arg-type]
        with open(where / "cgroup.controllers") as f:
            return tuple(f.read().split())
    except (OSError, CgroupError, TypeError):
        return ()


def _end(child: Popen, grace: float) -> None:
    """The timeout: SIGTERM to the tree, then SIGKILL after ``grace`` s."""
    from .spawn_core import signal_tree

    signal_tree(child.cgroup, child.pid, signal.SIGTERM)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill_tree()
        child.wait()


def _peaks(
    child: Popen, controllers: tuple[str, ...], notes: list[str]
) -> tuple[int | None, int | None]:
    usage = child.usage
    if usage is None or usage.source != "cgroup":
        notes.append(
            "Peak memory and pids were not measured: the program had no cgroup of its own "
            "(cgroup v2 not usable here); no memory or pids ceiling was learned."
        )
        return None, None
    memory = usage.memory_peak if "memory" in controllers else None
    pids = usage.pids_peak if "pids" in controllers else None
    missing = [name for name, value in (("memory", memory), ("pids", pids)) if value is None]
    if missing:
        notes.append(
            f"Peak {' and '.join(missing)} not measured: the program's cgroup had no "
            f"{' or '.join(missing)} controller on this host; no ceiling for "
            f"{'them' if len(missing) > 1 else 'it'} was learned."
        )
    return memory, pids


def _family(number: int) -> str:
    with contextlib.suppress(ValueError):
        return socket.AddressFamily(number).name
    return f"family {number}"
