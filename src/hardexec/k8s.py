"""A policy as a Kubernetes Pod or Job manifest (``hardexec export k8s``).

:func:`export` maps a :class:`~hardexec.policyfile.PolicyFile` and a program's argv onto what
a pod can say for itself: the container's ``securityContext`` (capabilities, no_new_privs as
``allowPrivilegeEscalation``, the numeric identity, a seccomp profile), ``resources.limits``
(memory, CPU), the pod's deadline and grace, its hostname and environment. What a pod cannot
say (rlimits, Landlock rules, umask, a network namespace with only a loopback, a pids limit,
...) is never dropped silently: each is one sentence of :attr:`Export.unexpressed`, naming the
field, its value and why. :attr:`Export.notes` say where the pod differs without loosening
anything (it is stricter, or a name was resolved on this machine).

A syscall filter becomes an OCI seccomp profile (the JSON a container runtime reads, placed on
each node under the kubelet's ``seccomp`` directory) from hardexec's own rules: its groups
expanded with its tables, its deny-list with each rule's errno, its allow-list with the
always-allowed ``@default`` group, for the native architecture only.

Pure logic: nothing here imports the Kubernetes client (the tests validate the manifests
against it), and :func:`to_yaml` is a small emitter of its own rather than a dependency.
"""

from __future__ import annotations

import json
import math
import os
import re

from ._record import frozen
from .errors import PolicyError, shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .confine.config import SyscallFilter
    from .policy import Policy
    from .policyfile import PolicyFile, RunSettings

__all__ = [
    "ENFORCED_ANYWAY",
    "KINDS",
    "NEWER_THAN_LIBSECCOMP_2_5",
    "Export",
    "export",
    "is_dns_label",
    "to_yaml",
]

#: The manifest kinds :func:`export` writes.
KINDS = ("pod", "job")

#: Fields a pod gives whatever their value says, so that no key of the manifest says them:
#: those that choose between failing closed and warning (a container runtime always fails
#: closed: a capability, limit or seccomp profile it cannot apply fails the container), and a
#: cgroup of the program's own (every container has one).
ENFORCED_ANYWAY = {
    "cgroups": "a container always has a cgroup of its own, ended as a whole with it",
    "security.fail_on_cap_error": "the runtime fails the container when it cannot set capabilities",
    "cgroups.fail_on_error": "the kubelet and runtime apply a container's limits or fail it",
    "confinement.best_effort": "the runtime fails the container when it cannot apply its "
    "seccomp profile",
}

#: Syscall names libseccomp 2.5 does not resolve: Debian 12's 2.5.4 (whose table reaches
#: futex_requeue, x86_64 456) knows none of them (Linux 6.8 to 6.17's); an older build knows
#: fewer names still. runc and crun build a profile with libseccomp and skip a rule naming a
#: call it does not know, logging it at debug level only: on such a node a deny rule for one of
#: these is gone and the call runs, where hardexec denies it by number.
NEWER_THAN_LIBSECCOMP_2_5 = frozenset(
    {
        "statmount",
        "listmount",
        "lsm_get_self_attr",
        "lsm_set_self_attr",
        "lsm_list_modules",
        "mseal",
        "uretprobe",  # x86_64 only (335), though numbered below the others
        "setxattrat",
        "getxattrat",
        "listxattrat",
        "removexattrat",
        "open_tree_attr",
        "file_getattr",
        "file_setattr",
    }
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_LABEL = 63
# The kubelet's seccomp directory's subdirectory the profiles go in (localhostProfile is a
# path relative to that directory).
_PROFILE_DIR = "hardexec"
_ARCHITECTURES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
_ENOSYS = 38  # the same on x86_64 and aarch64 (asm-generic/errno.h)
_QUANTITY_UNITS = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))
_DEFAULT_GRACE = 5.0  # s: hardexec's own grace between the timeout's SIGTERM and SIGKILL
_KUBELET_LEAST_GRACE = 2  # s: the kubelet's minimumGracePeriodInSeconds when it kills
_K8S_CPU_PERIOD = 100_000  # µs: the kubelet's default CFS period (cpuCFSQuotaPeriod)
_MIN_MILLICPU = 10  # the kubelet's least CFS quota, 1 ms per 100 ms period (MilliCPUToQuota)


@frozen
class Export:
    """What :func:`export` made of a policy.

    Attributes:
        manifest: the Pod or Job as plain data (dicts, lists, str, int, bool), in the key order
            it is written; :func:`to_yaml` writes it, ``json.dumps`` too.
        seccomp_profile: the OCI seccomp profile (``defaultAction``, ``architectures``,
            ``syscalls``) the manifest's ``localhostProfile`` names, or ``None`` without a
            syscall filter.
        unexpressed: what the manifest cannot say, each a sentence ``FIELD = VALUE (why)``.
        notes: where the pod differs from a hardexec run without loosening it, or what the
            reader should know (names resolved on this machine, where the profile goes).
    """

    manifest: dict[str, Any]
    seccomp_profile: dict[str, Any] | None
    unexpressed: tuple[str, ...]
    notes: tuple[str, ...]


def is_dns_label(name: str) -> bool:
    """Whether ``name`` is a DNS-1123 label: lowercase letters, digits and ``-``, at most 63,
    starting and ending with a letter or digit (what a container's name must be)."""
    return (
        isinstance(name, str)
        and len(name) <= _MAX_LABEL
        and name.isascii()
        and _DNS_LABEL.fullmatch(name) is not None
    )


def _default_name(argv: Sequence[str]) -> str:
    """A DNS-1123 label from the program's basename: ``/usr/bin/my_prog.py`` → ``my-prog-py``."""
    base = os.path.basename(argv[0]).lower()
    label = re.sub(r"[^a-z0-9]+", "-", base if base.isascii() else "")
    label = label[:_MAX_LABEL].strip("-")
    return label or "hardexec"


def export(
    policy_file: PolicyFile,
    argv: Sequence[str],
    *,
    image: str,
    kind: str = "pod",
    name: str | None = None,
    seccomp_file_name: str | None = None,
    working_dir: str | None = None,
) -> Export:
    """The Kubernetes manifest of a run of ``argv`` under ``policy_file``.

    Args:
        policy_file: the policy and the run's settings (``hardexec.policyfile.load``, or a
            command line's ``Request.policy_file()``).
        argv: the program and its arguments: the container's ``command`` (no shell).
        image: the container image.
        kind: ``"pod"`` (a v1 Pod) or ``"job"`` (a batch/v1 Job of one try).
        name: the Pod's or Job's name and the container's, a DNS-1123 label; default: from
            the program's basename.
        seccomp_file_name: the file name the seccomp profile is saved as on the nodes, under
            the kubelet's ``seccomp/hardexec/`` directory; default ``NAME.json``. Used only
            when the policy filters syscalls.
        working_dir: the container's working directory (absolute, in the image).

    Returns:
        The manifest, the seccomp profile, and what could not be expressed.

    Raises:
        PolicyError: a bad ``image``, ``kind``, ``name``, ``seccomp_file_name`` or
            ``working_dir``, an empty ``argv``, text that is not Unicode, or a syscall
            filter where hardexec has no syscall table.
    """
    from .policyfile import PolicyFile

    if not isinstance(policy_file, PolicyFile):
        raise PolicyError(f"policy_file: expected a PolicyFile, got {shown(policy_file)}")
    argv = _argv(argv)
    name = _check_args(image, kind, name, working_dir, argv)
    builder = _Builder(policy_file.policy, policy_file.run, name)
    container: dict[str, Any] = {"name": name, "image": image, "command": _literal(argv)}
    if working_dir is not None:
        container["workingDir"] = _text(working_dir, "working_dir")
    env = builder.env()
    if env:
        container["env"] = env
    if any("$" in arg for arg in argv) or any("$" in value for _, value in policy_file.run.env):
        builder.note(
            "every $ in command and env values is written $$: the kubelet expands $(VAR) and "
            "$$ there, and $$ gives back the $"
        )
    limits = builder.limits()
    if limits:
        # Limits only: requests are the scheduler's reservation, not a confinement. (Given
        # limits alone, the API server defaults the requests to them.)
        container["resources"] = {"limits": limits}
    profile = None
    confinement = policy_file.policy.confinement
    if confinement is not None and confinement.syscalls is not None:
        if seccomp_file_name is None:
            seccomp_file_name = f"{name}.json"
        _check_file_name(seccomp_file_name)
        profile = builder.seccomp(confinement.syscalls)
        local = f"{_PROFILE_DIR}/{seccomp_file_name}"
        seccomp = {"type": "Localhost", "localhostProfile": local}
        builder.note(
            f"the seccomp profile must be on every node as <kubelet root>/seccomp/{local} "
            "(by default /var/lib/kubelet/seccomp/), or the pod does not start"
        )
    else:
        seccomp = {"type": "RuntimeDefault"}
        builder.note(
            "seccompProfile is RuntimeDefault: the policy filters no syscalls, and the "
            "runtime's default profile is stricter than that"
        )
    container["securityContext"] = {**builder.security_context(), "seccompProfile": seccomp}
    pod = builder.pod_spec(container, job=kind == "job")
    metadata = {"name": name, "labels": {"app.kubernetes.io/managed-by": "hardexec"}}
    if kind == "pod":
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": pod,
        }
    else:
        spec: dict[str, Any] = {"backoffLimit": 0}
        deadline = builder.deadline()
        if deadline is not None:
            spec["activeDeadlineSeconds"] = deadline
        spec["template"] = {"metadata": {"labels": dict(metadata["labels"])}, "spec": pod}
        manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
        builder.note(
            "the Job makes one try (backoffLimit 0, restartPolicy Never), as hardexec runs "
            "the program once"
        )
    return Export(
        manifest=manifest,
        seccomp_profile=profile,
        unexpressed=tuple(builder.unexpressed),
        notes=tuple(builder.notes),
    )


def _check_args(
    image: object, kind: object, name: str | None, working_dir: object, argv: list[str]
) -> str:
    """The name to use, once the arguments besides the policy are checked."""
    if kind not in KINDS:
        raise PolicyError(f"kind: {shown(kind)} is not one of {', '.join(KINDS)}")
    if not isinstance(image, str) or not image or not image.isprintable() or " " in image:
        raise PolicyError(f"image: {shown(image)} is not an image reference")
    if working_dir is not None and (
        not isinstance(working_dir, str) or not working_dir.startswith("/") or "\0" in working_dir
    ):
        raise PolicyError(f"working_dir: {shown(working_dir)} is not an absolute path")
    if name is None:
        return _default_name(argv)
    if not is_dns_label(name):
        raise PolicyError(
            f"name: {shown(name)} is not a DNS-1123 label (lowercase letters, digits and '-', "
            f"at most {_MAX_LABEL}, starting and ending with a letter or digit)"
        )
    return name


def _argv(argv: object) -> list[str]:
    if isinstance(argv, str | bytes) or not hasattr(argv, "__iter__"):
        raise PolicyError(f"argv: expected a list of arguments, got {shown(argv)}")
    items = list(argv)  # type: ignore[call-overload]
    if not items:
        raise PolicyError("argv: no command given")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise PolicyError(f"argv[{index}]: expected text, got {shown(item)}")
        _text(item, f"argv[{index}]")
    return items


def _text(value: str, where: str) -> str:
    """``value`` if a manifest (UTF-8 JSON or YAML) can carry it: no NUL, no lone surrogate
    (``os.fsdecode``'s stand-in for bytes that are not UTF-8)."""
    if "\0" in value:
        raise PolicyError(f"{where}: {shown(value)} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PolicyError(
            f"{where}: {shown(value)} is not UTF-8 text; a manifest cannot carry it"
        ) from None
    return value


def _literal(texts: Sequence[str]) -> list[str]:
    """``texts`` as the kubelet gives them back: it expands ``$(VAR)`` and ``$$`` in a
    container's command, args and env values, and ``$$`` is its escape for a ``$``."""
    return [text.replace("$", "$$") for text in texts]


def _check_file_name(file_name: object) -> None:
    if (
        not isinstance(file_name, str)
        or not file_name
        or file_name in (".", "..")
        or "/" in file_name
        or not file_name.isprintable()
        or not file_name.isascii()
    ):
        raise PolicyError(
            f"seccomp_file_name: {shown(file_name)} is not a plain file name (no '/', "
            "printable ASCII)"
        )


def _listed(values: Sequence[object]) -> str:
    return "[" + ", ".join(json.dumps(v) if isinstance(v, str) else str(v) for v in values) + "]"


class _Builder:
    """The pieces of one manifest, and what could not go into them."""

    def __init__(self, policy: Policy, run: RunSettings, name: str) -> None:
        self.policy = policy
        self.run = run
        self.name = name
        self.unexpressed: list[str] = []
        self.notes: list[str] = []
        self._rlimits()
        self._confinement_unexpressed()
        self._others()

    def lost(self, field: str, value: str, why: str) -> None:
        self.unexpressed.append(f"{field} = {value} ({why})")

    def note(self, text: str) -> None:
        self.notes.append(text)

    # --- the container's securityContext ------------------------------------------------------

    def security_context(self) -> dict[str, Any]:
        sec = self.policy.security
        context: dict[str, Any] = {"privileged": False}
        kept = sec.keep_caps.names()  # type: ignore[union-attr]
        if sec.drop_all_caps:
            capabilities: dict[str, Any] = {"drop": ["ALL"]}
            if kept:
                capabilities["add"] = sorted(kept)
            context["capabilities"] = capabilities
        else:
            self.lost(
                "security.drop_all_caps",
                "false",
                "the program would keep hardexec's own capabilities, while the container gets "
                "the runtime's default set",
            )
        uid = sec.identity.uid
        if kept and uid is not None and uid != 0:
            sysctl = (
                "; the pod sysctl net.ipv4.ip_unprivileged_port_start does what "
                "NET_BIND_SERVICE would"
                if "NET_BIND_SERVICE" in kept
                else ""
            )
            self.lost(
                "security.keep_caps",
                _listed(sorted(kept)),
                f"for uid {uid} hardexec raises them as ambient capabilities, which Kubernetes "
                "has not: a program that is not root holds them only through file capabilities, "
                f"and not at all without privilege escalation{sysctl}",
            )
        elif kept and uid is None:
            self.note(
                f"the kept capabilities ({', '.join(sorted(kept))}) are effective only if the "
                "image runs the program as root: Kubernetes has no ambient capabilities"
            )
        self._no_new_privs(context, kept)
        self._identity(context)
        return context

    def _no_new_privs(self, context: dict[str, Any], kept: list[str]) -> None:
        sec = self.policy.security
        c = self.policy.confinement
        # hardexec implies no_new_privs when it confines (a seccomp filter or Landlock rules)
        # a program that does not hold CAP_SYS_ADMIN: the kernel refuses either without one or
        # the other. Decided from the container's set, never from this process's own (the
        # same command would give another manifest under another exporter): the container
        # holds SYS_ADMIN only when drop_all_caps keeps it, as a runtime's default set has none.
        confining = c is not None and (c.syscalls is not None or c.landlock)
        holds_sys_admin = sec.drop_all_caps and "SYS_ADMIN" in kept
        implied = confining and not sec.no_new_privs and not holds_sys_admin
        if not (sec.no_new_privs or implied):
            why = (
                "the container keeps SYS_ADMIN, so hardexec does not imply it for the syscall "
                "filter or Landlock rules either"
                if confining
                else "set-user-ID and file-capability programs may gain privileges, as under "
                "hardexec"
            )
            self.note(
                f"allowPrivilegeEscalation is not written (the policy does not set "
                f"no_new_privs): {why}"
            )
            return
        if holds_sys_admin:  # and no_new_privs asked for in so many words
            self.lost(
                "security.no_new_privs",
                "true",
                "not written as allowPrivilegeEscalation: false next to an added SYS_ADMIN: "
                "the Kubernetes API has allowPrivilegeEscalation always true for a container "
                "with CAP_SYS_ADMIN, which can gain back what no_new_privs withholds",
            )
            return
        context["allowPrivilegeEscalation"] = False
        if implied:
            self.note(
                "allowPrivilegeEscalation is false: the policy does not set no_new_privs, but "
                "hardexec implies it for a syscall filter or Landlock rules over a program "
                "without SYS_ADMIN, and the container holds none"
            )

    def _identity(self, context: dict[str, Any]) -> None:
        sec = self.policy.security
        ident = sec.identity
        if ident.uid is not None:
            context["runAsUser"] = ident.uid
            context["runAsNonRoot"] = ident.uid != 0
            if not _is_number(sec.user):
                self.note(
                    f"user {sec.user!r} is uid {ident.uid} on this machine; the image's "
                    "/etc/passwd may differ"
                )
        else:
            self.note(
                "the policy names no user: the program runs as the image's USER (hardexec "
                "would run it as its own caller)"
            )
        if ident.gid is not None:
            context["runAsGroup"] = ident.gid
            if sec.group is not None and not _is_number(sec.group):
                self.note(
                    f"group {sec.group!r} is gid {ident.gid} on this machine; the image's "
                    "/etc/group may differ"
                )
            elif sec.group is None and not _is_number(sec.user):
                self.note(
                    f"the primary group of user {sec.user!r} is gid {ident.gid} on this "
                    "machine; the image's /etc/passwd may differ"
                )
        if ident.uid == 0 and sec.drop_all_caps:
            self.lost(
                "security.drop_all_caps",
                "true for uid 0",
                "hardexec also locks SECBIT_NOROOT for a root program, so that exec never gives "
                "root its capabilities back; Kubernetes cannot set securebits",
            )

    def pod_security_context(self) -> dict[str, Any]:
        sec = self.policy.security
        groups = sec.identity.groups
        if groups is None:
            return {}
        if sec.supplementary_groups is not None and any(
            not _is_number(g) for g in sec.supplementary_groups
        ):
            self.note(
                "the supplementary groups' names were resolved on this machine; the image's "
                "/etc/group may differ"
            )
        # Strict: exactly these groups, as hardexec sets them; the default (Merge) would add
        # those the image's /etc/group gives the user. The field is behind the
        # SupplementalGroupsPolicy gate (1.31 on, off by default until 1.33), and an API server
        # with the gate off drops it without a word.
        self.note(
            "supplementalGroupsPolicy is Strict (exactly the policy's groups, none from the "
            "image's /etc/group): it needs Kubernetes 1.33+ (or the SupplementalGroupsPolicy "
            "gate on 1.31/1.32); where the gate is off, the API server drops the field and the "
            "image's groups are added"
        )
        return {"supplementalGroups": list(groups), "supplementalGroupsPolicy": "Strict"}

    # --- resources, time, environment -----------------------------------------------------

    def limits(self) -> dict[str, str]:
        cg = self.policy.cgroups
        if cg is None:
            return {}
        limits: dict[str, str] = {}
        if cg.cpu is not None and cg.cpu.quota is not None:
            quota, period = cg.cpu.quota, cg.cpu.period
            milli, rest = divmod(quota * 1000, period)
            if milli < _MIN_MILLICPU:
                # The kubelet's MilliCPUToQuota raises any quota below 1 ms a period to 1 ms:
                # written as asked, the limit would read as less than what runs.
                least = limits["cpu"] = f"{_MIN_MILLICPU}m"
                self.lost(
                    "cgroups.cpu.quota",
                    str(quota),
                    f"{quota} µs per {period} µs is {quota * 1000 / period:g} millicores; "
                    f"the kubelet raises a CPU limit below {least} to {least} (1 ms per 100 ms "
                    f"period), so the limit written is {least}, more than asked",
                )
            else:
                limits["cpu"] = f"{milli}m"
            if rest and milli >= _MIN_MILLICPU:
                self.note(
                    f"cgroups.cpu {quota}/{period} µs is {quota * 1000 / period:g} millicores; "
                    f"the limit is rounded down to {milli}m"
                )
            self.note(
                "the CPU limit is a CFS quota: a node whose kubelet has cpuCFSQuota: false "
                "enforces no CPU limit"
            )
            if period != _K8S_CPU_PERIOD:
                self.note(
                    f"cgroups.cpu.period {period} µs: the kubelet applies the ratio with its own "
                    "CFS period (100 ms unless cpuCFSQuotaPeriod says otherwise)"
                )
        if cg.memory is not None:
            limits["memory"] = _quantity(cg.memory)
        if cg.pids is not None:
            self.lost(
                "cgroups.pids",
                str(cg.pids),
                "a container has no pids limit of its own; the kubelet's podPidsLimit is one "
                "per node",
            )
        if not limits and cg.pids is None:
            self.note(
                "cgroups: a container always has a cgroup of its own, killed as a whole with it"
            )
        if cg.keep_at_exit:
            self.lost(
                "cgroups.keep_at_exit",
                "true",
                "what a container leaves running ends with it",
            )
        return limits

    def deadline(self) -> int | None:
        timeout = self.run.timeout
        return None if timeout is None else max(1, math.ceil(timeout))

    def env(self) -> list[dict[str, str]]:
        out = []
        for key, value in self.run.env:
            text = _text(value, f"run.env.{key}")
            out.append({"name": _text(key, "run.env"), "value": _literal([text])[0]})
        return out

    def pod_spec(self, container: dict[str, Any], *, job: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            # Least privilege: a program that does not ask for the API gets no token for it,
            # and no variables naming the cluster's services in its environment.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        }
        self.note(
            "automountServiceAccountToken and enableServiceLinks are false: no API token and no "
            "variables for the namespace's services, which the program did not have under "
            "hardexec either (the kubelet still sets the API server's own, "
            "KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and KUBERNETES_PORT*)"
        )
        deadline = self.deadline()
        if deadline is not None and not job:  # a Job's deadline is the Job's own
            spec["activeDeadlineSeconds"] = deadline
        if self.run.timeout is not None and deadline is not None:
            self._deadline_notes(spec, self.run.timeout, deadline)
        self._namespaces(spec)
        pod_context = self.pod_security_context()
        if pod_context:
            spec["securityContext"] = pod_context
        spec["containers"] = [container]
        return spec

    def _deadline_notes(self, spec: dict[str, Any], timeout: float, deadline: int) -> None:
        grace = _DEFAULT_GRACE if self.run.kill_after is None else self.run.kill_after
        whole = spec["terminationGracePeriodSeconds"] = math.ceil(grace)
        rounded = (
            f" (activeDeadlineSeconds is whole seconds: {deadline}, rounded up)"
            if deadline != timeout
            else ""
        )
        if whole < _KUBELET_LEAST_GRACE:
            given = (
                f"{_KUBELET_LEAST_GRACE} s (the kubelet raises a grace below "
                f"{_KUBELET_LEAST_GRACE} s to it; hardexec's is {grace:g} s)"
            )
        elif whole != grace:
            given = f"{whole} s ({grace:g} s rounded up to whole seconds)"
        else:
            given = f"{whole} s"
        self.note(
            f"run.timeout {timeout:g} s{rounded}: past the deadline the pod fails "
            f"(DeadlineExceeded) instead of exiting 124; its grace after SIGTERM is {given}"
        )

    def _namespaces(self, spec: dict[str, Any]) -> None:
        c = self.policy.confinement
        spaces = c.namespaces if c is not None else ()
        if "net" in spaces:
            spec["hostNetwork"] = False
            self.lost(
                "confinement.namespaces",
                '["net"]',
                "a pod has a network namespace of its own, but with the pod network's "
                "interface, not only a loopback; a NetworkPolicy denying all traffic comes "
                "closest",
            )
        if "pid" in spaces:
            spec["hostPID"] = False
            spec["shareProcessNamespace"] = False
        if "ipc" in spaces:
            spec["hostIPC"] = False
        if "uts" in spaces and c is not None and c.hostname is None:
            spec["hostname"] = self.name  # a uts namespace of its own, named as the pod
        elif c is not None and c.hostname is not None:
            if is_dns_label(c.hostname):
                spec["hostname"] = c.hostname
            else:
                self.lost(
                    "confinement.hostname",
                    json.dumps(c.hostname),
                    "a pod's hostname must be a DNS-1123 label (lowercase letters, digits and "
                    "'-', at most 63)",
                )
        missing = [n for n in ("pid", "ipc", "uts", "net") if n not in spaces]
        if missing:
            net = " (the network one with the pod network's interface)" if "net" in missing else ""
            self.note(
                f"the pod has {_and(missing)} namespaces of its own, which the policy does not "
                f"ask for{net}"
            )

    # --- what has no place in a manifest --------------------------------------------------

    def _rlimits(self) -> None:
        from .policy import RLIMIT_FIELDS

        r = self.policy.rlimits
        for field, (resource, _) in RLIMIT_FIELDS.items():
            value = getattr(r, field)
            if value is not None:
                self.lost(
                    f"rlimits.{field}",
                    str(value),
                    f"Kubernetes sets no RLIMIT_{resource}: the container runtime's defaults apply",
                )
        if r.disable_core_dumps:
            self.lost(
                "rlimits.disable_core_dumps",
                "true",
                "Kubernetes sets no RLIMIT_CORE: the container runtime's defaults apply",
            )

    def _confinement_unexpressed(self) -> None:
        c = self.policy.confinement
        if c is None:
            return
        if c.fs:
            self.lost(
                "confinement.fs",
                _listed([f"{rule.path}:{rule.access}" for rule in c.fs]),
                "Kubernetes has no Landlock: the container sees its whole filesystem; "
                "readOnlyRootFilesystem and volumes mounted read-only come closest",
            )
            if not c.fs_dependencies:
                self.lost(
                    "confinement.fs_dependencies",
                    "false",
                    "it narrows the Landlock rules, which Kubernetes has not",
                )
        for field in ("tcp_bind", "tcp_connect"):
            ports = getattr(c, field)
            if ports:
                self.lost(
                    f"confinement.{field}",
                    _listed(ports),
                    "Kubernetes has no Landlock: a NetworkPolicy filters traffic between pods, "
                    "not the ports a program binds or connects to",
                )
        if c.umask is not None:
            self.lost(
                "confinement.umask",
                f'"{c.umask:03o}"',
                "Kubernetes sets no umask: the image's and the runtime's apply",
            )
        if c.best_effort:
            self.note(
                "confinement.best_effort: the runtime fails the container when it cannot apply "
                "the seccomp profile (stricter than warning)"
            )

    def _others(self) -> None:
        policy, run = self.policy, self.run
        if policy.die_with_parent:
            self.lost(
                "die_with_parent",
                "true",
                "a container has no launcher to outlive; it ends when its pod does",
            )
        if policy.cgroup_parent is not None:
            self.lost(
                "cgroup_parent",
                json.dumps(os.fspath(policy.cgroup_parent)),
                "the kubelet chooses the pod's cgroup",
            )
        if policy.cgroups is not None and not policy.cgroups.fail_on_error:
            self.note(
                "cgroups.fail_on_error = false: the pod's limits are always enforced "
                "(stricter than best effort)"
            )
        if run.env_policy != "inherit":
            value = (
                json.dumps(run.env_policy)
                if isinstance(run.env_policy, str)
                else _listed(run.env_policy)
            )
            self.lost(
                "run.env_policy",
                value,
                "the image's own ENV still applies; only run.env is set over it",
            )
        if run.max_output is not None:
            self.lost(
                "run.max_output",
                str(run.max_output),
                "the kubelet rotates a container's log by size, but passes all of it",
            )

    # --- seccomp --------------------------------------------------------------------------

    def seccomp(self, f: SyscallFilter) -> dict[str, Any]:
        """The OCI profile of ``f``: what hardexec's compiled filter decides, call by call."""
        from .confine import groups, seccomp, syscalls

        numbers = syscalls.table()  # PolicyError where hardexec has none
        arch = syscalls.native_arch()
        by_number: dict[int, list[str]] = {}
        for call, nr in numbers.items():
            by_number.setdefault(nr, []).append(call)
        # hardexec's own expansion, ordering and precedence of the rules (the compiler's).
        deny, arg_rules = seccomp._denials(f, numbers)
        allowed = seccomp._allowed(f, numbers, deny)
        self._skipped(f, numbers, groups)

        def names(nrs: object) -> list[str]:
            return sorted(n for nr in nrs for n in by_number[nr])  # type: ignore[attr-defined]

        def action(verdict: Any) -> dict[str, Any]:
            if verdict.kill:
                return {"action": "SCMP_ACT_KILL_PROCESS"}
            return {"action": "SCMP_ACT_ERRNO", "errnoRet": verdict.errno}

        profile: dict[str, Any]
        rules: list[dict[str, Any]] = []
        if allowed is None:
            profile = {"defaultAction": "SCMP_ACT_ALLOW"}
        else:
            # What is not allowed gets ENOSYS, as hardexec answers it.
            profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": _ENOSYS}
        profile["architectures"] = [_ARCHITECTURES[arch]]
        conditional = {
            nr: checks
            for nr, (checks, _) in arg_rules.items()
            if nr not in deny and (allowed is None or nr in allowed)
        }
        if allowed is not None:
            plain = sorted(nr for nr in allowed if nr not in conditional)
            if plain:
                rules.append({"names": names(plain), "action": "SCMP_ACT_ALLOW"})
        by_verdict: dict[tuple[bool, int], list[int]] = {}
        for nr, verdict in deny.items():
            if allowed is not None and not verdict.kill and verdict.errno == _ENOSYS:
                continue  # the default action says it already
            by_verdict.setdefault((verdict.kill, verdict.errno), []).append(nr)
        for (kill, errno_), nrs in sorted(by_verdict.items()):
            verdict = seccomp.Verdict(errno_, kill=kill)
            rules.append({"names": names(nrs), **action(verdict)})
        for nr, checks in sorted(conditional.items()):
            verdict = arg_rules[nr][1]
            if allowed is not None:
                # Allowed only when none of the flags is set (every check's argument clear).
                clear = [_masked(arg, flags, 0) for arg, flags in checks]
                rules.append({"names": names([nr]), "action": "SCMP_ACT_ALLOW", "args": clear})
            # Any one flag refuses the call: one rule per flag (a rule's args must all match).
            for arg, flags in checks:
                for bit in _bits(flags):
                    rules.append(
                        {"names": names([nr]), **action(verdict), "args": [_masked(arg, bit, bit)]}
                    )
        profile["syscalls"] = rules
        self._too_new(f, rules, allowed is None)
        self.note(
            f"the seccomp profile names {_ARCHITECTURES[arch]} only: a call of another ABI "
            "(i386's int 0x80, x32) kills the calling thread under runc (libseccomp's "
            "bad-architecture action), where hardexec's own filter kills the process"
        )
        if allowed is not None:
            self.note(
                "an allow-list profile also judges the runtime's own last steps between loading "
                "it and the exec (runc's Go runtime makes a few calls there): a container that "
                "fails to start with it needs those calls allowed too"
            )
        if f.default and allowed is None:
            self.lost(
                "confinement.syscalls.default",
                "true",
                "hardexec also answers ENOSYS to syscall numbers beyond this machine's table, "
                f"{max(numbers.values()) + 1} and up; a profile names calls, so a newer "
                "kernel's calls run",
            )
        return profile

    def _too_new(self, f: SyscallFilter, rules: list[dict[str, Any]], deny_list: bool) -> None:
        """Say which of the profile's rules an older node's runtime skips (the names in
        :data:`NEWER_THAN_LIBSECCOMP_2_5`)."""
        from .confine import groups

        if not deny_list:
            named = sorted({n for r in rules for n in r["names"] if n in NEWER_THAN_LIBSECCOMP_2_5})
            if named:
                # A skipped rule leaves the call to the default action: ENOSYS, still refused.
                self.note(
                    f"a node whose libseccomp does not know {', '.join(named)} (2.5 does not) "
                    "skips the profile's rules naming them: there they get the default ENOSYS"
                )
            return
        denied = {
            n
            for r in rules
            if r["action"] != "SCMP_ACT_ALLOW"
            for n in r["names"]
            if n in NEWER_THAN_LIBSECCOMP_2_5
        }
        # Whose rule it is: the policy's deny-list, or the default list (@default-deny).
        own = set()
        for entry in f.deny:
            call = entry.partition(":")[0]
            members = groups.expand(call)[0] if call.startswith("@") else (call,)
            own |= {m.partition(":")[0] for m in members}
        for field, names in (
            ("confinement.syscalls.deny", sorted(denied & own)),
            ("confinement.syscalls.default", sorted(denied - own)),
        ):
            if names:
                self.lost(
                    field,
                    _listed(names),
                    "denied by number under hardexec; a node whose libseccomp does not know "
                    "them (2.5 does not) skips these rules: runc and crun ignore names they do "
                    "not know, and the calls run",
                )

    def _skipped(self, f: SyscallFilter, numbers: dict[str, int], groups: Any) -> None:
        """Names this machine's table lacks: those the policy gives itself are said as
        unexpressed, a group's members (another architecture's calls) as a note."""
        named, grouped = [], []
        entries = [*(f.allow or ()), *f.deny, *(["@default-deny"] if f.default else [])]
        if f.allow is not None:
            entries.append("@default")
        for entry in entries:
            call = entry.partition(":")[0]
            if call.startswith("@"):
                members = [m.partition(":")[0] for m in groups.expand(call)[0]]
                grouped += [m for m in members if m not in numbers]
            elif call not in numbers:
                named.append(call)
        if named:
            self.lost(
                "confinement.syscalls",
                _listed(sorted(set(named))),
                "not in this machine's syscall table, so left out of the profile as hardexec "
                "leaves them out here",
            )
        if grouped:
            self.note(
                "the groups' calls this architecture does not have are left out of the "
                f"profile, as hardexec leaves them out: {', '.join(sorted(set(grouped)))}"
            )


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _masked(index: int, mask: int, value: int) -> dict[str, Any]:
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def _bits(flags: int) -> list[int]:
    return [1 << bit for bit in range(flags.bit_length()) if flags >> bit & 1]


def _is_number(value: object) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdecimal())


def _quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: the largest binary unit that is exact (``256Mi``)."""
    for unit, factor in _QUANTITY_UNITS:
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --- YAML ----------------------------------------------------------------------------------

# Keys written bare: what no YAML 1.1 or 1.2 reader takes for anything but a string.
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
# YAML 1.1's booleans and null (any case), which a bare key would be read as.
_YAML_WORDS = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"})


def to_yaml(obj: object) -> str:
    """``obj`` (dicts, lists, str, int, float, bool, None) as a YAML document.

    Strings are written double-quoted and in ASCII, with JSON's escapes (a JSON string is a
    YAML one) and ``\\UXXXXXXXX`` for a character beyond the BMP, so no value is ever read as
    another type; a float always has a dot (YAML 1.1 reads ``1e+16`` as a string, ``1.0e+16``
    as a float); keys are bare when that is unambiguous. Dict keys keep their order.

    Raises:
        ValueError: a value of another type, a non-string key, a float that is not finite, or
            text that is not Unicode (a lone surrogate).
    """
    lines: list[str] = []
    _emit(obj, 0, lines, "")
    return "\n".join(lines) + "\n"


def _scalar(value: object, where: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'the document'}: {value!r} is not a finite number")
        text = repr(value)
        # YAML 1.1 reads a float only with a dot in it: 1e+16 would be the string "1e+16".
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where or 'the document'}: {shown(value)} is not Unicode") from None
        # JSON's escapes are YAML's too, but not its surrogate pairs for what is beyond the
        # BMP (libyaml, hence kubectl, refuses them): every character past ~ is escaped here,
        # with \U for those, so the text is ASCII and printable (YAML has no raw DEL either).
        return _NOT_ASCII.sub(_escaped, json.dumps(value, ensure_ascii=False))
    raise ValueError(f"{where or 'the document'}: {shown(value)} cannot be written in YAML")


_NOT_ASCII = re.compile(r"[^\x00-\x7e]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\U{code:08x}" if code > 0xFFFF else f"\\u{code:04x}"


def _key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise ValueError(f"{where or 'the document'}: key {shown(key)} is not a string")
    if _BARE_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return _scalar(key, where)


def _emit(obj: object, indent: int, lines: list[str], where: str) -> None:
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            lines.append(pad + "{}")
        for key, value in obj.items():
            inner = f"{where}.{key}" if where else str(key)
            head = f"{pad}{_key(key, inner)}:"
            if isinstance(value, dict | list) and value:
                lines.append(head)
                _emit(value, indent + 2, lines, inner)
            else:
                lines.append(f"{head} {_inline(value, inner)}")
    elif isinstance(obj, list):
        if not obj:
            lines.append(pad + "[]")
        for index, item in enumerate(obj):
            inner = f"{where}[{index}]"
            if isinstance(item, dict | list) and item:
                # The item's first line goes after the dash; the rest line up under it.
                sub: list[str] = []
                _emit(item, indent + 2, sub, inner)
                lines.append(f"{pad}- {sub[0][indent + 2 :]}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_inline(item, inner)}")
    else:
        lines.append(pad + _scalar(obj, where))


def _inline(value: object, where: str) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value, where)
