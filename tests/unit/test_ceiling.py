"""A worker's ceiling: a submitted task and policy may only narrow it (hardexec.ceiling).

Each rule is checked both ways: a request within the ceiling gives the effective value asked
(or the ceiling's, for silence), a request above it is refused with a line naming the field,
what was asked and what the ceiling allows."""

import os
import pickle

import pytest

from hardexec import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig
from hardexec._record import fields
from hardexec.ceiling import FIELDS, narrow
from hardexec.confine import Confinement, PathRule, SyscallFilter
from hardexec.confine.seccomp import compile_filter
from hardexec.confine.syscalls import table
from hardexec.errors import CeilingError, PolicyError
from hardexec.policy import RLIMIT_FIELDS
from hardexec.policyfile import PROFILES, PolicyFile, RunSettings, from_dict, merge
from hardexec.runner.spec import TaskSpec
from hardexec.serial import policy_from_dict, policy_to_dict

SPEC = TaskSpec.command(["/bin/true"])


def ceiling(name="strict", **extra):
    """A built-in profile with ``extra`` (plain form, as a policy file says it) merged over it."""
    return from_dict(merge(PROFILES[name], extra), f"ceiling {name}")


def refused(top, policy=None, spec=SPEC):
    """The violations ``narrow`` names (it must refuse)."""
    with pytest.raises(CeilingError) as caught:
        narrow(top, spec, policy)
    err = caught.value
    assert str(err) == CeilingError.PREFIX + "; ".join(err.violations)
    return err.violations


def effective(top, policy=None, spec=SPEC):
    return narrow(top, spec, policy)[1]


def confined(**values):
    return Policy(confinement=Confinement(**values))


# --- the list of fields --------------------------------------------------------------------


def test_every_field_of_every_record_has_a_rule():
    from hardexec.policy import Identity  # noqa: F401  (derived: SecurityConfig.identity)

    records = {
        Policy,
        SecurityConfig,
        RlimitConfig,
        CgroupLimits,
        CpuMax,
        Confinement,
        SyscallFilter,
        PathRule,
        RunSettings,
        TaskSpec,
    }
    assert set(FIELDS) == records
    for record in records:
        assert set(FIELDS[record]) == {item.name for item in fields(record)}, record.__name__


# --- whole policies ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["strict", "service", "none"])
def test_an_empty_submission_gets_the_ceiling(name):
    top = ceiling(name)
    task, policy = narrow(top, SPEC)
    assert policy == top.policy
    assert task.env_policy == top.run.env_policy
    assert narrow(top, SPEC, Policy()) == (task, policy)


WORKER = ceiling(
    "service",
    security={"user": "nobody"},
    rlimits={"max_open_files": 1024, "cpu_seconds": 60},
    cgroups={"memory": 256 << 20, "pids": 64, "cpu": {"quota": 50_000, "period": 100_000}},
    confinement={
        "fs": [{"path": "/usr", "access": "rx"}, {"path": "/srv/jobs", "access": "rw"}],
        "fs_dependencies": False,
        "tcp_connect": [443, 5432],
        "syscalls": {"default": True, "deny": ["@mount:kill"]},
        "umask": "022",
    },
    run={"env_policy": ["LANG", "TZ"], "env": {"WORKER": "w1"}, "timeout": 600.0},
)


def test_an_empty_submission_under_a_full_ceiling_gets_it_all():
    task, policy = narrow(WORKER, SPEC)
    assert policy == WORKER.policy
    assert policy.security.identity.uid == 65534
    assert (task.env_policy, task.env, task.timeout) == (("LANG", "TZ"), (("WORKER", "w1"),), 600)


# Every field of a policy away from its default (but cgroup_parent: see below).
FULL = Policy(
    security=SecurityConfig(
        drop_all_caps=True,
        keep_caps=["NET_RAW"],
        no_new_privs=True,
        fail_on_cap_error=True,
        user="nobody",
        group="nogroup",
        supplementary_groups=["nogroup"],
    ),
    rlimits=RlimitConfig(
        max_open_files=64,
        max_file_size_bytes=1 << 20,
        disable_core_dumps=True,
        address_space=1 << 30,
        cpu_seconds=5,
        max_processes=50,
        stack=8 << 20,
    ),
    cgroups=CgroupLimits(
        cpu=CpuMax(quota=50_000, period=200_000),
        memory=64 << 20,
        pids=10,
        fail_on_error=True,
        keep_at_exit=True,
    ),
    die_with_parent=True,
    confinement=Confinement(
        fs=[PathRule("/usr", "rx"), PathRule("/tmp", "rw")],
        fs_dependencies=False,
        tcp_bind=[8080],
        tcp_connect=[443],
        syscalls=SyscallFilter(allow=["@basic-io", "socket"], deny=["ptrace:EACCES"]),
        namespaces=["net", "uts"],
        hostname="box",
        umask=0o077,
        best_effort=True,
    ),
)


def test_a_ceiling_without_limits_accepts_anything():
    spec = TaskSpec.command(
        ["/bin/true"], env={"A": "1"}, env_policy=("HOME",), timeout=10**6, kill_after=60
    )
    assert narrow(PolicyFile(), spec, FULL) == (spec, FULL)
    assert narrow(ceiling("none"), spec, FULL) == (spec, FULL)


def test_the_effective_policy_round_trips_through_serial():
    asked = Policy(
        security=SecurityConfig(supplementary_groups=[]),
        rlimits=RlimitConfig(max_open_files=256),
        cgroups=CgroupLimits(memory=64 << 20, cpu=CpuMax.from_fraction(0.25)),
        confinement=Confinement(
            fs=[PathRule("/srv/jobs/7", "rw")],
            fs_dependencies=False,
            tcp_connect=[443],
            syscalls=SyscallFilter(deny=["@debug:EACCES", "socket:EACCES"]),
            namespaces=["pid"],
            umask=0o077,
        ),
    )
    policy = effective(WORKER, asked)
    assert policy != WORKER.policy
    assert policy_from_dict(policy_to_dict(policy)) == policy


def test_several_violations_are_named_at_once_in_field_order():
    asked = Policy(
        security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_ADMIN"], user="root"),
        rlimits=RlimitConfig(max_open_files=4096),
        cgroups=CgroupLimits(pids=1000),
        confinement=Confinement(best_effort=True),
    )
    spec = TaskSpec.command(["/bin/true"], timeout=3600, env_policy=("AWS_SECRET",))
    assert refused(WORKER, asked, spec) == (
        "security.keep_caps: NET_ADMIN is not kept by this worker's ceiling (it keeps "
        "NET_BIND_SERVICE)",
        "security.user: 'root' (uid 0), the ceiling runs tasks as 'nobody' (uid 65534)",
        "rlimits.max_open_files: 4096 is above the ceiling's 1024",
        "cgroups.pids: 1000 is above the ceiling's 64",
        "confinement.best_effort: True, but the ceiling's confinement is enforced (it fails "
        "closed)",
        "task.timeout: 3600 s is above the ceiling's 600 s",
        "task.env_policy: AWS_SECRET is not let through by the ceiling (it lets through only "
        "LANG, TZ)",
    )


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="ceiling: expected a PolicyFile"):
        narrow(Policy(), SPEC)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spec: expected a TaskSpec"):
        narrow(WORKER, ["/bin/true"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy: expected a Policy or None"):
        narrow(WORKER, SPEC, {"version": 1})  # type: ignore[arg-type]


# --- the error -----------------------------------------------------------------------------


def test_ceiling_error_survives_pickling_and_a_rebuild_from_its_args():
    with pytest.raises(CeilingError) as caught:
        narrow(WORKER, SPEC, Policy(rlimits=RlimitConfig(max_open_files=4096, cpu_seconds=61)))
    err = caught.value
    assert isinstance(err, PolicyError)
    assert isinstance(err, ValueError)
    assert len(err.violations) == 2
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.violations) == (CeilingError, str(err), err.violations)
    rebuilt = type(err)(*err.args)  # what Celery does on the client's side
    assert (str(rebuilt), rebuilt.violations) == (str(err), err.violations)


def test_ceiling_error_from_a_message_of_its_own():
    err = CeilingError("no tasks today")
    assert (str(err), err.violations) == ("no tasks today", ("no tasks today",))
    err = CeilingError(CeilingError.PREFIX + "a: 1; b: 2", violations=("a: 1; b: 2",))
    assert pickle.loads(pickle.dumps(err)).violations == ("a: 1; b: 2",)


# --- security ------------------------------------------------------------------------------


def test_keep_caps_within_the_ceilings_are_kept():
    asked = Policy(security=SecurityConfig(drop_all_caps=True))
    assert effective(WORKER, asked).security.keep_caps.names() == []  # fewer: none at all
    asked = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"]))
    assert effective(WORKER, asked).security.keep_caps.names() == ["NET_BIND_SERVICE"]


def test_keep_caps_beyond_the_ceilings_are_refused():
    asked = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN", "CHOWN"]))
    assert refused(ceiling("strict"), asked) == (
        "security.keep_caps: CHOWN, SYS_ADMIN are not kept by this worker's ceiling (it keeps "
        "none)",
    )


def test_a_task_that_leaves_capabilities_alone_gets_the_ceilings():
    security = effective(WORKER, Policy(security=SecurityConfig(no_new_privs=True))).security
    assert (security.drop_all_caps, security.keep_caps.names()) == (True, ["NET_BIND_SERVICE"])


def test_a_ceiling_that_keeps_capabilities_takes_the_tasks():
    asked = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"]))
    security = effective(ceiling("none"), asked).security
    assert (security.drop_all_caps, security.keep_caps.names()) == (True, ["SYS_ADMIN"])


@pytest.mark.parametrize("name", ["no_new_privs", "fail_on_cap_error"])
def test_flags_of_security_are_either_ones(name):
    on = SecurityConfig(**{name: True})
    top = PolicyFile(policy=Policy(security=on))
    assert getattr(effective(top).security, name) is True
    assert getattr(effective(PolicyFile(), Policy(security=on)).security, name) is True
    assert getattr(effective(PolicyFile()).security, name) is False


@pytest.mark.parametrize("user", [None, "nobody", 65534, "65534"])
def test_the_ceilings_user_is_the_only_one(user):
    security = effective(WORKER, Policy(security=SecurityConfig(user=user))).security
    assert security.user == "nobody"
    assert security.identity.uid == 65534
    assert security.identity.gid == 65534


def test_another_user_than_the_ceilings_is_refused():
    assert refused(WORKER, Policy(security=SecurityConfig(user=0))) == (
        "security.user: 0 (uid 0), the ceiling runs tasks as 'nobody' (uid 65534)",
    )


def test_a_ceiling_without_a_user_takes_the_tasks():
    security = effective(ceiling("strict"), Policy(security=SecurityConfig(user="nobody")))
    assert (security.security.user, security.security.identity.uid) == ("nobody", 65534)


def test_the_ceilings_users_primary_group_bounds_the_group():
    assert effective(WORKER, Policy(security=SecurityConfig(group="nogroup"))).security == (
        WORKER.policy.security
    )
    assert refused(WORKER, Policy(security=SecurityConfig(group="root"))) == (
        "security.group: 'root' (gid 0), the ceiling runs tasks with gid 65534 (the primary "
        "group of 'nobody')",
    )
    top = ceiling("strict", security={"group": "nogroup"})
    assert refused(top, Policy(security=SecurityConfig(group=0))) == (
        "security.group: 0 (gid 0), the ceiling runs tasks with group 'nogroup' (gid 65534)",
    )


def test_supplementary_groups_within_the_ceilings_are_kept():
    policy = effective(WORKER, Policy(security=SecurityConfig(supplementary_groups=[])))
    assert policy.security.identity.groups == ()
    policy = effective(WORKER, Policy(security=SecurityConfig(supplementary_groups=[65534])))
    assert policy.security.identity.groups == (65534,)


def test_supplementary_groups_beyond_the_ceilings_are_refused():
    asked = Policy(security=SecurityConfig(supplementary_groups=["nogroup", "sudo", 0]))
    assert refused(WORKER, asked) == (
        "security.supplementary_groups: 'sudo' (gid 27), gid 0 are not among the ceiling's "
        "supplementary groups (gid 65534)",
    )


def test_a_ceiling_without_supplementary_groups_refuses_any():
    top = ceiling("strict", security={"user": "nobody", "supplementary_groups": []})
    assert refused(top, Policy(security=SecurityConfig(supplementary_groups=["nogroup"]))) == (
        "security.supplementary_groups: 'nogroup' (gid 65534) is not among the ceiling's "
        "supplementary groups (none)",
    )


def test_a_ceilings_group_alone_keeps_a_tasks_user_from_bringing_its_groups():
    # The ceiling sets the group (so no supplementary groups); the task's user would bring its
    # own from the group database if the ceiling did not say "none" explicitly.
    top = ceiling("strict", security={"group": "nogroup"})
    identity = effective(top, Policy(security=SecurityConfig(user="nobody"))).security.identity
    assert (identity.uid, identity.gid, identity.groups) == (65534, 65534, ())


# --- rlimits -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RLIMIT_FIELDS))
def test_each_rlimit_is_the_lower(name):
    top = PolicyFile(policy=Policy(rlimits=RlimitConfig(**{name: 100})))
    assert getattr(effective(top, Policy(rlimits=RlimitConfig(**{name: 50}))).rlimits, name) == 50
    assert getattr(effective(top).rlimits, name) == 100
    assert (
        getattr(effective(PolicyFile(), Policy(rlimits=RlimitConfig(**{name: 7}))).rlimits, name)
        == 7
    )
    assert refused(top, Policy(rlimits=RlimitConfig(**{name: 101}))) == (
        f"rlimits.{name}: 101 is above the ceiling's 100",
    )


def test_core_dumps_are_disabled_by_either():
    assert effective(ceiling("strict")).rlimits.disable_core_dumps is True
    asked = Policy(rlimits=RlimitConfig(disable_core_dumps=True))
    assert effective(ceiling("none"), asked).rlimits.disable_core_dumps is True
    assert effective(ceiling("none")).rlimits.disable_core_dumps is False


# --- cgroups -------------------------------------------------------------------------------


def test_cgroup_limits_within_the_ceilings_are_kept():
    asked = Policy(cgroups=CgroupLimits(memory=1 << 20, pids=8, cpu=CpuMax(25_000, 100_000)))
    assert effective(WORKER, asked).cgroups == CgroupLimits(
        memory=1 << 20, pids=8, cpu=CpuMax(25_000, 100_000), fail_on_error=True
    )


def test_a_task_without_a_group_gets_the_ceilings():
    assert effective(WORKER).cgroups == WORKER.policy.cgroups
    assert effective(WORKER, Policy(cgroups=CgroupLimits())).cgroups == WORKER.policy.cgroups


def test_cgroup_limits_beyond_the_ceilings_are_refused():
    asked = Policy(cgroups=CgroupLimits(memory=1 << 30, pids=65, keep_at_exit=True))
    assert refused(WORKER, asked) == (
        "cgroups.keep_at_exit: True, but the worker owns its groups (they end with their "
        "processes when it exits)",
        "cgroups.memory: 1073741824 is above the ceiling's 268435456",
        "cgroups.pids: 65 is above the ceiling's 64",
    )


def test_cpu_shares_are_compared_as_quota_over_period():
    # 0.5 CPU as 100 000 µs per 200 000 µs: the same share as the ceiling's 50 000/100 000.
    asked = Policy(cgroups=CgroupLimits(cpu=CpuMax(100_000, 200_000)))
    assert effective(WORKER, asked).cgroups.cpu == CpuMax(100_000, 200_000)
    asked = Policy(cgroups=CgroupLimits(cpu=CpuMax(100_001, 200_000)))
    assert refused(WORKER, asked) == (
        "cgroups.cpu: 0.500005 CPUs (100001/200000 µs) is above the ceiling's 0.5 CPUs "
        "(50000/100000 µs)",
    )
    assert refused(WORKER, Policy(cgroups=CgroupLimits(cpu=CpuMax()))) == (
        "cgroups.cpu: no limit is above the ceiling's 0.5 CPUs (50000/100000 µs)",
    )


def test_a_ceiling_without_a_cpu_limit_takes_the_tasks():
    top = ceiling("strict", cgroups={"cpu": {"period": 100_000}})
    asked = Policy(cgroups=CgroupLimits(cpu=CpuMax.from_fraction(4)))
    assert effective(top, asked).cgroups.cpu == CpuMax(400_000, 100_000)


def test_fail_on_error_is_either_ones():
    top = ceiling("strict", cgroups={"fail_on_error": False})
    assert effective(top).cgroups.fail_on_error is False
    asked = Policy(cgroups=CgroupLimits(fail_on_error=True))
    assert effective(top, asked).cgroups.fail_on_error is True


def test_a_ceiling_without_a_group_takes_the_tasks_group_as_asked():
    asked = CgroupLimits(memory=1 << 40, keep_at_exit=True)
    assert effective(ceiling("strict"), Policy(cgroups=asked)).cgroups == asked


def test_the_cgroup_parent_is_the_ceilings(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.controllers").write_text("")
    top = PolicyFile(policy=Policy(cgroups=CgroupLimits(), cgroup_parent=tmp_path / "a"))
    assert effective(top).cgroup_parent == str(tmp_path / "a")
    same = Policy(cgroups=CgroupLimits(), cgroup_parent=tmp_path / "a")
    assert effective(top, same).cgroup_parent == str(tmp_path / "a")
    other = Policy(cgroups=CgroupLimits(), cgroup_parent=tmp_path / "b")
    assert refused(top, other) == (
        f"cgroup_parent: '{tmp_path}/b', but the worker chooses where its groups are made "
        f"('{tmp_path}/a')",
    )
    assert refused(PolicyFile(), other) == (
        f"cgroup_parent: '{tmp_path}/b', but the worker chooses where its groups are made "
        "(the group the worker runs in)",
    )


def test_die_with_parent_is_either_ones():
    top = PolicyFile(policy=Policy(die_with_parent=True))
    assert effective(top).die_with_parent is True
    assert effective(PolicyFile(), Policy(die_with_parent=True)).die_with_parent is True
    assert effective(PolicyFile()).die_with_parent is False


# --- confinement ---------------------------------------------------------------------------


def test_confinement_of_one_side_only_is_that_sides():
    asked = confined(namespaces=["pid"])
    assert effective(PolicyFile(), asked).confinement == asked.confinement
    assert effective(WORKER).confinement == WORKER.policy.confinement


def test_namespaces_are_both_sets():
    got = effective(ceiling("strict"), confined(namespaces=["pid", "ipc"])).confinement
    assert got.namespaces == ("net", "pid", "ipc")


def test_the_ceilings_hostname_is_the_only_one():
    top = ceiling("strict", confinement={"namespaces": ["uts"], "hostname": "worker"})
    asked = confined(namespaces=["uts"], hostname="worker")
    assert effective(top, asked).confinement.hostname == "worker"
    assert effective(top, confined(umask=0)).confinement.hostname == "worker"
    assert refused(top, confined(namespaces=["uts"], hostname="db1")) == (
        "confinement.hostname: 'db1', the ceiling names the host 'worker'",
    )
    got = effective(ceiling("strict"), asked).confinement
    assert (got.hostname, got.namespaces) == ("worker", ("net", "uts"))


def test_umasks_are_ored():
    assert effective(WORKER, confined(umask=0o077)).confinement.umask == 0o077
    assert effective(WORKER, confined(umask=0o007)).confinement.umask == 0o027
    assert effective(WORKER, confined(namespaces=["pid"])).confinement.umask == 0o022
    assert effective(ceiling("strict"), confined(umask=0o007)).confinement.umask == 0o007


def test_best_effort_needs_both():
    top = ceiling("strict", confinement={"best_effort": True})
    assert effective(top).confinement.best_effort is True
    assert effective(top, confined(best_effort=True)).confinement.best_effort is True
    # A task's own confinement that does not ask for best effort is enforced, ceiling and all.
    assert effective(top, confined(umask=0o077)).confinement.best_effort is False
    assert refused(ceiling("strict"), confined(best_effort=True)) == (
        "confinement.best_effort: True, but the ceiling's confinement is enforced (it fails "
        "closed)",
    )


def test_path_rules_at_or_beneath_the_ceilings_are_the_ones_enforced():
    asked = confined(
        fs=[PathRule("/srv/jobs/7", "rw"), PathRule("/usr/bin", "ro"), PathRule("/usr", "rx")],
        fs_dependencies=False,
    )
    got = effective(WORKER, asked).confinement
    assert [(r.path, r.access) for r in got.fs] == [
        ("/srv/jobs/7", "rw"),
        ("/usr/bin", "ro"),
        ("/usr", "rx"),
    ]
    assert got.fs_dependencies is False


def test_path_rules_beyond_the_ceilings_are_refused():
    asked = confined(
        fs=[
            PathRule("/srv/jobsx", "ro"),  # a sibling with the same prefix is not beneath
            PathRule("/srv", "ro"),  # above a rule is not beneath it
            PathRule("/usr/lib", "rw"),  # rw is not within rx
            PathRule("/srv/jobs/7", "rx"),  # nor rx within rw
            PathRule("/srv/jobs/../../etc", "ro"),
        ],
        fs_dependencies=False,
    )
    assert refused(WORKER, asked) == (
        "confinement.fs[0]: '/srv/jobsx' (ro) is beyond the ceiling's path rules (no ceiling "
        "rule covers it)",
        "confinement.fs[1]: '/srv' (ro) is beyond the ceiling's path rules (no ceiling rule "
        "covers it)",
        "confinement.fs[2]: '/usr/lib' (rw) is beyond the ceiling's path rules (the ceiling "
        "allows rx there)",
        "confinement.fs[3]: '/srv/jobs/7' (rx) is beyond the ceiling's path rules (the ceiling "
        "allows rw there)",
        "confinement.fs[4]: '/srv/jobs/../../etc' (ro) has a '..' part; paths are compared as "
        "written under a ceiling, so name the directory itself",
    )


def test_overlapping_ceiling_rules_add_up_as_landlocks_do():
    top = ceiling(
        "strict",
        confinement={
            "fs": [{"path": "/srv", "access": "rx"}, {"path": "/srv/www", "access": "rw"}]
        },
    )
    for access in ("ro", "rx", "rw"):
        asked = confined(fs=[PathRule("/srv/www/site/", access)])
        assert effective(top, asked).confinement.fs == (PathRule("/srv/www/site/", access),)
    # rx and rw together still lack making device nodes: rwx is more.
    assert refused(top, confined(fs=[PathRule("/srv/www/site", "rwx")])) == (
        "confinement.fs[0]: '/srv/www/site' (rwx) is beyond the ceiling's path rules (the "
        "ceiling allows rw+rx there)",
    )


def test_a_task_without_path_rules_gets_the_ceilings():
    got = effective(WORKER, confined(umask=0o077)).confinement
    assert (got.fs, got.fs_dependencies) == (WORKER.policy.confinement.fs, False)


def test_a_ceiling_without_path_rules_takes_the_tasks():
    asked = confined(fs=[PathRule("/etc", "rwx")])
    got = effective(ceiling("strict"), asked).confinement
    assert (got.fs, got.fs_dependencies) == (asked.confinement.fs, True)


def test_fs_dependencies_under_a_ceiling_without_them_are_refused():
    asked = confined(fs=[PathRule("/srv/jobs/7", "rw")])  # fs_dependencies defaults to True
    assert refused(WORKER, asked) == (
        "confinement.fs_dependencies: True adds the program's own files beyond the path rules, "
        "and the ceiling does not (set fs_dependencies=False and give rules for them)",
    )
    top = ceiling("strict", confinement={"fs": [{"path": "/srv", "access": "rwx"}]})
    assert effective(top, asked).confinement.fs_dependencies is True
    asked = confined(fs=[PathRule("/srv/x", "rw")], fs_dependencies=False)
    assert effective(top, asked).confinement.fs_dependencies is False


def test_tcp_ports_within_the_ceilings_are_kept():
    got = effective(WORKER, confined(tcp_connect=[443])).confinement
    assert (got.tcp_bind, got.tcp_connect) == ((), (443,))
    got = effective(WORKER, confined(umask=0)).confinement
    assert (got.tcp_bind, got.tcp_connect) == ((), (443, 5432))
    got = effective(ceiling("strict"), confined(tcp_bind=[8080])).confinement
    assert (got.tcp_bind, got.tcp_connect) == ((8080,), ())


def test_tcp_ports_beyond_the_ceilings_are_refused():
    # The ceiling's connect list makes its absent bind list mean "no port".
    assert refused(WORKER, confined(tcp_bind=[80, 8080], tcp_connect=[22, 443])) == (
        "confinement.tcp_bind: port 80, 8080 are not among the ceiling's (none)",
        "confinement.tcp_connect: port 22 is not among the ceiling's (443, 5432)",
    )


def verdicts(f):
    """syscall name -> what the compiled filter answers it (denied calls only)."""
    names = {nr: name for name, nr in table().items()}
    return {names[nr]: v for nr, v in compile_filter(f, notify=False).verdicts.items()}


def test_deny_lists_add_up_and_the_ceilings_action_wins():
    top = ceiling(
        "strict", confinement={"syscalls": {"default": True, "deny": ["@mount:kill", "@aio"]}}
    )
    asked = SyscallFilter(
        deny=["@debug:EACCES", "ptrace:kill", "mount:ENOSYS", "@process:EACCES", "socket"]
    )
    got = effective(top, Policy(confinement=Confinement(syscalls=asked))).confinement.syscalls
    mine, theirs, result = (
        verdicts(top.policy.confinement.syscalls),
        verdicts(asked),
        verdicts(got),
    )
    for name, verdict in mine.items():
        if name != "clone":  # argument rules: the task's whole-call deny of clone is stricter
            assert result[name] == verdict, name
    assert set(theirs) <= set(result)
    assert result["socket"] == theirs["socket"]
    assert (result["ptrace"], result["mount"], result["clone3"]) == (
        mine["ptrace"],
        mine["mount"],
        mine["clone3"],
    )
    assert got.default is True


def test_a_tasks_default_deny_list_is_added():
    top = ceiling("none", confinement={"syscalls": {"deny": ["ptrace:kill"]}})
    got = effective(top, confined(syscalls=SyscallFilter(default=True))).confinement.syscalls
    assert (got.default, got.deny) == (True, ("ptrace:kill",))
    assert verdicts(got)["ptrace"].kill


def test_an_allow_list_within_the_ceilings_is_the_one_enforced():
    top = ceiling(
        "none", confinement={"syscalls": {"allow": ["@basic-io", "@file-system", "@network"]}}
    )
    asked = SyscallFilter(allow=["@basic-io", "openat", "socket", "getpid"])  # getpid: @default
    got = effective(top, confined(syscalls=asked)).confinement.syscalls
    assert got.allow == asked.allow
    assert effective(top, confined(umask=0)).confinement.syscalls == (
        top.policy.confinement.syscalls
    )
    deny_only = SyscallFilter(deny=["sendmmsg:EACCES"])
    got = effective(top, confined(syscalls=deny_only)).confinement.syscalls
    assert (got.allow, got.deny) == (top.policy.confinement.syscalls.allow, deny_only.deny)


def test_an_allow_list_beyond_the_ceilings_is_refused():
    top = ceiling("none", confinement={"syscalls": {"allow": ["@basic-io", "openat"]}})
    asked = SyscallFilter(allow=["@basic-io", "ptrace", "@network", "openat"])
    assert refused(top, confined(syscalls=asked)) == (
        "confinement.syscalls.allow: ptrace, @network (accept, accept4, bind, ...) are beyond "
        "the ceiling's allow-list",
    )


def test_an_allow_list_under_a_deny_list_ceiling_keeps_the_ceilings_denies():
    asked = SyscallFilter(allow=["@basic-io", "@process", "@debug"])
    got = effective(ceiling("strict"), confined(syscalls=asked)).confinement.syscalls
    assert (got.allow, got.default) == (asked.allow, True)
    assert "ptrace" in verdicts(got)  # the ceiling's default deny-list still refuses it


# --- the task ------------------------------------------------------------------------------


def task(top, **values):
    return narrow(top, TaskSpec.command(["/bin/true"], **values))[0]


def test_the_timeout_is_the_lower():
    assert task(WORKER).timeout == 600
    assert task(WORKER, timeout=30).timeout == 30
    assert task(ceiling("none"), timeout=10**6).timeout == 10**6
    assert refused(WORKER, spec=TaskSpec.command(["/bin/true"], timeout=601)) == (
        "task.timeout: 601 s is above the ceiling's 600 s",
    )


def test_kill_after_is_bounded_by_the_ceilings():
    top = ceiling("strict", run={"timeout": 60.0, "kill_after": 2.0})
    assert task(top).kill_after == 2.0  # the default (5 s) asks for nothing
    assert task(top, kill_after=1).kill_after == 1
    assert refused(top, spec=TaskSpec.command(["/bin/true"], kill_after=30)) == (
        "task.kill_after: 30 s is above the ceiling's 2 s",
    )
    # A ceiling with a timeout and no kill_after means a policy file's 5 s.
    assert refused(WORKER, spec=TaskSpec.command(["/bin/true"], kill_after=30)) == (
        "task.kill_after: 30 s is above the ceiling's 5 s",
    )
    assert task(WORKER, kill_after=0).kill_after == 0
    assert task(ceiling("strict"), kill_after=30).kill_after == 30  # no timeout, no bound


def test_env_policy_inherit_asks_for_nothing():
    assert task(ceiling("strict")).env_policy == "clear"
    assert task(WORKER).env_policy == ("LANG", "TZ")
    assert task(ceiling("none")).env_policy == "inherit"


def test_env_policy_within_the_ceilings_is_kept():
    assert task(WORKER, env_policy=("TZ",)).env_policy == ("TZ",)
    assert task(WORKER, env_policy="clear").env_policy == "clear"
    assert task(ceiling("strict"), env_policy=()).env_policy == ()
    assert task(ceiling("none"), env_policy=("HOME",)).env_policy == ("HOME",)


def test_env_policy_beyond_the_ceilings_is_refused():
    spec = TaskSpec.command(["/bin/true"], env_policy=("HOME", "BROKER_URL"))
    assert refused(ceiling("strict"), spec=spec) == (
        "task.env_policy: HOME, BROKER_URL are not let through by the ceiling (it clears the "
        "environment)",
    )
    assert refused(WORKER, spec=TaskSpec.command(["/bin/true"], env_policy=("LANG", "HOME"))) == (
        "task.env_policy: HOME is not let through by the ceiling (it lets through only LANG, TZ)",
    )


def test_the_ceilings_variables_are_set_over_the_tasks():
    got = task(WORKER, env={"WORKER": "mine", "A": "1"})
    assert dict(got.env) == {"WORKER": "w1", "A": "1"}


def test_the_rest_of_the_task_is_passed_through():
    spec = TaskSpec.script(
        "sh",
        "echo $1",
        args=["x"],
        cwd="/tmp",
        input=b"in",
        drain_timeout=1,
        retries=2,
        backoff=0.1,
        fail_on_non_zero=True,
        name="job",
        max_script_bytes=100,
    )
    got = narrow(WORKER, spec)[0]
    for name, rule in FIELDS[TaskSpec].items():
        if rule.startswith("passed through"):
            assert getattr(got, name) == getattr(spec, name), name


# --- check_resolved: the task's path rules against the filesystem ----------------------------


# check_resolved trusts only directories root alone controls: as another user, every directory
# a test makes is that user's, and so refused.
ROOTS_TREE = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs directories only root controls (run as root)"
)


@pytest.fixture
def tree():
    """A directory nobody may not write (pytest's tmp_path is under a 0700 one of its user)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="ceiling-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(**confinement) -> Policy:
    return Policy(security=SecurityConfig(user="nobody"), confinement=Confinement(**confinement))


def _checked(top, asked: Policy) -> None:
    from hardexec.ceiling import check_resolved

    check_resolved(top, narrow(top, TaskSpec.command(["true"]), asked)[1])


@ROOTS_TREE
def test_a_rule_through_a_link_out_of_the_ceilings_rules_is_refused(tree):
    from hardexec.policyfile import PolicyFile

    jobs = tree / "jobs"
    (jobs / "mine").mkdir(parents=True)
    (jobs / "x").symlink_to("/etc")
    top = PolicyFile(policy=_as_nobody(fs=((str(jobs), "rw"), ("/proc", "ro"))))

    def refused(path: str, access: str = "ro") -> str:
        with pytest.raises(CeilingError) as err:
            _checked(top, Policy(confinement=Confinement(fs=((path, access),))))
        return str(err.value)

    assert refused(str(jobs / "x"), "rw").endswith(
        f"confinement.fs[0]: {str(jobs / 'x')!r} (rw) has a link on its path (it leads to "
        "'/etc'): a task's rule must name its target itself"
    )
    # /proc's magic links: the whole filesystem, the task's own directory.
    assert "(it leads to '/')" in refused("/proc/self/root")
    assert "has a link on its path" in refused("/proc/self/cwd")
    assert "has a link on its path" in refused(f"/proc/{os.getpid()}/root")
    # Absent when checked: refused (a link put there later would be followed).
    assert refused(str(jobs / "later")).endswith("(ro): No such file or directory")
    # A real directory beneath, the ceiling's own rules, and nothing asked: all pass.
    for asked in ((str(jobs / "mine"), "ro"), ("/proc", "ro")):
        _checked(top, Policy(confinement=Confinement(fs=(asked,))))
    _checked(top, None)


@ROOTS_TREE
def test_a_rule_beneath_what_others_than_root_may_write_is_refused(tree):
    from hardexec.policyfile import PolicyFile

    shared = tree / "shared"
    (shared / "sub").mkdir(parents=True)
    shared.chmod(0o777)  # every task (nobody) may rename and link in it
    top = PolicyFile(policy=_as_nobody(fs=((str(tree), "rw"),)))
    with pytest.raises(CeilingError) as err:
        _checked(top, Policy(confinement=Confinement(fs=((str(shared / "sub"), "ro"),))))
    assert f"{str(shared)!r} on its path may be written by others than root" in str(err.value)
    # The ceiling's own rule (as written) is the operator's: it passes.
    _checked(top, Policy(confinement=Confinement(fs=((str(tree), "rw"),))))
    # Sticky (as /tmp): root's entry in it cannot be swapped by anyone else.
    shared.chmod(0o1777)
    _checked(top, Policy(confinement=Confinement(fs=((str(shared / "sub"), "ro"),))))
    # An entry another user owns in it: that user may rename it and put a link in its place.
    os.chown(shared / "sub", 65534, 65534)
    (shared / "sub" / "deeper").mkdir()
    with pytest.raises(CeilingError, match="shared' on its path may be written by others than"):
        _checked(top, Policy(confinement=Confinement(fs=((str(shared / "sub" / "deeper"), "ro"),))))


@ROOTS_TREE
def test_a_ceiling_rule_that_is_itself_a_link_covers_its_target(tree):
    from hardexec.policyfile import PolicyFile

    (tree / "real" / "sub").mkdir(parents=True)
    (tree / "link").symlink_to(tree / "real")
    top = PolicyFile(policy=_as_nobody(fs=((str(tree / "link"), "rw"),)))
    asked = Policy(confinement=Confinement(fs=((str(tree / "link" / "sub"), "ro"),)))
    with pytest.raises(CeilingError, match="has a link on its path"):
        _checked(top, asked)  # named through the link: refused, even if within
    direct = Policy(confinement=Confinement(fs=((str(tree / "real" / "sub"), "ro"),)))
    with pytest.raises(CeilingError, match="beyond the ceiling's path rules"):
        narrow(top, TaskSpec.command(["true"]), direct)  # as written, outside


def test_a_ceiling_that_bounds_time_bounds_the_drain_too():
    from hardexec.policyfile import PolicyFile, RunSettings

    top = PolicyFile(run=RunSettings(timeout=30))
    spec, _ = narrow(top, TaskSpec.command(["true"], drain_timeout=2))
    assert spec.drain_timeout == 2
    with pytest.raises(CeilingError, match=r"task.drain_timeout: 100 s is above the ceiling's 5 s"):
        narrow(top, TaskSpec.command(["true"], drain_timeout=100))
    longer = PolicyFile(run=RunSettings(timeout=30, kill_after=20))
    assert narrow(longer, TaskSpec.command(["true"], drain_timeout=15))[0].drain_timeout == 15
    # A ceiling that bounds no time leaves the task's drain as it is.
    assert (
        narrow(PolicyFile(), TaskSpec.command(["true"], drain_timeout=100))[0].drain_timeout == 100
    )
