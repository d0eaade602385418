"""The capabilities(7) model of hardexec.predict, on crafted inputs: launchers with and without
uid 0, CAP_SETPCAP, no_new_privs and SECBIT_NOROOT; set-user-ID-root files, file capabilities
with and without the effective bit, nosuid mounts; ``#!`` scripts and their interpreters;
verified (traced) execs; a user namespace root may not map. The host tier holds the same model
against what real programs read of themselves."""

from __future__ import annotations

import errno
import stat

import pytest

from hardexec import CapSet, Policy, SecurityConfig
from hardexec.predict import (
    SECBIT_NOROOT,
    FileCaps,
    Inputs,
    Launcher,
    ProgramFile,
    StageSteps,
    parse_shebang,
    predict,
)

LAST = 40
ALL = CapSet((1 << (LAST + 1)) - 1)
NONE = CapSet()
BIND = CapSet.of("NET_BIND_SERVICE")
RAW = CapSet.of("NET_RAW")
NO_SETPCAP = ALL - CapSet.of("SETPCAP")
NOBODY = 65534

ROOT = Launcher(inh=NONE, prm=ALL, eff=ALL, bnd=ALL, amb=NONE, cap_last_cap=LAST)
# What a child of `capsh --drop=cap_setpcap` holds: root, but SETPCAP out of every set.
ROOT_NO_SETPCAP = Launcher(
    inh=NONE, prm=NO_SETPCAP, eff=NO_SETPCAP, bnd=NO_SETPCAP, amb=NONE, cap_last_cap=LAST
)
STAGE = ProgramFile("/opt/hardexec/hardexec-stage")
PROGRAM = ProgramFile("/usr/bin/prog")
SETUID_ROOT = ProgramFile("/usr/bin/su-like", mode=stat.S_IFREG | stat.S_ISUID | 0o755)


def security(**fields) -> Policy:
    return Policy(security=SecurityConfig(**fields))


def inputs(policy: Policy, launcher: Launcher = ROOT, program: ProgramFile = PROGRAM, **kw):
    return Inputs(
        launcher=launcher,
        steps=StageSteps.from_policy(policy, launcher, None),
        candidates=kw.pop("candidates", (program,)),
        stage=None if policy.is_empty() else STAGE,
        program="prog",
        policy=policy,
        **kw,
    )


def sets(p) -> dict[str, CapSet]:
    return p.sets()


def only(caps: CapSet) -> dict[str, CapSet]:
    return dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), caps)


def steps_of(p) -> list[str]:
    return [text.split(" failed:")[0] for text in p.warnings]


# --- a launcher with every capability ----------------------------------------------------------


@pytest.mark.parametrize("nnp", [True, False])
@pytest.mark.parametrize("user", [None, "nobody"])
@pytest.mark.parametrize("keep", [[], ["NET_BIND_SERVICE"], ["NET_ADMIN", "BPF"]])
def test_root_launcher_gives_exactly_the_kept_caps(keep, user, nnp):
    p = predict(inputs(security(drop_all_caps=True, keep_caps=keep, no_new_privs=nnp, user=user)))
    assert sets(p) == only(CapSet.from_caps(keep))
    assert p.refused is None and p.warnings == ()
    assert p.no_new_privs is nnp
    uid = NOBODY if user else 0
    assert p.uids == (uid,) * 4 and p.gids == (uid,) * 4


def test_a_root_program_gets_locked_noroot():
    p = predict(inputs(security(drop_all_caps=True)))
    assert p.securebits == 0x0B
    assert "exec of the program: SECBIT_NOROOT: uid 0 gets nothing for being uid 0" in p.trace


def test_no_drop_leaves_root_with_everything():
    p = predict(inputs(security(no_new_privs=True)))
    assert sets(p) == {**only(ALL), "CapInh": NONE, "CapAmb": NONE}
    assert p.no_new_privs


def test_a_user_switch_without_drop_leaves_nothing():
    p = predict(inputs(security(user="nobody")))
    assert (p.prm, p.eff, p.amb) == (NONE, NONE, NONE)
    assert p.bnd == ALL  # untouched: a set-uid-root program could regain it all


# --- a launcher without CAP_SETPCAP -----------------------------------------------------------


def test_root_without_setpcap_or_nnp_is_refused():
    p = predict(
        inputs(security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"]), ROOT_NO_SETPCAP)
    )
    assert p.refused_step == "bounding_set" and p.exit_status == 125
    assert "root would regain every capability at exec" in p.refused
    assert p.prm == NO_SETPCAP  # what the refusal prevents: the root rule gives B back
    assert p.warnings == ()  # the stage stops at its refusal: nothing after it is said


def test_root_without_setpcap_with_nnp_warns():
    policy = security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True)
    p = predict(inputs(policy, ROOT_NO_SETPCAP))
    assert p.refused is None
    assert steps_of(p) == ["bounding_set", "securebits"]  # both need CAP_SETPCAP
    assert "dropping CAP_CHOWN from the bounding set" in p.warnings[0]
    assert p.bnd == NO_SETPCAP
    assert (p.prm, p.eff, p.inh, p.amb) == (BIND, BIND, BIND, BIND)  # nnp: P' &= P


@pytest.mark.parametrize("nnp", [True, False])
def test_nobody_without_setpcap_warns_of_the_bounding_set(nnp):
    policy = security(
        drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody", no_new_privs=nnp
    )
    p = predict(inputs(policy, ROOT_NO_SETPCAP))
    assert p.refused is None and steps_of(p) == ["bounding_set"]
    regain = "set-user-ID and file-capability programs it runs can regain"
    assert (regain in p.warnings[0]) is not nnp
    assert p.bnd == NO_SETPCAP
    assert (p.prm, p.eff, p.inh, p.amb) == (BIND, BIND, BIND, BIND)


def test_strict_refuses_without_setpcap():
    policy = security(drop_all_caps=True, user="nobody", no_new_privs=True, fail_on_cap_error=True)
    p = predict(inputs(policy, ROOT_NO_SETPCAP))
    assert p.refused_step == "bounding_set" and p.exit_status == 125


def test_a_kept_cap_out_of_the_launchers_bounding_set_is_a_warning():
    # uid 0's exec of the stage gives it P = B | I: what is not in B is lost for good
    launcher = Launcher(inh=NONE, prm=ALL - RAW, eff=ALL - RAW, bnd=ALL - RAW, amb=NONE)
    policy = security(drop_all_caps=True, keep_caps=["NET_RAW"], user="nobody")
    p = predict(inputs(policy, launcher))
    assert steps_of(p) == ["keep_caps"] and "CAP_NET_RAW" in p.warnings[0]
    assert sets(p) == only(NONE)


def test_root_launcher_regains_at_the_stage_exec_what_its_bounding_set_holds():
    launcher = Launcher(inh=NONE, prm=NONE, eff=NONE, bnd=ALL, amb=NONE)
    p = predict(inputs(security(drop_all_caps=True, keep_caps=["NET_RAW"]), launcher))
    assert p.warnings == () and sets(p) == only(RAW)


# --- the program's file ------------------------------------------------------------------------


def test_set_uid_root_file_gives_a_nobody_program_root():
    p = predict(inputs(security(user="nobody"), program=SETUID_ROOT))
    assert p.uids == (NOBODY, 0, 0, 0)
    assert p.prm == ALL and p.eff == ALL  # the root rule for euid 0: P' = B | I


def test_set_uid_root_after_drop_all_caps_gives_only_the_bounding_set():
    p = predict(
        inputs(
            security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody"),
            program=SETUID_ROOT,
        )
    )
    assert p.uids[1] == 0
    assert p.prm == BIND and p.eff == BIND and p.amb == NONE  # a set-uid change clears A


def test_no_new_privs_ignores_the_set_uid_bit():
    p = predict(inputs(security(user="nobody", no_new_privs=True), program=SETUID_ROOT))
    assert p.uids == (NOBODY,) * 4 and p.prm == NONE
    assert "exec of the program: no_new_privs: its set-id bits are ignored" in p.trace


def test_a_nosuid_mount_ignores_the_set_uid_bit():
    on_nosuid = ProgramFile(SETUID_ROOT.path, mode=SETUID_ROOT.mode, nosuid=True)
    p = predict(inputs(security(user="nobody"), program=on_nosuid))
    assert p.uids == (NOBODY,) * 4 and p.prm == NONE


def fcaps(caps: CapSet, effective: bool, **kw) -> ProgramFile:
    return ProgramFile(
        "/usr/bin/ping-like", caps=FileCaps(permitted=caps, effective=effective), **kw
    )


def test_file_caps_with_the_effective_bit():
    policy = security(drop_all_caps=True, keep_caps=["NET_RAW"], user="nobody")
    p = predict(inputs(policy, program=fcaps(RAW, True)))
    assert (p.prm, p.eff, p.amb, p.inh, p.bnd) == (RAW, RAW, NONE, RAW, RAW)


def test_file_caps_outside_the_bounding_set_fail_the_exec_when_effective():
    policy = security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody")
    p = predict(inputs(policy, program=fcaps(RAW, True)))
    assert p.refused_step == "exec" and p.exit_status == 126
    assert "Operation not permitted" in p.refused


def test_file_caps_without_the_effective_bit_clear_the_ambient_set():
    policy = security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody")
    p = predict(inputs(policy, program=fcaps(RAW, False)))
    assert p.refused is None
    assert (p.prm, p.eff, p.amb) == (NONE, NONE, NONE)  # B & fP is empty; A' cleared


def test_file_caps_count_not_on_a_nosuid_mount():
    policy = security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody")
    p = predict(inputs(policy, program=fcaps(RAW, True, nosuid=True)))
    assert p.refused is None and sets(p) == only(BIND)


def test_set_uid_root_with_file_caps_skips_the_root_rule_for_nobody():
    mixed = ProgramFile(
        "/usr/bin/mixed",
        mode=SETUID_ROOT.mode,
        caps=FileCaps(permitted=RAW, effective=True),
    )
    p = predict(inputs(security(user="nobody"), program=mixed))
    assert p.uids[1] == 0 and p.prm == RAW and p.eff == RAW


def test_v3_file_caps_of_another_root_count_not():
    other = ProgramFile("/x", caps=FileCaps(permitted=RAW, effective=True, version=3, rootid=1000))
    p = predict(
        inputs(
            security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody"),
            program=other,
        )
    )
    assert p.refused is None and sets(p) == only(BIND)


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12), (RAW, True, 2)),
        (bytes.fromhex("00000002") + (1 << 13).to_bytes(4, "little") + bytes(12), (RAW, False, 2)),
        (bytes.fromhex("01000003") + (1 << 13).to_bytes(4, "little") + bytes(16), (RAW, True, 3)),
    ],
    ids=["v2+ep", "v2+p", "v3+ep"],
)
def test_vfs_cap_data_is_decoded(data, want):
    caps = FileCaps.parse(data)
    assert (caps.permitted, caps.effective, caps.version) == want
    assert FileCaps.parse(data[:-1]) is None  # a size the kernel refuses


# --- securebits and launchers without root ------------------------------------------------------


def test_noroot_launcher_gives_a_root_program_nothing():
    launcher = Launcher(inh=NONE, prm=ALL, eff=ALL, bnd=ALL, amb=NONE, securebits=SECBIT_NOROOT)
    p = predict(inputs(Policy(), launcher))  # the empty policy: spawned directly
    assert (p.prm, p.eff) == (NONE, NONE) and p.bnd == ALL


def test_ambient_caps_of_an_unprivileged_launcher_pass_through():
    ids = (1000,) * 4
    launcher = Launcher(inh=BIND, prm=BIND, eff=BIND, bnd=ALL, amb=BIND, uids=ids, gids=ids)
    p = predict(inputs(security(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"]), launcher))
    # no CAP_SETPCAP: the bounding set stays, with a warning; the ambient set carries BIND
    assert steps_of(p) == ["bounding_set"]
    assert (p.prm, p.eff, p.amb, p.bnd) == (BIND, BIND, BIND, ALL)


def test_an_unprivileged_launcher_cannot_switch_user():
    ids = (1000,) * 4
    launcher = Launcher(bnd=ALL, uids=ids, gids=ids)
    p = predict(inputs(security(user="nobody"), launcher))
    assert p.refused_step == "setgroups" and p.exit_status == 125


def test_confinement_without_nnp_or_sys_admin_is_refused_by_the_model():
    policy = security(drop_all_caps=True)
    steps = StageSteps(drop_caps=True, lock_securebits=True, confine_steps=("seccomp",))
    p = predict(
        Inputs(launcher=ROOT, steps=steps, candidates=(PROGRAM,), stage=STAGE, policy=policy)
    )
    assert p.refused_step == "seccomp"


def test_a_user_namespace_gives_every_capability_there():
    ids = (1000,) * 4
    launcher = Launcher(bnd=ALL, uids=ids, gids=ids)
    steps = StageSteps(unshare=("user", "net"))
    p = predict(Inputs(launcher=launcher, steps=steps, candidates=(PROGRAM,), stage=STAGE))
    assert p.user_namespace and p.bnd == ALL and p.prm == NONE  # non-root: P' = A' = 0
    kept = StageSteps(unshare=("user", "net"), drop_caps=True, keep=BIND)
    p = predict(Inputs(launcher=launcher, steps=kept, candidates=(PROGRAM,), stage=STAGE))
    assert sets(p) == only(BIND) and p.uids == ids


# --- finding the program -----------------------------------------------------------------------


def test_not_found_is_127_and_not_executable_126():
    missing = ProgramFile("/bin/prog", error=errno.ENOENT)
    p = predict(inputs(security(no_new_privs=True), candidates=(missing,)))
    assert (p.refused_step, p.exit_status) == ("exec", 127)
    closed = ProgramFile("/usr/bin/prog", mode=stat.S_IFREG | 0o700, uid=0)
    p = predict(inputs(security(user="nobody"), candidates=(missing, closed)))
    assert (p.refused_step, p.exit_status) == ("exec", 126)


def test_the_first_executable_candidate_wins():
    missing = ProgramFile("/bin/prog", error=errno.ENOENT)
    p = predict(inputs(security(no_new_privs=True), candidates=(missing, PROGRAM)))
    assert p.program == PROGRAM.path and p.refused is None


def test_a_directory_nobody_may_not_search_is_eacces_and_the_search_goes_on():
    closed = ProgramFile(
        "/root/bin/prog", error=errno.ENOENT, dirs=((0o40755, 0, 0), (0o40700, 0, 0))
    )
    p = predict(inputs(security(user="nobody"), candidates=(closed,)))
    assert (p.refused_step, p.exit_status) == ("exec", 126)
    assert "Permission denied" in p.refused
    p = predict(inputs(security(user="nobody"), candidates=(closed, PROGRAM)))
    assert p.refused is None and p.program == PROGRAM.path
    p = predict(inputs(security(no_new_privs=True), candidates=(closed,)))  # root may search
    assert p.exit_status == 127


def test_a_file_of_no_known_format_is_enoexec():
    data = ProgramFile("/etc/hostname", known_format=False)
    p = predict(inputs(security(no_new_privs=True), candidates=(data,)))
    assert (p.refused_step, p.exit_status) == ("exec", 126)
    assert "Exec format error" in p.refused


# --- #! scripts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (b"#!/bin/sh\n", (b"/bin/sh", None)),
        (b"#!  /usr/bin/env   python3 -u  \nrest", (b"/usr/bin/env", b"python3 -u")),
        (b"#!/bin/echo", (b"/bin/echo", None)),  # no newline: the file's end (NUL) ends it
        (b"#!\t/bin/sh\t-e\n", (b"/bin/sh", b"-e")),
        (b"#!\n", None),
        (b"#!   \n", None),
        (b"#!/bin/" + b"a" * 300, None),  # the name may have been cut at 255 bytes: ENOEXEC
        (b"\x7fELF", None),
    ],
)
def test_shebang_lines_are_read_as_binfmt_script_reads_them(line, want):
    assert parse_shebang(line) == want


def script(path: str, interpreter: ProgramFile | None, mode: int = 0o100755) -> ProgramFile:
    return ProgramFile(path, mode=mode, script=True, interpreter=interpreter)


def test_a_script_gets_the_set_uid_root_of_its_interpreter():
    p = predict(inputs(security(user="nobody"), program=script("/srv/s", SETUID_ROOT)))
    assert p.uids == (NOBODY, 0, 0, 0) and p.eff == ALL and p.program == "/srv/s"
    assert any("#! script" in line for line in p.trace)


def test_the_set_uid_bit_of_a_script_counts_not():
    own = script("/srv/s", PROGRAM, mode=stat.S_IFREG | stat.S_ISUID | 0o755)
    p = predict(inputs(security(user="nobody"), program=own))
    assert p.uids == (NOBODY,) * 4 and p.eff == NONE


def test_the_interpreter_s_file_caps_and_mount_count():
    raw = ProgramFile("/srv/raw", caps=FileCaps(permitted=RAW, effective=True))
    p = predict(inputs(security(user="nobody"), program=script("/srv/s", raw)))
    assert p.prm == RAW and p.eff == RAW
    on_nosuid = ProgramFile(SETUID_ROOT.path, mode=SETUID_ROOT.mode, nosuid=True)
    p = predict(inputs(security(user="nobody"), program=script("/srv/s", on_nosuid)))
    assert p.uids == (NOBODY,) * 4
    # the script's own nosuid mount does not matter
    on_nosuid_script = ProgramFile("/srv/s", nosuid=True, script=True, interpreter=SETUID_ROOT)
    p = predict(inputs(security(user="nobody"), program=on_nosuid_script))
    assert p.uids == (NOBODY, 0, 0, 0)


@pytest.mark.parametrize(
    ("interpreter", "status", "words"),
    [
        (ProgramFile("/no/such", error=errno.ENOENT), 127, "No such file"),
        (ProgramFile("/srv/plain", mode=stat.S_IFREG | 0o644), 126, "Permission denied"),
        (ProgramFile("/srv/data", known_format=False), 126, "Exec format error"),
    ],
)
def test_an_interpreter_that_cannot_run_fails_the_exec(interpreter, status, words):
    p = predict(inputs(security(user="nobody"), program=script("/srv/s", interpreter)))
    assert (p.refused_step, p.exit_status) == ("exec", status) and words in p.refused


def test_a_missing_interpreter_lets_the_path_search_go_on():
    broken = script("/usr/local/bin/prog", ProgramFile("/no/such", error=errno.ENOENT))
    p = predict(inputs(security(no_new_privs=True), candidates=(broken, PROGRAM)))
    assert p.refused is None and p.program == PROGRAM.path


@pytest.mark.parametrize(("scripts", "status"), [(5, None), (6, 126)])
def test_five_scripts_deep_is_the_kernel_s_limit(scripts, status):
    f = SETUID_ROOT
    for level in range(scripts):
        f = script(f"/srv/s{level}", f)
    p = predict(inputs(security(user="nobody"), program=f))
    assert p.exit_status == status
    if status is None:
        assert p.uids[1] == 0
    else:
        assert "Too many levels" in p.refused
    assert predict(inputs(security(), program=script("/srv/deep", None))).exit_status == 126


# --- a verified (traced) exec ------------------------------------------------------------------

NO_PTRACE = Launcher(
    prm=ALL - CapSet.of("SYS_PTRACE"),
    eff=ALL - CapSet.of("SYS_PTRACE"),
    bnd=ALL - CapSet.of("SYS_PTRACE"),
    cap_last_cap=LAST,
)


def test_a_launcher_without_sys_ptrace_withholds_the_set_uid_gain():
    p = predict(inputs(security(user="nobody"), NO_PTRACE, SETUID_ROOT, verify=True))
    assert p.uids == (NOBODY,) * 4 and p.prm == NONE and p.refused is None
    raw = ProgramFile("/srv/raw", caps=FileCaps(permitted=RAW, effective=True))
    p = predict(inputs(security(user="nobody"), NO_PTRACE, raw, verify=True))
    assert p.prm == NONE and p.eff == NONE


def test_a_traced_exec_keeps_the_set_uid_euid_of_a_process_with_cap_setuid():
    keep = CapSet.of("SETUID")
    policy = security(drop_all_caps=True, keep_caps=["SETUID"], no_new_privs=False)
    stage = StageSteps(drop_caps=True, keep=keep)
    someone = ProgramFile(SETUID_ROOT.path, mode=SETUID_ROOT.mode, uid=1000)
    p = predict(
        Inputs(launcher=NO_PTRACE, steps=stage, candidates=(someone,), stage=STAGE,
               policy=policy, verify=True)
    )  # fmt: skip
    assert p.uids[1] == 1000 and p.prm == keep


def test_verify_refuses_a_program_beyond_its_policy():
    p = predict(inputs(security(user="nobody"), ROOT, SETUID_ROOT, verify=True))
    assert (p.refused_step, p.exit_status) == ("verify", 125)
    assert p.refused.startswith("verify: Uid is 65534 0 0 0, not the policy's 65534")
    p = predict(inputs(security(user="nobody"), ROOT, PROGRAM, verify=True))
    assert p.refused is None


# --- a user namespace uid 0 may not map -------------------------------------------------------


def test_uid_0_without_setfcap_cannot_map_itself_in_a_user_namespace():
    no_setfcap = ALL - CapSet.of("SETFCAP", "SYS_ADMIN")
    launcher = Launcher(prm=no_setfcap, eff=no_setfcap, bnd=no_setfcap, cap_last_cap=LAST)
    steps = StageSteps(unshare=("user", "net"), nnp=True)
    p = predict(Inputs(launcher=launcher, steps=steps, candidates=(PROGRAM,), stage=STAGE))
    assert (p.refused_step, p.exit_status) == ("userns", 125)
    assert "this host does not let the launcher create a user namespace" in p.refused
    with_setfcap = no_setfcap | CapSet.of("SETFCAP")
    launcher = Launcher(prm=with_setfcap, eff=with_setfcap, bnd=with_setfcap, cap_last_cap=LAST)
    p = predict(Inputs(launcher=launcher, steps=steps, candidates=(PROGRAM,), stage=STAGE))
    assert p.refused is None and p.user_namespace
