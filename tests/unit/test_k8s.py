"""``hardexec.k8s``: every manifest is one the official Kubernetes client models take key for
key and type for type; the seccomp profile decides each syscall as hardexec's own filter does;
and every field a policy sets is in the manifest or said to be unexpressed."""

import errno
import grp
import json
import os
import pwd
import re

import pytest
import yaml
from kubernetes.client import ApiClient

from hardexec import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig, cgroups, serial
from hardexec._record import MISSING, fields, replace
from hardexec.confine import Confinement, PathRule, SyscallFilter, syscalls
from hardexec.confine import groups as sysgroups
from hardexec.confine.seccomp import WatchFilter, compile_watch
from hardexec.errors import PolicyError
from hardexec.k8s import (
    ENFORCED_ANYWAY,
    NEWER_THAN_LIBSECCOMP_2_5,
    export,
    is_dns_label,
    to_yaml,
)
from hardexec.policyfile import PolicyFile, RunSettings, profile

NOBODY = pwd.getpwnam("nobody")
MODEL = {"Pod": "V1Pod", "Job": "V1Job"}


def validated(manifest: dict) -> dict:
    """``manifest`` read by the client's own model and written back: equal only when every key
    is one the model knows (an unknown one is dropped) and every value has its type."""
    with ApiClient() as client:
        model = client._ApiClient__deserialize(manifest, MODEL[manifest["kind"]])
        back = client.sanitize_for_serialization(model)
    assert back == manifest
    assert yaml.safe_load(to_yaml(manifest)) == manifest  # and the YAML says the same
    return manifest


def run_export(doc=None, argv=("prog",), **kwargs):
    kwargs.setdefault("image", "example.org/prog:1")
    doc = PolicyFile() if doc is None else doc
    if isinstance(doc, Policy):
        doc = PolicyFile(policy=doc)
    result = export(doc, list(argv), **kwargs)
    validated(result.manifest)
    return result


def container(result) -> dict:
    spec = result.manifest["spec"]
    pod = spec["template"]["spec"] if result.manifest["kind"] == "Job" else spec
    [only] = pod["containers"]
    return only


def pod_spec(result) -> dict:
    spec = result.manifest["spec"]
    return spec["template"]["spec"] if result.manifest["kind"] == "Job" else spec


def lost(result, field: str) -> list[str]:
    return [line for line in result.unexpressed if line.startswith(f"{field} = ")]


# --- profiles, identity, capabilities ----------------------------------------------------------


def test_strict_profile():
    result = run_export(profile("strict"), ["sh", "-c", "echo hi"], seccomp_file_name="s.json")
    ctx = container(result)["securityContext"]
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["seccompProfile"] == {"type": "Localhost", "localhostProfile": "hardexec/s.json"}
    assert "runAsUser" not in ctx
    assert container(result)["command"] == ["sh", "-c", "echo hi"]
    assert result.manifest["metadata"]["name"] == "sh"
    spec = pod_spec(result)
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert lost(result, "rlimits.disable_core_dumps")
    assert lost(result, "run.env_policy") == [
        'run.env_policy = "clear" (the image\'s own ENV still applies; only run.env is set over it)'
    ]
    [net] = lost(result, "confinement.namespaces")
    assert net.startswith('confinement.namespaces = ["net"] (') and "loopback" in net
    profile_ = result.seccomp_profile
    assert profile_["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile_["architectures"] == ["SCMP_ARCH_X86_64"]
    assert (
        "the seccomp profile names SCMP_ARCH_X86_64 only: a call of another ABI (i386's int "
        "0x80, x32) kills the calling thread under runc (libseccomp's bad-architecture action), "
        "where hardexec's own filter kills the process"
    ) in result.notes


def test_service_profile_keeps_net_bind_service():
    result = run_export(profile("service"), ["python3", "-m", "http.server", "80"])
    ctx = container(result)["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert not lost(result, "confinement.namespaces")  # the host's network: nothing lost
    assert any("effective only if the image runs the program as root" in n for n in result.notes)


def test_a_user_by_name_is_its_numeric_identity_here_and_says_so():
    doc = profile("service")
    doc = replace(doc, policy=doc.policy.with_security(replace(doc.policy.security, user="nobody")))
    result = run_export(doc, ["web"], seccomp_file_name="web.json")
    ctx = container(result)["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert ctx["runAsNonRoot"] is True
    assert (
        f"user 'nobody' is uid {NOBODY.pw_uid} on this machine; the image's /etc/passwd may differ"
        in result.notes
    )
    pod = pod_spec(result)["securityContext"]
    assert pod["supplementalGroups"] == os.getgrouplist("nobody", NOBODY.pw_gid)
    assert pod["supplementalGroupsPolicy"] == "Strict"
    assert (
        "supplementalGroupsPolicy is Strict (exactly the policy's groups, none from the image's "
        "/etc/group): it needs Kubernetes 1.33+ (or the SupplementalGroupsPolicy gate on "
        "1.31/1.32); where the gate is off, the API server drops the field and the image's "
        "groups are added"
    ) in result.notes
    # Kept capabilities of a user that is not root need ambient capabilities, which a pod lacks.
    [caps] = lost(result, "security.keep_caps")
    assert caps.startswith('security.keep_caps = ["NET_BIND_SERVICE"] (') and "ambient" in caps


def test_uid_0_is_not_run_as_non_root_and_its_securebits_are_unexpressed():
    sec = SecurityConfig(drop_all_caps=True, user=0, group=0, supplementary_groups=[])
    result = run_export(Policy(security=sec))
    ctx = container(result)["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (0, 0, False)
    assert pod_spec(result)["securityContext"]["supplementalGroups"] == []
    [bits] = lost(result, "security.drop_all_caps")
    assert "SECBIT_NOROOT" in bits


def test_named_groups_are_resolved_here():
    group = grp.getgrgid(NOBODY.pw_gid).gr_name
    sec = SecurityConfig(user=NOBODY.pw_uid, group=group, supplementary_groups=[group, 4242])
    result = run_export(Policy(security=sec))
    ctx = container(result)["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert pod_spec(result)["securityContext"]["supplementalGroups"] == [NOBODY.pw_gid, 4242]
    assert any(n.startswith(f"group {group!r} is gid {NOBODY.pw_gid}") for n in result.notes)
    assert not any(n.startswith("user ") for n in result.notes)  # given as a number


def test_without_drop_all_caps_the_capabilities_are_unexpressed():
    result = run_export(Policy(security=SecurityConfig(no_new_privs=True)))
    ctx = container(result)["securityContext"]
    assert "capabilities" not in ctx
    assert ctx["allowPrivilegeEscalation"] is False
    [line] = lost(result, "security.drop_all_caps")
    assert "launcher" in line or "hardexec's own capabilities" in line


def test_no_new_privs_unset_writes_no_allow_privilege_escalation_and_says_so():
    result = run_export(Policy(security=SecurityConfig(drop_all_caps=True)))
    assert "allowPrivilegeEscalation" not in container(result)["securityContext"]
    assert any(n.startswith("allowPrivilegeEscalation is not written") for n in result.notes)


def test_a_filter_implies_no_new_privs_as_hardexec_does():
    sec = SecurityConfig(drop_all_caps=True)
    policy = Policy(security=sec, confinement=Confinement(syscalls=SyscallFilter(default=True)))
    result = run_export(policy)
    assert container(result)["securityContext"]["allowPrivilegeEscalation"] is False
    assert any("hardexec implies it" in n for n in result.notes)


def test_sys_admin_kept_cannot_go_with_no_privilege_escalation():
    sec = SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"], no_new_privs=True)
    result = run_export(Policy(security=sec))
    ctx = container(result)["securityContext"]
    assert ctx["capabilities"]["add"] == ["SYS_ADMIN"]
    assert "allowPrivilegeEscalation" not in ctx
    assert lost(result, "security.no_new_privs") == [
        "security.no_new_privs = true (not written as allowPrivilegeEscalation: false next to an "
        "added SYS_ADMIN: the Kubernetes API has allowPrivilegeEscalation always true for a "
        "container with CAP_SYS_ADMIN, which can gain back what no_new_privs withholds)"
    ]


def test_without_drop_all_caps_a_filter_implies_no_new_privs_whoever_exports():
    # The container gets the runtime's default set, which never has SYS_ADMIN: hardexec would
    # imply no_new_privs for such a program, whatever capabilities this process holds.
    for confinement in (
        Confinement(syscalls=SyscallFilter(default=True)),
        Confinement(fs=[PathRule("/", "rx")]),
    ):
        result = run_export(Policy(confinement=confinement), seccomp_file_name="p.json")
        assert container(result)["securityContext"]["allowPrivilegeEscalation"] is False


def test_a_filter_over_a_container_keeping_sys_admin_implies_nothing():
    sec = SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"])
    policy = Policy(security=sec, confinement=Confinement(syscalls=SyscallFilter(default=True)))
    result = run_export(policy)
    assert "allowPrivilegeEscalation" not in container(result)["securityContext"]
    assert not lost(result, "security.no_new_privs") and not lost(result, "confinement")
    assert (
        "allowPrivilegeEscalation is not written (the policy does not set no_new_privs): the "
        "container keeps SYS_ADMIN, so hardexec does not imply it for the syscall filter or "
        "Landlock rules either"
    ) in result.notes


# --- resources, time, environment, namespaces -------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "memory", "limits"),
    [
        (CpuMax(quota=50_000), 256 << 20, {"cpu": "500m", "memory": "256Mi"}),
        (CpuMax(quota=200_000), 1 << 30, {"cpu": "2000m", "memory": "1Gi"}),
        (CpuMax(quota=50_000, period=200_000), 1_000_000, {"cpu": "250m", "memory": "1000000"}),
        (CpuMax(quota=None), 3 << 10, {"memory": "3Ki"}),
    ],
)
def test_cpu_and_memory_limits(cpu, memory, limits):
    result = run_export(Policy(cgroups=CgroupLimits(cpu=cpu, memory=memory)))
    assert container(result)["resources"] == {"limits": limits}
    if cpu.period != 100_000:
        assert any("cgroups.cpu.period 200000 µs" in n for n in result.notes)


def test_a_cpu_limit_not_whole_millicores_is_rounded_down_and_said():
    result = run_export(Policy(cgroups=CgroupLimits(cpu=CpuMax(quota=33_333))))
    assert container(result)["resources"]["limits"] == {"cpu": "333m"}
    assert any("rounded down to 333m" in n for n in result.notes)


@pytest.mark.parametrize(
    ("quota", "period", "said"), [(1000, 1_000_000, "1"), (1500, 200_000, "7.5")]
)
def test_a_cpu_limit_below_10m_is_written_10m_and_said_to_be_more(quota, period, said):
    # The kernel's least quota is 1 ms: below 10m only with a period longer than 100 ms.
    result = run_export(Policy(cgroups=CgroupLimits(cpu=CpuMax(quota=quota, period=period))))
    assert container(result)["resources"]["limits"] == {"cpu": "10m"}
    assert lost(result, "cgroups.cpu.quota") == [
        f"cgroups.cpu.quota = {quota} ({quota} µs per {period} µs is {said} millicores; the "
        "kubelet raises a CPU limit below 10m to 10m (1 ms per 100 ms period), so the limit "
        "written is 10m, more than asked)"
    ]
    assert not any("rounded down" in n for n in result.notes)


def test_a_cpu_limit_of_10m_is_as_asked():
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True), cgroups=CgroupLimits(cpu=CpuMax(quota=1000))
    )
    result = run_export(policy)
    assert container(result)["resources"]["limits"] == {"cpu": "10m"}
    assert not result.unexpressed
    assert (
        "the CPU limit is a CFS quota: a node whose kubelet has cpuCFSQuota: false enforces no "
        "CPU limit"
    ) in result.notes


def test_pids_are_unexpressed():
    result = run_export(Policy(cgroups=CgroupLimits(pids=64)))
    assert "resources" not in container(result)
    [line] = lost(result, "cgroups.pids")
    assert line.startswith("cgroups.pids = 64 (")


def test_timeout_and_grace():
    result = run_export(PolicyFile(run=RunSettings(timeout=90.5, kill_after=2.2)))
    spec = pod_spec(result)
    assert (spec["activeDeadlineSeconds"], spec["terminationGracePeriodSeconds"]) == (91, 3)
    assert (
        "run.timeout 90.5 s (activeDeadlineSeconds is whole seconds: 91, rounded up): past the "
        "deadline the pod fails (DeadlineExceeded) instead of exiting 124; its grace after "
        "SIGTERM is 3 s (2.2 s rounded up to whole seconds)"
    ) in result.notes
    # Without kill_after, hardexec's own grace: 5 s.
    result = run_export(PolicyFile(run=RunSettings(timeout=10)))
    assert pod_spec(result)["terminationGracePeriodSeconds"] == 5
    assert (
        "run.timeout 10 s: past the deadline the pod fails (DeadlineExceeded) instead of "
        "exiting 124; its grace after SIGTERM is 5 s"
    ) in result.notes


@pytest.mark.parametrize("kill_after", [0.0, 0.5])
def test_a_short_timeout_and_grace_say_what_the_kubelet_gives(kill_after):
    result = run_export(PolicyFile(run=RunSettings(timeout=0.2, kill_after=kill_after)))
    spec = pod_spec(result)
    assert spec["activeDeadlineSeconds"] == 1
    assert spec["terminationGracePeriodSeconds"] == (0 if kill_after == 0 else 1)
    assert (
        "run.timeout 0.2 s (activeDeadlineSeconds is whole seconds: 1, rounded up): past the "
        "deadline the pod fails (DeadlineExceeded) instead of exiting 124; its grace after "
        "SIGTERM is 2 s (the kubelet raises a grace below 2 s to it; hardexec's is "
        f"{kill_after:g} s)"
    ) in result.notes


def test_service_links_off_still_leave_the_api_servers_variables():
    [line] = [n for n in run_export().notes if "enableServiceLinks" in n]
    assert "KUBERNETES_SERVICE_HOST" in line and "still sets" in line


def test_job_kind():
    doc = PolicyFile(
        policy=Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True)),
        run=RunSettings(timeout=60),
    )
    result = run_export(doc, ["/usr/bin/backup.sh", "--all"], kind="job", name="nightly")
    manifest = result.manifest
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert manifest["metadata"]["name"] == "nightly"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["activeDeadlineSeconds"] == 60
    pod = pod_spec(result)
    assert pod["restartPolicy"] == "Never"
    assert "activeDeadlineSeconds" not in pod  # the Job's deadline covers it
    assert container(result)["command"] == ["/usr/bin/backup.sh", "--all"]
    assert container(result)["name"] == "nightly"


def test_environment_and_working_dir():
    run = RunSettings(env_policy=("HOME",), env=(("LANG", "C.UTF-8"), ("EMPTY", "")))
    result = run_export(PolicyFile(run=run), working_dir="/srv")
    c = container(result)
    assert c["env"] == [{"name": "LANG", "value": "C.UTF-8"}, {"name": "EMPTY", "value": ""}]
    assert c["workingDir"] == "/srv"
    assert lost(result, "run.env_policy")[0].startswith('run.env_policy = ["HOME"] (')


def kubelet_expand(text: str, defined: dict[str, str]) -> str:
    """What the kubelet makes of a command's, an arg's or an env value's ``text``
    (k8s.io/kubernetes third_party/forked/golang/expansion.Expand): ``$$`` is ``$``,
    ``$(NAME)`` a defined variable's value (left as it is when undefined)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            rest = text[i + 1 :]
            if rest[0] == "$":
                out.append("$")
                i += 2
                continue
            close = rest.find(")") if rest[0] == "(" else -1
            if close > 0:
                name = rest[1:close]
                out.append(defined.get(name, f"$({name})"))
                i += close + 2
                continue
            out.append("$" + rest[0])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_the_kubelet_gives_back_every_dollar_as_written():
    argv = ["sh", "-c", "echo $$ $(TOKEN) $HOME $", "$(", "$$$(TOKEN)"]
    env = (("TOKEN", "secret"), ("PRICE", "$$5"), ("REF", "$(TOKEN)"))
    result = run_export(PolicyFile(run=RunSettings(env=env)), argv)
    c = container(result)
    defined = dict(env)
    assert [kubelet_expand(arg, defined) for arg in c["command"]] == argv
    assert [(e["name"], kubelet_expand(e["value"], defined)) for e in c["env"]] == list(env)
    assert any(
        n.startswith("every $ in command and env values is written $$") for n in result.notes
    )
    # Without a $, nothing changes and nothing is said.
    result = run_export(argv=["echo", "hi"])
    assert container(result)["command"] == ["echo", "hi"]
    assert not any("$$" in n for n in result.notes)


def test_namespaces_and_hostname():
    policy = Policy(confinement=Confinement(namespaces=["pid", "ipc", "uts"], hostname="box-1"))
    spec = pod_spec(run_export(policy))
    assert (spec["hostPID"], spec["shareProcessNamespace"], spec["hostIPC"]) == (False,) * 3
    assert spec["hostname"] == "box-1"
    # A uts namespace without a name is the pod's own, named as the pod.
    spec = pod_spec(run_export(Policy(confinement=Confinement(namespaces=["uts"])), ["my-app"]))
    assert spec["hostname"] == "my-app"
    result = run_export(Policy(confinement=Confinement(namespaces=["uts"], hostname="Box.Local")))
    assert "hostname" not in pod_spec(result)
    assert lost(result, "confinement.hostname")[0].startswith('confinement.hostname = "Box.Local"')


def test_what_has_no_place_in_a_manifest_is_each_one_sentence():
    policy = Policy(
        rlimits=RlimitConfig(max_open_files=256, stack=8 << 20, disable_core_dumps=True),
        confinement=Confinement(
            fs=[PathRule("/srv", "ro")],
            fs_dependencies=False,
            tcp_bind=[80],
            tcp_connect=[5432, 443],
            umask=0o077,
        ),
        die_with_parent=True,
    )
    result = run_export(PolicyFile(policy=policy, run=RunSettings(max_output=1024)))
    assert result.unexpressed[:3] == (
        "rlimits.max_open_files = 256 (Kubernetes sets no RLIMIT_NOFILE: the container "
        "runtime's defaults apply)",
        "rlimits.stack = 8388608 (Kubernetes sets no RLIMIT_STACK: the container runtime's "
        "defaults apply)",
        "rlimits.disable_core_dumps = true (Kubernetes sets no RLIMIT_CORE: the container "
        "runtime's defaults apply)",
    )
    for field, value in [
        ("confinement.fs", '["/srv:ro"]'),
        ("confinement.fs_dependencies", "false"),
        ("confinement.tcp_bind", "[80]"),
        ("confinement.tcp_connect", "[443, 5432]"),
        ("confinement.umask", '"077"'),
        ("die_with_parent", "true"),
        ("run.max_output", "1024"),
        ("security.drop_all_caps", "false"),
    ]:
        [line] = lost(result, field)
        assert line.startswith(f"{field} = {value} (") and line.endswith(")"), line
        assert "\n" not in line


def test_a_path_rule_is_quoted_so_that_it_cannot_forge_a_line():
    rules = [PathRule("/srv\nhardexec: export: all is well", "ro"), PathRule('/a "b"', "rw")]
    result = run_export(Policy(confinement=Confinement(fs=rules)))
    [line] = lost(result, "confinement.fs")
    assert line.startswith(
        'confinement.fs = ["/srv\\nhardexec: export: all is well:ro", "/a \\"b\\":rw"] ('
    )
    assert "\n" not in line


# --- seccomp -----------------------------------------------------------------------------------

CLONE_NEWUSER = 0x10000000


def profile_verdict(profile: dict, name: str, args=(0,) * 6):
    """What an OCI runtime gives syscall ``name`` with ``args`` under ``profile``: ``None`` when
    it runs, else ``("errno", n)`` or ``("kill",)``. The profile's rules never overlap, so
    the first that matches is the one."""
    for rule in profile["syscalls"]:
        if name not in rule["names"]:
            continue
        if all(args[a["index"]] & a["value"] == a["valueTwo"] for a in rule.get("args", [])):
            return _outcome(rule["action"], rule.get("errnoRet"))
    return _outcome(profile["defaultAction"], profile.get("defaultErrnoRet"))


def _outcome(action, errno_ret):
    if action == "SCMP_ACT_ALLOW":
        return None
    if action == "SCMP_ACT_KILL_PROCESS":
        return ("kill",)
    assert action == "SCMP_ACT_ERRNO"
    return ("errno", errno_ret)


def hardexec_verdict(watch, nr, args=(0,) * 6):
    """What hardexec's own compiled rules give syscall number ``nr`` (the watch filter's
    judge makes the plain filter's decision)."""
    verdict = watch.judge(nr, list(args))
    if verdict is None:
        return None
    return ("kill",) if verdict.kill else ("errno", verdict.errno)


FILTERS = {
    "default": SyscallFilter(default=True),
    "deny": SyscallFilter(deny=("ptrace:kill", "@mount:EACCES", "mkdir")),
    "default-and-deny": SyscallFilter(default=True, deny=("@network:EPERM", "keyctl:ENOSYS")),
    "allow": SyscallFilter(allow=("@basic-io", "@file-system", "@signal"), deny=("write:EACCES",)),
    "allow-process": SyscallFilter(allow=("@basic-io", "@process"), default=True),
    "allow-namespaces": SyscallFilter(allow=("@process", "@namespace"), deny=("setns:kill",)),
}


@pytest.mark.parametrize("key", FILTERS)
def test_the_profile_decides_every_syscall_as_hardexec_does(key):
    f = FILTERS[key]
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    profile_ = result.seccomp_profile
    json.dumps(profile_)  # plain JSON
    watch = compile_watch(WatchFilter(allow=f.allow, deny=f.deny, default=f.default))
    table = syscalls.table()
    for name, nr in table.items():
        assert profile_verdict(profile_, name) == hardexec_verdict(watch, nr), name
    # clone with each namespace flag, and without
    for flag in (0, *[1 << b for b in range(32) if sysgroups.CLONE_NEW_FLAGS >> b & 1]):
        args = (flag, 0, 0, 0, 0, 0)
        expected = hardexec_verdict(watch, table["clone"], args)
        assert profile_verdict(profile_, "clone", args) == expected, hex(flag)


def test_a_deny_list_profile():
    f = SyscallFilter(default=True, deny=("ptrace:kill", "mkdir:EACCES"))
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    rules = result.seccomp_profile["syscalls"]
    by_name = {}
    for rule in rules:
        if "args" not in rule:
            for name in rule["names"]:
                by_name[name] = (rule["action"], rule.get("errnoRet"))
    assert by_name["ptrace"] == ("SCMP_ACT_KILL_PROCESS", None)
    assert by_name["mkdir"] == ("SCMP_ACT_ERRNO", errno.EACCES)
    assert by_name["unshare"] == ("SCMP_ACT_ERRNO", errno.EPERM)  # @default-deny's default
    assert by_name["clone3"] == ("SCMP_ACT_ERRNO", errno.ENOSYS)  # pinned in @namespace
    assert "read" not in by_name and "clone" not in by_name
    clone = [rule for rule in rules if rule["names"] == ["clone"]]
    flags = sorted(rule["args"][0]["value"] for rule in clone)
    assert flags == [1 << b for b in range(32) if sysgroups.CLONE_NEW_FLAGS >> b & 1]
    assert all(
        rule["args"][0]["valueTwo"] == rule["args"][0]["value"]
        and rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
        and (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.EPERM)
        for rule in clone
    )
    # Calls beyond the table get ENOSYS under hardexec's default list: a profile cannot say it.
    assert lost(result, "confinement.syscalls.default")


def test_an_allow_list_profile():
    f = SyscallFilter(allow=("@basic-io", "openat", "@process"), deny=("write:EACCES",))
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    p = result.seccomp_profile
    assert (p["defaultAction"], p["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", errno.ENOSYS)
    [allowed] = [r for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r]
    assert {"read", "openat", "close", "brk", "execve", "exit_group"} <= set(allowed["names"])
    assert "write" not in allowed["names"] and "unshare" not in allowed["names"]
    assert "errnoRet" not in allowed
    assert {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES} in p[
        "syscalls"
    ]
    # clone is allowed only without namespace flags (the allow-list does not allow @namespace).
    [clone] = [r for r in p["syscalls"] if r["names"] == ["clone"] and r["action"].endswith("W")]
    assert clone["args"] == [
        {
            "index": 0,
            "value": sysgroups.CLONE_NEW_FLAGS,
            "valueTwo": 0,
            "op": "SCMP_CMP_MASKED_EQ",
        }
    ]
    assert not lost(result, "confinement.syscalls.default")


def test_a_name_this_table_lacks_is_unexpressed():
    missing = sorted(syscalls.KNOWN_ELSEWHERE - set(syscalls.table()))
    assert missing, "this machine's table has every name hardexec knows of elsewhere"
    f = SyscallFilter(deny=(missing[0], "ptrace"))
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    [line] = lost(result, "confinement.syscalls")
    assert line.startswith(f'confinement.syscalls = ["{missing[0]}"] (')
    names = {n for rule in result.seccomp_profile["syscalls"] for n in rule["names"]}
    assert names == {"ptrace"}


def _libseccomp():
    """This machine's libseccomp (ctypes), or None."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def test_names_libseccomp_2_5_does_not_know_are_all_listed():
    lib = _libseccomp()
    if lib is None:
        pytest.skip("no libseccomp on this machine to ask which names it resolves")
    unknown = {n for n in syscalls.table() if lib.seccomp_syscall_resolve_name(n.encode()) < 0}
    assert unknown <= NEWER_THAN_LIBSECCOMP_2_5
    known = {
        n for n in NEWER_THAN_LIBSECCOMP_2_5 if lib.seccomp_syscall_resolve_name(n.encode()) >= 0
    }
    assert not known, "this libseccomp knows them: the list says it does not"


def test_a_deny_rule_an_older_runtime_skips_is_unexpressed():
    f = SyscallFilter(default=True, deny=("mseal:kill", "ptrace", "@security:EACCES"))
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    why = (
        "(denied by number under hardexec; a node whose libseccomp does not know them (2.5 does "
        "not) skips these rules: runc and crun ignore names they do not know, and the calls run)"
    )
    assert lost(result, "confinement.syscalls.deny") == [
        'confinement.syscalls.deny = ["lsm_get_self_attr", "lsm_list_modules", '
        f'"lsm_set_self_attr", "mseal"] {why}'
    ]
    # open_tree_attr is denied by the default list (@default-deny, through @mount).
    assert f'confinement.syscalls.default = ["open_tree_attr"] {why}' in result.unexpressed
    # A deny-list naming none of them says nothing of it.
    result = run_export(Policy(confinement=Confinement(syscalls=SyscallFilter(deny=["ptrace"]))))
    assert not any("libseccomp" in line for line in result.unexpressed)


def test_an_allow_list_naming_newer_calls_notes_they_stay_refused():
    f = SyscallFilter(allow=("@basic-io", "mseal"), deny=("statmount:kill",))
    result = run_export(Policy(confinement=Confinement(syscalls=f)))
    assert not any("libseccomp" in line for line in result.unexpressed)
    assert (
        "a node whose libseccomp does not know mseal, statmount (2.5 does not) skips the "
        "profile's rules naming them: there they get the default ENOSYS"
    ) in result.notes


# --- nothing silently dropped ------------------------------------------------------------------

CPU = CpuMax(quota=50_000)
# For each field: (the policy without it, the policy with it set), the rest equal, so that what
# the field alone changes is seen. A field added to a record later has no entry and fails.
FS = (PathRule("/srv", "ro"),)
OWN_GROUP = object()  # this process's cgroup v2 group: a cgroup_parent must exist
SAMPLES = {
    "security.drop_all_caps": ({}, {"security": SecurityConfig(drop_all_caps=True)}),
    "security.keep_caps": (
        {"security": SecurityConfig(drop_all_caps=True)},
        {"security": SecurityConfig(drop_all_caps=True, keep_caps=["NET_RAW"])},
    ),
    "security.no_new_privs": ({}, {"security": SecurityConfig(no_new_privs=True)}),
    "security.fail_on_cap_error": ({}, {"security": SecurityConfig(fail_on_cap_error=True)}),
    "security.user": ({}, {"security": SecurityConfig(user="nobody")}),
    "security.group": ({}, {"security": SecurityConfig(group=4242)}),
    "security.supplementary_groups": ({}, {"security": SecurityConfig(supplementary_groups=[7])}),
    **{
        f"rlimits.{item.name}": (
            {},
            {
                "rlimits": RlimitConfig(
                    **{item.name: True if item.name.startswith("disable") else 9}
                )
            },
        )
        for item in fields(RlimitConfig)
    },
    "cgroups": ({}, {"cgroups": CgroupLimits()}),
    "cgroups.cpu": ({"cgroups": CgroupLimits()}, {"cgroups": CgroupLimits(cpu=CPU)}),
    "cgroups.cpu.quota": (
        {"cgroups": CgroupLimits(cpu=CpuMax())},
        {"cgroups": CgroupLimits(cpu=CPU)},
    ),
    "cgroups.cpu.period": (
        {"cgroups": CgroupLimits(cpu=CPU)},
        {"cgroups": CgroupLimits(cpu=CpuMax(quota=50_000, period=200_000))},
    ),
    "cgroups.memory": ({"cgroups": CgroupLimits()}, {"cgroups": CgroupLimits(memory=1 << 20)}),
    "cgroups.pids": ({"cgroups": CgroupLimits()}, {"cgroups": CgroupLimits(pids=9)}),
    "cgroups.fail_on_error": (
        {"cgroups": CgroupLimits()},
        {"cgroups": CgroupLimits(fail_on_error=True)},
    ),
    "cgroups.keep_at_exit": (
        {"cgroups": CgroupLimits()},
        {"cgroups": CgroupLimits(keep_at_exit=True)},
    ),
    "cgroup_parent": (
        {"cgroups": CgroupLimits()},
        {"cgroups": CgroupLimits(), "cgroup_parent": OWN_GROUP},
    ),
    "die_with_parent": ({}, {"die_with_parent": True}),
    "confinement": ({}, {"confinement": Confinement(umask=0o22)}),
    "confinement.fs": ({"confinement": Confinement()}, {"confinement": Confinement(fs=FS)}),
    "confinement.fs_dependencies": (
        {"confinement": Confinement(fs=FS)},
        {"confinement": Confinement(fs=FS, fs_dependencies=False)},
    ),
    "confinement.tcp_bind": ({}, {"confinement": Confinement(tcp_bind=[80])}),
    "confinement.tcp_connect": ({}, {"confinement": Confinement(tcp_connect=[80])}),
    "confinement.syscalls": (
        {"confinement": Confinement()},
        {"confinement": Confinement(syscalls=SyscallFilter(deny=["ptrace"]))},
    ),
    "confinement.syscalls.allow": (
        {"confinement": Confinement(syscalls=SyscallFilter(deny=["ptrace"]))},
        {"confinement": Confinement(syscalls=SyscallFilter(allow=["read"], deny=["ptrace"]))},
    ),
    "confinement.syscalls.deny": (
        {"confinement": Confinement(syscalls=SyscallFilter(default=True))},
        {"confinement": Confinement(syscalls=SyscallFilter(default=True, deny=["mkdir"]))},
    ),
    "confinement.syscalls.default": (
        {"confinement": Confinement(syscalls=SyscallFilter(deny=["ptrace"]))},
        {"confinement": Confinement(syscalls=SyscallFilter(deny=["ptrace"], default=True))},
    ),
    "confinement.namespaces": ({}, {"confinement": Confinement(namespaces=["ipc"])}),
    "confinement.hostname": (
        {"confinement": Confinement(namespaces=["uts"])},
        {"confinement": Confinement(namespaces=["uts"], hostname="box")},
    ),
    "confinement.umask": ({"confinement": Confinement()}, {"confinement": Confinement(umask=0)}),
    "confinement.best_effort": (
        {"confinement": Confinement(umask=0)},
        {"confinement": Confinement(umask=0, best_effort=True)},
    ),
    "run.env_policy": ({}, {"env_policy": "clear"}),
    "run.env": ({}, {"env": (("A", "b"),)}),
    "run.timeout": ({}, {"timeout": 5.0}),
    "run.kill_after": ({"timeout": 5.0}, {"timeout": 5.0, "kill_after": 1.0}),
    "run.max_output": ({}, {"max_output": 10}),
}


def every_field():
    """Every field of a Policy (nested records' fields too) and of RunSettings, by key path."""
    paths = []

    def walk(cls, prefix):
        for item in fields(cls):
            if not item.init:
                continue
            path = f"{prefix}{item.name}"
            nested = serial._NESTED.get(cls, {}).get(item.name)
            if nested is not None and item.default is MISSING:
                walk(nested, f"{path}.")  # always there (security, rlimits): its fields only
                continue
            paths.append(path)
            if nested is not None:
                walk(nested, f"{path}.")

    walk(Policy, "")
    paths += [f"run.{item.name}" for item in fields(RunSettings)]
    return paths


def _doc(values: dict) -> PolicyFile:
    if values.get("cgroup_parent") is OWN_GROUP:
        values = {**values, "cgroup_parent": cgroups.default_parent()}
    run = {k: v for k, v in values.items() if k in {i.name for i in fields(RunSettings)}}
    policy = {k: v for k, v in values.items() if k not in run}
    return PolicyFile(policy=Policy(**policy), run=RunSettings(**run))


def test_every_field_has_a_sample():
    assert sorted(every_field()) == sorted(SAMPLES), (
        "a field of Policy or RunSettings has no sample here: map it in hardexec.k8s (into the "
        "manifest, or as unexpressed), then add its sample"
    )


@pytest.mark.parametrize("path", every_field())
def test_every_field_set_is_in_the_manifest_or_unexpressed(path):
    if path not in SAMPLES:
        pytest.fail(f"{path}: no sample (see test_every_field_has_a_sample)")
    without, with_ = (_doc(values) for values in SAMPLES[path])
    assert without != with_, f"{path}: the sample sets nothing"
    kwargs = {"image": "img", "seccomp_file_name": "p.json"}
    before, after = (export(doc, ["prog"], **kwargs) for doc in (without, with_))
    validated(after.manifest)
    changed = (after.manifest, after.seccomp_profile) != (before.manifest, before.seccomp_profile)
    said = [line for line in after.unexpressed if line.split(" = ")[0] == path]
    new = set(after.unexpressed) - set(before.unexpressed)
    assert changed or said or new or path in ENFORCED_ANYWAY, (
        f"{path}: setting it changes neither the manifest nor the profile, and nothing says it "
        "is not expressible"
    )


def test_a_field_the_pod_enforces_anyway_is_a_field():
    assert set(ENFORCED_ANYWAY) <= set(every_field())


# --- names, bad input, YAML --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/usr/bin/My_Prog.py", "my-prog-py"),
        ("python3", "python3"),
        ("___", "hardexec"),
        ("é", "hardexec"),
        ("x" * 80, "x" * 63),
    ],
)
def test_the_default_name_is_a_dns_label_of_the_program(argv0, name):
    result = run_export(argv=[argv0])
    assert result.manifest["metadata"]["name"] == container(result)["name"] == name
    assert is_dns_label(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Web"}, "name: 'Web' is not a DNS-1123 label"),
        ({"name": "-web"}, "name: '-web' is not a DNS-1123 label"),
        ({"name": "w" * 64}, "is not a DNS-1123 label"),
        ({"kind": "deployment"}, "kind: 'deployment' is not one of pod, job"),
        ({"image": ""}, "image: '' is not an image reference"),
        ({"image": "a b"}, "image: 'a b' is not an image reference"),
        ({"working_dir": "srv"}, "working_dir: 'srv' is not an absolute path"),
        ({"argv": []}, "argv: no command given"),
        ({"argv": ["prog", "\udcff"]}, "argv[1]: '\\udcff' is not UTF-8 text"),
        ({"argv": "prog"}, "argv: expected a list of arguments"),
        ({"seccomp_file_name": "a/b.json"}, "seccomp_file_name: 'a/b.json' is not a plain file"),
        ({"seccomp_file_name": ".."}, "seccomp_file_name: '..' is not a plain file"),
    ],
)
def test_bad_input_is_refused_naming_it(kwargs, message):
    argv = kwargs.pop("argv", ["prog"])
    kwargs.setdefault("image", "img")
    doc = PolicyFile(policy=Policy(confinement=Confinement(syscalls=SyscallFilter(default=True))))
    with pytest.raises(PolicyError, match=re.escape(message)):
        export(doc, argv, **kwargs)


def test_a_policy_file_is_needed():
    with pytest.raises(PolicyError, match="policy_file: expected a PolicyFile"):
        export(Policy(), ["prog"], image="img")


@pytest.mark.parametrize(
    "value",
    [
        {"a": "yes", "no": "on", "b": "1", "c": "", "d": "a: b # c", "e": '- x\n  y\t"q"\\'},
        {"on": True, "y": None, "null": 0, "key with space": -3, "ünï": "ü ☃ \u2028"},
        {"list": [[1, [2, []]], {}, {"k": [{"a": 1, "b": {"c": []}}]}], "empty": {}},
        [{"a": 1}, ["b", {"c": [{}]}], 2.5],
        "just text",
    ],
)
def test_to_yaml_reads_back_as_what_it_was_given(value):
    text = to_yaml(value)
    assert yaml.safe_load(text) == value
    assert to_yaml(value) == text  # deterministic


LOADERS = [yaml.SafeLoader, *([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
def test_text_beyond_the_bmp_reads_back_with_either_loader(loader):
    argv = ["echo", "smile \U0001f600", "\U0010fffd\x7f\u2028é"]
    result = run_export(argv=argv, name="echo")
    text = to_yaml(result.manifest)
    assert text.isascii() and "\\U0001f600" in text and "\\ud83d" not in text
    assert yaml.load(text, Loader=loader) == result.manifest
    assert container(result)["command"] == argv


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
@pytest.mark.parametrize("number", [1e16, 1e-05, -2.5e300, 2.5, 0.1, 1.5e16, -0.0])
def test_a_float_reads_back_as_a_float_with_either_loader(number, loader):
    back = yaml.load(to_yaml({"n": number}), Loader=loader)["n"]
    assert isinstance(back, float) and back == number


def test_to_yaml_writes_every_string_quoted_and_keys_in_order():
    text = to_yaml({"kind": "Pod", "a": {"z": "1", "b": ["x"]}})
    assert text == 'kind: "Pod"\na:\n  z: "1"\n  b:\n    - "x"\n'


@pytest.mark.parametrize("bad", [{"a": {1, 2}}, {1: "a"}, ["\udcff"], float("nan")])
def test_to_yaml_refuses_what_yaml_would_not_say_as_is(bad):
    with pytest.raises(ValueError):
        to_yaml(bad)


def test_the_manifest_is_plain_json_data():
    result = run_export(profile("strict"), seccomp_file_name="p.json")
    assert json.loads(json.dumps(result.manifest)) == result.manifest
