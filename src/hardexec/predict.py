"""What a program will hold under a policy, worked out without running anything.

A model of capabilities(7) and credentials(7), in three acts, from inputs gathered here:

1. **The exec of the stage.** The launcher (this process) forks and execs the exec stage; the
   kernel's exec rules apply to that file as to any other (it has neither set-id bits nor file
   capabilities, so uid 0 gets ``P' = B | I`` unless ``SECBIT_NOROOT``, and anyone else keeps
   only the ambient set). An empty policy skips this act: the program is spawned directly.
2. **The stage's steps**, as ``stage.c`` takes them: a user namespace when the confinement
   needs one (as uid 0 its ``uid_map`` needs CAP_SETFCAP when it is made: the kernel's
   ``verify_root_map``), ``setgroups``/``setresgid``, the bounding-set drop (needs
   CAP_SETPCAP in the effective set; without it a warning, or a refusal when root would
   regain every capability at exec or under ``strict``), ``PR_SET_KEEPCAPS`` and
   ``setresuid`` (the kernel's uid-change fixup), the securebits lock, ``capset``
   E = P = I = keep & P, the ambient raise, ``no_new_privs``, and whether Landlock or seccomp
   can then be applied.
3. **The program's execve**, as ``security/commoncap.c`` (``cap_bprm_creds_from_file``) has
   it: P' cleared; file capabilities ``P' = (B & fP) | (I & fI)`` (an effective file whose fP
   is not covered fails with EPERM); the root rule (``P' = B | I``, effective when euid is 0;
   skipped for a set-user-ID-root file with capabilities run by a non-root real uid); set-id
   bits ignored under ``no_new_privs`` or on a ``nosuid`` mount (file capabilities too, on
   such a mount); under ``no_new_privs`` a gain is cut back (``P' &= P``, euid = ruid); the
   ambient set cleared by file capabilities or a set-id change; ``P' |= A'``;
   ``E' = fE ? P' : A'``; I and B unchanged. A ``#!`` script is run as
   ``fs/binfmt_script.c`` runs it: the kernel execs its interpreter (the first line, up to
   255 bytes: the interpreter's path and one optional argument), each interpreter in turn
   when it is a script too (up to 5 of them, ``fs/exec.c`` exec_binprm: more is ELOOP); the
   credentials come from the last file, the one the kernel loads (its set-id bits, file
   capabilities and mount), never from the scripts. An interpreter that is missing fails
   the exec with ENOENT, one that may not be executed with EACCES. Under ``verify`` the
   program is traced at its exec by the launcher: without CAP_SYS_PTRACE there (and outside
   a user namespace of the stage's own, which the launcher owns) a gain is cut back as under
   ``no_new_privs`` (``P' &= P``; euid = ruid unless the process holds CAP_SETUID).

:func:`gather` collects the inputs from this machine (``/proc/self/status``,
``PR_GET_SECUREBITS``, the program's file found on ``PATH`` as the stage finds it, its
``security.capability`` xattr and mount flags) and takes the confinement's decisions from
``confine.compile`` (an implied ``no_new_privs``, a user namespace for a launcher without
CAP_SYS_ADMIN). :func:`predict` is pure: crafted :class:`Inputs` give a :class:`Prediction`.
It is an independent model (it does not call the stage); the host tests hold it against what
programs read of themselves.

The warnings and the refusal are said in the words the launcher's report uses
(:mod:`hardexec.report`: the library's ``StageWarning``\\s, and ``hardexec run``'s
``hardexec: warning:`` lines when it supervises).
"""

from __future__ import annotations

import errno
import os
import stat

from ._record import field, frozen
from .caps import CapSet

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .confine.compile import Confined
    from .policy import Policy

__all__ = [
    "FileCaps",
    "Inputs",
    "Launcher",
    "Prediction",
    "ProgramFile",
    "StageSteps",
    "gather",
    "predict",
]

# securebits (linux/securebits.h)
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS = 1 << 4
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
_ALL_LOCKS = 0xAA  # every *_LOCKED bit, each one above the bit it locks
_LOCKED_NOROOT = 0x0B  # what --lock-securebits sets: NOROOT, its lock, the setuid-fixup lock

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SETFCAP = 31

_PR_GET_SECUREBITS = 27
_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_DEFAULT_PATH = "/bin:/usr/bin"  # the stage's (CPython's os.defpath) when the env has none
_BINPRM_BUF_SIZE = 256  # what the kernel reads of a file to know its format (linux/binfmts.h)
_MAX_INTERPRETERS = 5  # fs/exec.c exec_binprm: depth 0..5, so 5 rewrites, then ELOOP


@frozen
class Launcher:
    """The credentials of the process that launches the stage (hardexec's own).

    Attributes:
        inh: CapInh. prm: CapPrm. eff: CapEff. bnd: CapBnd. amb: CapAmb.
        no_new_privs: NoNewPrivs.
        uids: real, effective, saved and filesystem uid, as ``Uid:`` lists them.
        gids: the same for gids.
        groups: the supplementary groups.
        securebits: ``PR_GET_SECUREBITS``.
        cap_last_cap: the kernel's last capability (``/proc/sys/kernel/cap_last_cap``).
    """

    inh: CapSet = field(default_factory=CapSet)
    prm: CapSet = field(default_factory=CapSet)
    eff: CapSet = field(default_factory=CapSet)
    bnd: CapSet = field(default_factory=CapSet)
    amb: CapSet = field(default_factory=CapSet)
    no_new_privs: bool = False
    uids: tuple[int, int, int, int] = (0, 0, 0, 0)
    gids: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: tuple[int, ...] = ()
    securebits: int = 0
    cap_last_cap: int = 40

    @classmethod
    def current(cls) -> Launcher:
        """This process, from ``/proc/self/status`` and ``PR_GET_SECUREBITS``."""
        with open("/proc/self/status") as f:
            status = dict(line.rstrip("\n").partition(":")[::2] for line in f)
        sets = {name: CapSet.from_hex(status[name]) for name in _SET_LINES}
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        return cls(
            inh=sets["CapInh"],
            prm=sets["CapPrm"],
            eff=sets["CapEff"],
            bnd=sets["CapBnd"],
            amb=sets["CapAmb"],
            no_new_privs=status.get("NoNewPrivs", "0").strip() == "1",
            uids=_four(status["Uid"]),
            gids=_four(status["Gid"]),
            groups=tuple(int(g) for g in status.get("Groups", "").split()),
            securebits=_securebits(),
            cap_last_cap=last,
        )


_SET_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _four(text: str) -> tuple[int, int, int, int]:
    r, e, s, fs = (int(x) for x in text.split())
    return r, e, s, fs


def _securebits() -> int:
    import ctypes  # only here: the command's start-up does not need it

    libc = ctypes.CDLL(None, use_errno=True)
    bits = libc.prctl(_PR_GET_SECUREBITS, 0, 0, 0, 0)
    return bits if bits > 0 else 0


@frozen
class FileCaps:
    """A file's capabilities (its ``security.capability`` xattr, ``vfs_cap_data``).

    Attributes:
        permitted: fP. inheritable: fI. effective: the effective bit (fE).
        version: 1, 2 or 3 (v3 names the user namespace root that owns them).
        rootid: v3's root uid (the kernel honours it here only when it is 0); None before v3.
    """

    permitted: CapSet = field(default_factory=CapSet)
    inheritable: CapSet = field(default_factory=CapSet)
    effective: bool = False
    version: int = 2
    rootid: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> FileCaps | None:
        """Decode ``vfs_cap_data``; None for what the kernel would not take as file caps."""
        if len(data) < 4:
            return None
        magic = int.from_bytes(data[:4], "little")
        version = (magic & _VFS_CAP_REVISION_MASK) >> 24
        words = {1: 1, 2: 2, 3: 2}.get(version)
        size = {1: 12, 2: 20, 3: 24}.get(version)
        if words is None or len(data) != size:
            return None
        prm = inh = 0
        for i in range(words):
            base = 4 + 8 * i
            prm |= int.from_bytes(data[base : base + 4], "little") << (32 * i)
            inh |= int.from_bytes(data[base + 4 : base + 8], "little") << (32 * i)
        rootid = int.from_bytes(data[20:24], "little") if version == 3 else None
        return cls(
            permitted=CapSet(prm),
            inheritable=CapSet(inh),
            effective=bool(magic & _VFS_CAP_FLAGS_EFFECTIVE),
            version=version,
            rootid=rootid,
        )


@frozen
class ProgramFile:
    """A file execve may run, as the kernel sees it.

    Attributes:
        path: the path tried.
        error: the errno execve gets before credentials matter (ENOENT, ENOTDIR, EACCES for
            what is not a regular file or sits on a ``noexec`` mount), else 0.
        mode: ``st_mode``. uid: its owner. gid: its group.
        nosuid: on a ``nosuid`` mount: set-id bits and file capabilities grant nothing.
        caps: its file capabilities, or None.
        known_format: it starts as an ELF file or a well-formed ``#!`` script does (else
            execve fails with ENOEXEC, once the permission is checked).
        dirs: ``(mode, uid, gid)`` of each directory above it, from ``/`` down, as far as
            they exist: the path's lookup needs search permission on each.
        script: a ``#!`` line names an interpreter: the kernel execs that instead.
        interpreter: that interpreter, as inspected (None for a script only when the chain
            is deeper than the kernel follows).
        interpreter_arg: the ``#!`` line's optional argument, or None.
    """

    path: str
    error: int = 0
    mode: int = 0o100755
    uid: int = 0
    gid: int = 0
    nosuid: bool = False
    caps: FileCaps | None = None
    known_format: bool = True
    dirs: tuple[tuple[int, int, int], ...] = ()
    script: bool = False
    interpreter: ProgramFile | None = None
    interpreter_arg: str | None = None

    @classmethod
    def inspect(cls, path: str, cwd: str | None = None, _level: int = 0) -> ProgramFile:
        """What execve of ``path`` would find (symlinks followed, as the kernel does); for a
        ``#!`` script, its interpreters too (``cwd``: where a relative interpreter is found,
        the program's directory; None: this process's)."""
        dirs = _directories(path)
        try:
            st = os.stat(path)
        except OSError as err:
            return cls(path, error=err.errno or errno.ENOENT, dirs=dirs)
        if not stat.S_ISREG(st.st_mode):
            return cls(
                path, error=errno.EACCES, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, dirs=dirs
            )
        flags = os.statvfs(path).f_flag
        try:
            caps = FileCaps.parse(os.getxattr(path, "security.capability"))
        except OSError:  # ENODATA: none; ENOTSUP: a filesystem without xattrs
            caps = None
        try:
            with open(path, "rb") as f:
                head = f.read(_BINPRM_BUF_SIZE)
        except OSError:  # unreadable here: leave the format to the kernel
            head = b"\x7fELF"
        shebang = parse_shebang(head) if head.startswith(b"#!") else None
        interpreter = arg = None
        if shebang is not None and _level < _MAX_INTERPRETERS + 1:
            name, raw_arg = shebang
            where = cwd if cwd is not None else os.getcwd()
            interpreter = cls.inspect(os.path.join(where, os.fsdecode(name)), cwd, _level + 1)
            arg = None if raw_arg is None else os.fsdecode(raw_arg)
        return cls(
            path,
            known_format=head.startswith(b"\x7fELF") or shebang is not None,
            error=errno.EACCES if flags & os.ST_NOEXEC else 0,
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            nosuid=bool(flags & os.ST_NOSUID),
            caps=caps,
            dirs=dirs,
            script=shebang is not None,
            interpreter=interpreter,
            interpreter_arg=arg,
        )


_SPACETAB = b" \t"


def parse_shebang(head: bytes) -> tuple[bytes, bytes | None] | None:
    """The interpreter and its optional argument of a ``#!`` line, as ``fs/binfmt_script.c``
    (``load_script``) reads the first ``BINPRM_BUF_SIZE`` bytes of a file; None where the
    kernel says ENOEXEC (no ``#!``, no interpreter, a name cut at the buffer's end)."""
    buf = head[:_BINPRM_BUF_SIZE].ljust(_BINPRM_BUF_SIZE, b"\0")
    if not buf.startswith(b"#!"):
        return None
    last = _BINPRM_BUF_SIZE - 1  # buf_end: the last byte is never part of the line

    def non_spacetab(first: int, end: int) -> int | None:
        return next((i for i in range(first, end) if buf[i] not in _SPACETAB), None)

    def terminator(first: int, end: int) -> int | None:
        return next((i for i in range(first, end) if buf[i] in b" \t\0"), None)

    newline = buf.split(b"\0", 1)[0].find(b"\n")  # strnchr stops at the first NUL
    if newline < 0:
        start = non_spacetab(2, last)
        if start is None or terminator(start, last) is None:
            return None  # all blanks, or an interpreter's name that may have been cut
        end = last
    else:
        end = newline
    while buf[end - 1] in _SPACETAB:
        end -= 1
    name_at = non_spacetab(2, end)
    if name_at is None or name_at == end:
        return None
    sep = terminator(name_at, end)
    name = buf[name_at : sep if sep is not None else end]
    arg = None
    if sep is not None and buf[sep] != 0:
        arg_at = non_spacetab(sep, end)
        if arg_at is not None:
            arg = buf[arg_at:end].split(b"\0", 1)[0]
    return name, arg


def _directories(path: str) -> tuple[tuple[int, int, int], ...]:
    """(mode, uid, gid) of each directory above ``path``, from ``/``, while they exist (the
    path as written: directories a symlink leads through are not followed)."""
    chain = []
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        chain.append(parent)
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    found = []
    for directory in reversed(chain):
        try:
            st = os.stat(directory)
        except OSError:
            break
        found.append((st.st_mode, st.st_uid, st.st_gid))
    return tuple(found)


@frozen
class StageSteps:
    """What the stage is asked to do about capabilities and identity (its options).

    Attributes:
        drop_caps: ``--drop-caps`` (the policy's ``drop_all_caps``). keep: the kept set.
        strict: ``--strict`` (``fail_on_cap_error``).
        nnp: ``--nnp``: the policy's ``no_new_privs``, or implied by the confinement.
        uid: ``--uid``. gid: ``--gid``. set_groups: ``--groups-fd`` or ``--clear-groups``.
        groups: the supplementary groups set (when ``set_groups``).
        lock_securebits: ``--lock-securebits`` (a uid-0 program after ``drop_all_caps``).
        unshare: the namespaces, ``user`` first when the confinement adds one.
        confine_steps: ``landlock`` and ``seccomp``, those applied (each needs
            ``no_new_privs`` or CAP_SYS_ADMIN).
        implied_nnp: ``no_new_privs`` was added by the confinement, not asked.
    """

    drop_caps: bool = False
    keep: CapSet = field(default_factory=CapSet)
    strict: bool = False
    nnp: bool = False
    uid: int | None = None
    gid: int | None = None
    set_groups: bool = False
    groups: tuple[int, ...] = ()
    lock_securebits: bool = False
    unshare: tuple[str, ...] = ()
    confine_steps: tuple[str, ...] = ()
    implied_nnp: bool = False

    @classmethod
    def from_policy(
        cls, policy: Policy, launcher: Launcher, confined: Confined | None = None
    ) -> StageSteps:
        """The stage's options for ``policy`` (``confined``: what its confinement compiled to)."""
        sec = policy.security
        ident = sec.identity
        program_uid = ident.uid if ident.uid is not None else launcher.uids[1]
        implied = confined is not None and confined.implied_nnp
        return cls(
            drop_caps=sec.drop_all_caps,
            keep=sec.keep_caps if isinstance(sec.keep_caps, CapSet) else CapSet(),
            strict=sec.fail_on_cap_error,
            nnp=sec.no_new_privs or implied,
            uid=ident.uid,
            gid=ident.gid,
            set_groups=ident.groups is not None,
            groups=ident.groups or (),
            lock_securebits=sec.drop_all_caps and program_uid == 0,
            unshare=confined.unshare if confined is not None else (),
            confine_steps=_confine_steps(confined),
            implied_nnp=implied,
        )


def _confine_steps(confined: Confined | None) -> tuple[str, ...]:
    if confined is None:
        return ()
    found = ("landlock",) if confined.ruleset is not None else ()
    return found + (("seccomp",) if confined.filter is not None else ())


@frozen
class Inputs:
    """Everything :func:`predict` needs.

    Attributes:
        launcher: the launching process's credentials.
        steps: the stage's options.
        candidates: the files the stage would try for the program, in ``PATH`` order (one
            when the name has a slash).
        stage: the stage's own file, or None when the program is spawned directly (an empty
            policy).
        program: the program's name as given (for messages).
        policy: the policy (its report's words name it); None: the empty policy.
        refusal: why the launcher itself would refuse before spawning (a confinement this
            kernel cannot enforce), or None.
        parent_warnings: what the launcher would warn of before spawning (the confinement's
            best-effort warnings), in its words.
        notes: what the launcher would note (an implied ``no_new_privs``).
        confined: the confinement compiled for this spawn (None: none), for the explanation.
        verify: a verified run: the launcher traces the program's exec and compares what it
            holds with the policy (:func:`hardexec.verify.differences`).
    """

    launcher: Launcher
    steps: StageSteps = field(default_factory=StageSteps)
    candidates: tuple[ProgramFile, ...] = ()
    stage: ProgramFile | None = None
    program: str = ""
    policy: Policy | None = field(default=None, compare=False, repr=False)
    refusal: str | None = None
    parent_warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    confined: Confined | None = field(default=None, compare=False, repr=False)
    verify: bool = False


@frozen
class Prediction:
    """What the program would hold after its execve, and what the run would say.

    The sets are meaningful when ``refused`` is None. When a capability step refuses the run
    (root would regain every capability, ``strict``), they are what best effort would have
    given — the reason for the refusal; when another step refuses, the model stops there.

    Attributes:
        inh: CapInh. prm: CapPrm. eff: CapEff. bnd: CapBnd. amb: CapAmb.
        no_new_privs: NoNewPrivs.
        uids: real, effective, saved, filesystem uid after exec. gids: the same for gids.
        groups: the supplementary groups.
        securebits: after exec.
        user_namespace: the program runs in a user namespace of its own (its capabilities
            count there only).
        program: the file execve would run, or None when none would do.
        warnings: the warnings the run would give, in the launcher's words.
        refused: why hardexec would refuse the run (one line), or None.
        refused_step: the stage step (or ``exec``, ``confinement``, ``verify``) that refuses,
            or None.
        exit_status: what ``hardexec run`` would exit with when refused (125 hardexec
            refused, 126 not executable, 127 not found), else None.
        notes: what the launcher would note (an implied ``no_new_privs``).
        trace: each rule of the model that decided something, in order, in words.
    """

    inh: CapSet
    prm: CapSet
    eff: CapSet
    bnd: CapSet
    amb: CapSet
    no_new_privs: bool
    uids: tuple[int, int, int, int]
    gids: tuple[int, int, int, int]
    groups: tuple[int, ...] = ()
    securebits: int = 0
    user_namespace: bool = False
    program: str | None = None
    warnings: tuple[str, ...] = ()
    refused: str | None = None
    refused_step: str | None = None
    exit_status: int | None = None
    notes: tuple[str, ...] = ()
    trace: tuple[str, ...] = ()

    def sets(self) -> dict[str, CapSet]:
        """The five sets by their ``/proc/PID/status`` names."""
        return {
            "CapInh": self.inh,
            "CapPrm": self.prm,
            "CapEff": self.eff,
            "CapBnd": self.bnd,
            "CapAmb": self.amb,
        }


# ---- gathering ---------------------------------------------------------------------------


def _candidates(
    name: str, env: Mapping[Any, Any] | None, cwd: str | None
) -> tuple[ProgramFile, ...]:
    """The files the stage tries, in order (stage.c exec_program, run from ``cwd``)."""
    where = cwd if cwd is not None else os.getcwd()
    if "/" in name:
        return (ProgramFile.inspect(os.path.join(where, name), where),)
    found = os.environ.get("PATH") if env is None else env.get("PATH", env.get(b"PATH"))
    path = _DEFAULT_PATH if found is None else os.fsdecode(found)
    return tuple(
        ProgramFile.inspect(os.path.join(where, directory, name), where)
        for directory in path.split(":")
    )


def gather(
    argv: Sequence[str],
    policy: Policy | None = None,
    *,
    env: Mapping[Any, Any] | None = None,
    cwd: str | None = None,
    verify: bool = False,
) -> Inputs:
    """The inputs for running ``argv`` under ``policy`` from this process, now.

    Args:
        argv: the program and its arguments (``argv[0]`` is searched on ``PATH`` as the stage
            searches it).
        policy: the policy; None is the empty policy.
        env: the program's environment (its ``PATH`` is searched); None: this process's.
        cwd: the directory the program starts in; None: this process's.
        verify: a verified run (``verify=True``, ``--verify``): the launcher traces the
            program at its exec and checks it against the policy.

    Returns:
        The :class:`Inputs`; nothing is spawned and nothing is changed.

    Raises:
        ValueError: ``argv`` is empty.
    """
    from .errors import StageError
    from .policy import Policy

    policy = policy if policy is not None else Policy()
    if not argv:
        raise ValueError("argv: the program's argument list is empty")
    launcher = Launcher.current()
    name = os.fspath(argv[0])
    confined = refusal = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if verify:
        from .errors import PolicyError
        from .verify import check_verifiable

        try:  # as the spawn checks it, before anything else
            check_verifiable(policy)
        except PolicyError as err:
            refusal = str(err)
    if refusal is None and policy.confinement is not None and not policy.confinement.is_empty():
        from .spawn_core import _confine, env_block

        try:  # the launcher's own decisions for this spawn: the same call, the same answer
            confined = _confine(policy, name, cwd, env_block(env))
        except StageError as err:
            refusal = str(err)
        if confined is not None:
            warnings = tuple(str(w) for w in confined.warnings)
            notes = confined.notes
    stage = None
    if verify or not policy.is_empty():  # a verified spawn always goes through the stage
        from .stage import stage_command

        stage = ProgramFile.inspect(os.path.realpath(stage_command()[0]))
    return Inputs(
        launcher=launcher,
        steps=StageSteps.from_policy(policy, launcher, confined),
        candidates=_candidates(name, env, cwd),
        stage=stage,
        program=name,
        policy=policy,
        refusal=refusal,
        parent_warnings=warnings,
        notes=notes,
        confined=confined,
        verify=verify,
    )


# ---- the model ---------------------------------------------------------------------------


class _Creds:
    """A working copy of one process's credentials (masks as ints)."""

    def __init__(self, launcher: Launcher) -> None:
        self.inh = launcher.inh.mask
        self.prm = launcher.prm.mask
        self.eff = launcher.eff.mask
        self.bnd = launcher.bnd.mask
        self.amb = launcher.amb.mask
        self.nnp = launcher.no_new_privs
        self.uids = list(launcher.uids)
        self.gids = list(launcher.gids)
        self.groups = tuple(launcher.groups)
        self.securebits = launcher.securebits
        self.userns = False

    def has(self, cap: int) -> bool:
        return bool(self.eff >> cap & 1)


class _Stop(Exception):
    """A step the stage cannot get past: the model ends there."""


class _Model:
    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.steps = inputs.steps
        self.full = (1 << (inputs.launcher.cap_last_cap + 1)) - 1
        self.c = _Creds(inputs.launcher)
        self.records: list[str] = []
        self.trace: list[str] = []
        self.refusal: tuple[str, int] | None = None  # (step, errno) of the first F record
        self.program: str | None = None

    def note(self, text: str) -> None:
        self.trace.append(text)

    def record(self, kind: str, step: str, number: int, arg: int | None = None) -> None:
        self.records.append(f"{kind} {step} {number} {'-' if arg is None else arg}")
        if kind == "F" and self.refusal is None:
            self.refusal = (step, number)

    def fatal(self, step: str, number: int, arg: int | None = None) -> None:
        self.record("F", step, number, arg)
        raise _Stop

    def cap_failed(self, step: str, number: int, arg: int | None = None) -> None:
        """stage.c cap_failed: a refusal under --strict, else a warning. The model goes on
        either way, so the sets show what the refusal prevents."""
        self.record("F" if self.steps.strict else "W", step, number, arg)

    # -- execve (security/commoncap.c, cap_bprm_creds_from_file; fs/exec.c bprm_fill_uid) --

    def set_ids(self, f: ProgramFile, who: str) -> tuple[int, int]:
        """bprm_fill_uid: the euid and egid the exec gives (set-id bits, unless nnp/nosuid)."""
        old = self.c
        euid, egid = old.uids[1], old.gids[1]
        setid = f.mode & (stat.S_ISUID | stat.S_ISGID)
        if f.nosuid and (setid or f.caps is not None):
            self.note(f"{who}: on a nosuid mount, its set-id bits and file capabilities count not")
        elif old.nnp and setid:
            self.note(f"{who}: no_new_privs: its set-id bits are ignored")
        elif not f.nosuid:
            if f.mode & stat.S_ISUID:
                euid = f.uid
                self.note(f"{who}: set-user-ID: euid becomes {f.uid}")
            if f.mode & stat.S_ISGID and f.mode & stat.S_IXGRP:
                egid = f.gid
                self.note(f"{who}: set-group-ID: egid becomes {f.gid}")
        return euid, egid

    def file_caps(self, f: ProgramFile, who: str) -> FileCaps | None:
        """get_file_caps: the capabilities the kernel takes from the file, or None."""
        caps = None if f.nosuid else f.caps  # mnt_may_suid: a nosuid mount grants nothing
        if caps is not None and caps.rootid not in (None, 0):
            self.note(f"{who}: its v3 file capabilities belong to another namespace's root")
            return None
        return caps

    def tracer_capable(self) -> bool:
        """ptracer_capable: the launcher (the tracer, as it was at PTRACE_TRACEME) holds
        CAP_SYS_PTRACE over the program's user namespace: in its own, its effective set says;
        over one the stage made, it is that namespace's owner, which has every capability."""
        return self.c.userns or bool(self.inputs.launcher.eff.mask >> CAP_SYS_PTRACE & 1)

    def execve(self, f: ProgramFile, who: str, traced: bool = False) -> int:
        """The credentials after execve of ``f`` (the file the kernel loads: a script's last
        interpreter); the errno when the kernel refuses it. ``traced``: the launcher traces
        this exec (verify)."""
        old = self.c
        ruid, rgid = old.uids[0], old.gids[0]
        euid, egid = self.set_ids(f, who)
        prm = 0
        effective = has_fcap = False
        caps = self.file_caps(f, who)
        if caps is not None:
            has_fcap, effective = True, caps.effective
            fp = caps.permitted.mask
            prm = (old.bnd & fp) | (old.inh & caps.inheritable.mask)
            self.note(f"{who}: file capabilities: P' = (B & fP) | (I & fI)")
            if effective and fp & ~prm:
                self.note(f"{who}: fP [{CapSet(fp & ~prm)}] is not covered: execve fails EPERM")
                return errno.EPERM
        if not old.securebits & SECBIT_NOROOT:
            if has_fcap and ruid != 0 and euid == 0:
                self.note(f"{who}: set-user-ID root with file capabilities: no root rule")
            else:
                if euid == 0 or ruid == 0:
                    prm = old.bnd | old.inh
                    self.note(f"{who}: the root rule: P' = B | I")
                if euid == 0:
                    effective = True
        elif euid == 0 or ruid == 0:
            self.note(f"{who}: SECBIT_NOROOT: uid 0 gets nothing for being uid 0")
        id_changed = euid != old.uids[1] or not (egid == old.gids[3] or egid in old.groups)
        if (id_changed or prm & ~old.prm) and old.nnp:
            euid, egid = ruid, rgid
            prm &= old.prm
            self.note(f"{who}: no_new_privs: P' &= P, euid = ruid")
        elif (id_changed or prm & ~old.prm) and traced and not self.tracer_capable():
            if not old.has(CAP_SETUID):
                euid, egid = ruid, rgid
            prm &= old.prm
            ids = "euid = ruid" if euid == ruid else "the euid stays (it holds CAP_SETUID)"
            self.note(
                f"{who}: traced by a launcher without CAP_SYS_PTRACE (verify): P' &= P, {ids}"
            )
        amb = old.amb
        if has_fcap or id_changed:
            amb = 0
            if old.amb:
                self.note(f"{who}: file capabilities or a set-id change clear the ambient set")
        prm |= amb
        c = self.c
        c.prm, c.amb = prm, amb
        c.eff = prm if effective else amb
        c.uids = [ruid, euid, euid, euid]
        c.gids = [rgid, egid, egid, egid]
        c.securebits &= ~SECBIT_KEEP_CAPS
        return 0

    # -- the stage's steps (stage.c stage_main) --

    def stage(self) -> None:
        s, c = self.steps, self.c
        if "user" in s.unshare:
            if c.uids[1] == 0 and not c.has(CAP_SETFCAP):
                # verify_root_map: mapping uid 0 needs CAP_SETFCAP in the namespace's creator
                self.note("stage: uid 0 without CAP_SETFCAP may not map itself in a user namespace")
                self.fatal("userns", errno.EPERM)
            c.prm = c.eff = c.bnd = self.full
            c.inh = c.amb = 0
            c.securebits = 0
            c.userns = True
            self.note("stage: a user namespace of its own: every capability there")
        if s.set_groups:
            if c.userns or not c.has(CAP_SETGID):
                self.fatal("setgroups", errno.EPERM)
            c.groups = s.groups
        if s.gid is not None:
            if c.userns and s.gid != c.gids[1]:
                self.fatal("setresgid", errno.EINVAL)  # only our own gid is mapped
            if not c.has(CAP_SETGID) and s.gid not in c.gids[:3]:
                self.fatal("setresgid", errno.EPERM)
            c.gids = [s.gid] * 4
        if s.drop_caps:
            self.drop_bounding()
        if s.uid is not None:
            if s.drop_caps:
                if c.securebits & SECBIT_KEEP_CAPS_LOCKED:
                    self.cap_failed("keepcaps", errno.EPERM)
                else:
                    c.securebits |= SECBIT_KEEP_CAPS
            self.setresuid(s.uid)
        if s.lock_securebits:
            bits = c.securebits
            locked = bits & _ALL_LOCKS
            if (locked >> 1) & (bits ^ _LOCKED_NOROOT) or locked & ~_LOCKED_NOROOT:
                self.cap_failed("securebits", errno.EPERM)
            elif not c.has(CAP_SETPCAP):
                self.cap_failed("securebits", errno.EPERM)
                self.note("stage: securebits not locked: no CAP_SETPCAP")
            else:
                c.securebits = _LOCKED_NOROOT
                self.note("stage: SECBIT_NOROOT locked")
        if s.drop_caps:
            self.set_caps()
        if s.nnp:
            c.nnp = True
        if s.confine_steps and not c.nnp and not c.has(CAP_SYS_ADMIN):
            self.fatal(s.confine_steps[0], errno.EPERM)

    def root_regains(self) -> bool:
        s, c = self.steps, self.c
        if s.nnp or c.securebits & SECBIT_NOROOT:
            return False
        if s.uid is not None:
            return s.uid == 0
        return c.uids[0] == 0 or c.uids[1] == 0

    def drop_bounding(self) -> None:
        c, keep = self.c, self.steps.keep.mask
        todo = c.bnd & ~keep
        if not todo:
            return
        if c.has(CAP_SETPCAP):
            c.bnd &= keep
            return
        first = (todo & -todo).bit_length() - 1
        self.note("stage: no CAP_SETPCAP: the bounding set stays as it is")
        if self.root_regains():
            self.record("F", "bounding_set", errno.EPERM, first)
        else:
            self.cap_failed("bounding_set", errno.EPERM, first)

    def setresuid(self, uid: int) -> None:
        c = self.c
        if c.userns and uid != c.uids[1]:
            self.fatal("setresuid", errno.EINVAL)  # only our own uid is mapped
        if not c.has(CAP_SETUID) and uid not in c.uids[:3]:
            self.fatal("setresuid", errno.EPERM)
        old = c.uids
        if not c.securebits & SECBIT_NO_SETUID_FIXUP:  # cap_emulate_setxuid
            if 0 in old[:3] and uid != 0:
                if not c.securebits & SECBIT_KEEP_CAPS:
                    c.prm = c.eff = 0
                    self.note("stage: leaving uid 0 clears P and E (no KEEPCAPS)")
                c.amb = 0
            if old[1] == 0 and uid != 0:
                c.eff = 0
            if old[1] != 0 and uid == 0:
                c.eff = c.prm
        c.uids = [uid] * 4

    def set_caps(self) -> None:
        c, keep = self.c, self.steps.keep.mask
        missing = keep & ~c.prm
        for cap in range(64):
            if missing >> cap & 1:
                self.cap_failed("keep_caps", errno.EPERM, cap)
        want = keep & c.prm
        if want & ~(c.inh | c.bnd):  # capset: no new inheritable cap outside the bounding set
            self.cap_failed("capset", errno.EPERM)
            return
        c.eff = c.prm = c.inh = want
        c.amb = 0
        for cap in range(64):
            if not want >> cap & 1:
                continue
            if c.securebits & SECBIT_NO_CAP_AMBIENT_RAISE:
                self.cap_failed("ambient_raise", errno.EPERM, cap)
            else:
                c.amb |= 1 << cap

    def find_program(self) -> ProgramFile | None:
        """stage.c exec_program: the first candidate execve takes; the first error other
        than ENOENT/ENOTDIR is the one reported."""
        saved, last = 0, errno.ENOENT
        for f in self.inputs.candidates:
            last = self.search_permission(f) or f.error or self.exec_permission(f)
            last = last or (0 if f.known_format else errno.ENOEXEC)
            last = last or self.interpreters(f)[1]
            if not last:
                return f
            if last not in (errno.ENOENT, errno.ENOTDIR) and not saved:
                saved = last
        self.fatal("exec", saved or last)
        return None

    def interpreters(self, f: ProgramFile) -> tuple[ProgramFile, int]:
        """fs/binfmt_script.c, as fs/exec.c exec_binprm loops over it: the file the kernel
        loads for ``f`` (itself, or its last interpreter), and the errno of a ``#!`` chain the
        kernel refuses (the interpreter's lookup, its permission, its format, ELOOP)."""
        depth = 0
        while f.script:
            depth += 1
            found = f.interpreter
            if found is None:
                return f, errno.ELOOP
            number = self.search_permission(found) or found.error or self.exec_permission(found)
            if number:
                return f, number
            if depth > _MAX_INTERPRETERS:
                return f, errno.ELOOP
            if not found.known_format:
                return f, errno.ENOEXEC
            f = found
        return f, 0

    def search_permission(self, f: ProgramFile) -> int:
        """EACCES when a directory above ``f`` may not be searched by the program."""
        c = self.c
        if c.has(CAP_DAC_OVERRIDE) or c.has(CAP_DAC_READ_SEARCH):
            return 0
        for mode, uid, gid in f.dirs:
            if not mode & self.permission_bit(uid, gid):
                return errno.EACCES
        return 0

    def permission_bit(self, uid: int, gid: int) -> int:
        """The x bit that applies to the program's credentials: owner, group or other."""
        c = self.c
        if c.uids[3] == uid:
            return 0o100
        if gid == c.gids[3] or gid in c.groups:
            return 0o010
        return 0o001

    def exec_permission(self, f: ProgramFile) -> int:
        """EACCES unless the program's credentials may execute ``f``."""
        if self.c.has(CAP_DAC_OVERRIDE):
            return 0 if f.mode & 0o111 else errno.EACCES
        return 0 if f.mode & self.permission_bit(f.uid, f.gid) else errno.EACCES

    def run(self) -> None:
        stage = self.inputs.stage
        if stage is not None:
            if self.execve(stage, "exec of the stage"):
                self.fatal("exec", errno.EPERM)
            self.stage()
        f = self.find_program()
        assert f is not None
        self.program = f.path
        loaded = self.interpreters(f)[0]
        if loaded is not f:
            self.note(
                f"exec of the program: a #! script: the kernel runs {loaded.path}; its set-id "
                "bits, file capabilities and mount count, the script's not"
            )
        number = self.execve(loaded, "exec of the program", traced=self.inputs.verify)
        if number:
            self.fatal("exec", number)


def predict(inputs: Inputs) -> Prediction:
    """What the program would hold after its execve, from ``inputs`` alone (nothing is read;
    under ``verify`` the check's "the launcher's own ids" are this process's, as
    :func:`hardexec.verify.differences` takes them).

    Args:
        inputs: the launcher, the stage's options and the program's files (see :func:`gather`).

    Returns:
        The :class:`Prediction`: the five sets, NoNewPrivs, ids, warnings, and the refusal.
    """
    from .report import parse_report

    m = _Model(inputs)
    stopped = False
    if inputs.refusal is None:
        try:
            m.run()
        except _Stop:
            stopped = True
    c = m.c
    records = m.records
    fatal = next((i for i, line in enumerate(records) if line.startswith("F ")), None)
    if fatal is not None:  # the stage exits at its first F record: nothing after it is said
        records = records[: fatal + 1]
    report = parse_report(
        "".join(line + "\n" for line in records).encode(), inputs.program, inputs.policy
    )
    refused = inputs.refusal
    step = "confinement" if refused is not None else None
    status = 125 if refused is not None else None
    if refused is None and report.error is not None:
        refused = str(report.error)
        step = m.refusal[0] if m.refusal else None
        status = 125
        if step == "exec":
            number = m.refusal[1] if m.refusal else errno.ENOENT
            status = 127 if number in (errno.ENOENT, errno.ENOTDIR) else 126
    if stopped and step != "exec":
        m.note(f"stage: {step} fails: the stage exits before the program runs")
    if inputs.verify and refused is None:
        found = _verify(inputs, c)
        if found:
            from .verify import refusal

            refused, step, status = str(refusal(found, report.warnings)), "verify", 125
            m.note("verify: the program holds more than the policy: killed at its exec")
    return Prediction(
        inh=CapSet(c.inh),
        prm=CapSet(c.prm),
        eff=CapSet(c.eff),
        bnd=CapSet(c.bnd),
        amb=CapSet(c.amb),
        no_new_privs=c.nnp,
        uids=(c.uids[0], c.uids[1], c.uids[2], c.uids[3]),
        gids=(c.gids[0], c.gids[1], c.gids[2], c.gids[3]),
        groups=c.groups,
        securebits=c.securebits,
        user_namespace=c.userns,
        program=m.program,
        warnings=(*inputs.parent_warnings, *(str(w) for w in report.warnings)),
        refused=refused,
        refused_step=step,
        exit_status=status,
        notes=inputs.notes,
        trace=tuple(m.trace),
    )


def _verify(inputs: Inputs, c: _Creds) -> list[str]:
    """What the launcher's check at the exec would find beyond the policy
    (:func:`hardexec.verify.differences` on the predicted ``/proc/PID/status``; the launcher's
    own ids are this process's, as there)."""
    from .policy import Policy
    from .verify import differences

    confined = inputs.confined
    applied = "seccomp" in inputs.steps.confine_steps  # the model got past it
    seccomp = confined is not None and confined.filter is not None and applied
    status = {
        "CapInh": CapSet(c.inh).to_hex(),
        "CapPrm": CapSet(c.prm).to_hex(),
        "CapEff": CapSet(c.eff).to_hex(),
        "CapBnd": CapSet(c.bnd).to_hex(),
        "CapAmb": CapSet(c.amb).to_hex(),
        "NoNewPrivs": "1" if c.nnp else "0",
        "Uid": "\t".join(map(str, c.uids)),
        "Gid": "\t".join(map(str, c.gids)),
        "Groups": " ".join(map(str, c.groups)),
        "Seccomp": "2" if seccomp else "0",
    }
    policy = inputs.policy if inputs.policy is not None else Policy()
    return differences(status, policy, confined)
