"""The capabilities(7) model of hardexec.predict, on crafted inputs: launchers with and without
uid 0, CAP_SETPCAP, no_new_privs and SECBIT_NOROOT; set-user-ID-root files, file capabilities
with and without the effective bit, nosuid mounts. The host tier holds the same model against
what real programs read of themselves."""

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
