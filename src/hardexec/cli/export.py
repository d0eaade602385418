"""``hardexec export k8s [OPTIONS] --image IMAGE -- COMMAND [ARG...]``: a policy as a manifest.

It takes the ``run`` options (``--policy``, ``--profile``, ``--drop-all-caps``, ``--user``,
``--memory``, ``--timeout``, ...) and writes, on stdout, the Kubernetes Pod (or, with
``--kind job``, the Job) that runs COMMAND as close to that policy as a pod can say
(:mod:`hardexec.k8s`); the notes on how the pod differs lead it as YAML comments. A policy that
filters syscalls needs ``--seccomp-out FILE``: its OCI seccomp profile is written there, and
the manifest names it as ``hardexec/<FILE's name>`` under the kubelet's seccomp directory.

What the manifest cannot express is said on stderr, one line each::

    hardexec: export: not expressible in Kubernetes: rlimits.max_open_files = 256 (...)

and with ``--strict`` (which also asks, as for ``run``, that capability steps fail closed, as
a container runtime's do) any such line refuses the export: exit 125, nothing on stdout and
no profile written.

Exit status: 0; 2 for a usage mistake (no ``--image``, a bad ``--name`` or ``--kind``, a
filter without ``--seccomp-out``, a ``--seccomp-out`` naming a directory or anything but a
regular file — a device node, a symbolic link, a fifo: the profile never replaces one —, an
option that only means something for a run here); 125 for a bad policy (as ``run`` says it),
a profile or manifest that cannot be written, or ``--strict`` with something unexpressed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys

from .options import EXIT_FAILURE, EXIT_USAGE, fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Sequence
    from typing import Any, NoReturn

__all__ = ["add_parser", "export_command"]

# Options of `run` that are about a run on this machine: a manifest has nothing to say for them.
_RUN_ONLY = {
    "usage": "--usage",
    "json_result": "--json-result",
    "keep_leftovers": "--keep-leftovers",
    "verify": "--verify",
}


def add_parser(sub: Any) -> ArgumentParser:
    """Add ``export`` (and its target ``k8s``) to the ``hardexec`` subcommands ``sub``."""
    from .parser import add_run_options

    exporting: ArgumentParser = sub.add_parser(
        "export",
        help="write a policy as another system's configuration (k8s: a Pod or Job manifest)",
        usage="hardexec export k8s [OPTIONS] --image IMAGE [--kind pod|job] [--name NAME] "
        "[--seccomp-out FILE] -- COMMAND [ARG...]",
    )
    targets = exporting.add_subparsers(
        dest="target", metavar="TARGET", parser_class=type(exporting)
    )
    k8s: ArgumentParser = targets.add_parser(
        "k8s",
        help="a Kubernetes Pod or Job manifest (YAML on stdout)",
        usage="hardexec export k8s [OPTIONS] --image IMAGE [--kind pod|job] [--name NAME] "
        "[--seccomp-out FILE] [--strict] -- COMMAND [ARG...]",
        description="Write the Kubernetes Pod (or Job) that runs COMMAND as close to the "
        "policy of the run options as a pod can say: capabilities, allowPrivilegeEscalation, "
        "the numeric identity, a seccomp profile, memory and CPU limits, the deadline. What it "
        "cannot say is printed on stderr, one line each. Exit status 0; 2 usage; 125 a bad "
        "policy, or --strict with something not expressible.",
    )
    out = k8s.add_argument_group("the manifest")
    out.add_argument("--image", metavar="IMAGE", help="the container image (required)")
    out.add_argument("--kind", metavar="KIND", default="pod", help="pod (the default) or job")
    out.add_argument(
        "--name",
        metavar="NAME",
        help="the pod's (job's) and container's name, a DNS-1123 label (default: from "
        "COMMAND's basename)",
    )
    out.add_argument(
        "--seccomp-out",
        metavar="FILE",
        help="write the syscall filter's OCI seccomp profile to FILE (needed when the policy "
        "filters syscalls); the manifest names it hardexec/<FILE's name>",
    )
    add_run_options(k8s)
    for action in k8s._actions:
        if action.dest in _RUN_ONLY:  # refused with a reason if given: not listed
            action.help = argparse.SUPPRESS
        if action.dest == "strict":  # run's option, read here for the export too
            action.help = (
                "refuse (exit 125, nothing written) when anything is not expressible; as for "
                "run, capability steps fail closed too"
            )
    return exporting


def _usage(message: str) -> NoReturn:
    print(f"hardexec: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _check_options(ns: Namespace) -> None:
    from ..k8s import KINDS, is_dns_label

    for dest, option in _RUN_ONLY.items():
        if getattr(ns, dest):
            _usage(f"export: {option} is about a run on this machine; a manifest has no use for it")
    if ns.image is None:
        _usage("export: --image is required (the container image, e.g. --image python:3.12)")
    image = ns.image
    if not image or not image.isprintable() or " " in image:
        _usage(f"export: --image: {image!r} is not an image reference")
    if ns.kind not in KINDS:
        _usage(f"export: --kind: {ns.kind!r} is not one of {', '.join(KINDS)}")
    if ns.name is not None and not is_dns_label(ns.name):
        _usage(
            f"export: --name: {ns.name!r} is not a DNS-1123 label (lowercase letters, digits "
            "and '-', at most 63, starting and ending with a letter or digit)"
        )
    if ns.cwd is not None and not ns.cwd.startswith("/"):
        _usage(f"export: --cwd: {ns.cwd!r} is not absolute (it is a directory in the image)")


def export_command(ns: Namespace) -> int:
    """Print the manifest the options describe (``hardexec export k8s``).

    Args:
        ns: the parsed command line of ``hardexec export``.

    Returns:
        0; 2 for a usage mistake; 125 for a bad policy, a profile that cannot be written, or
        ``--strict`` with something not expressible.
    """
    if ns.target is None:
        _usage("export: say what to export to: hardexec export k8s [OPTIONS] -- COMMAND")
    _check_options(ns)
    # --cwd names a directory of the image: `run` would check it on this machine.
    working_dir, ns.cwd = ns.cwd, None
    from ..errors import PolicyError
    from ..k8s import export, to_yaml
    from .options import request

    req = request(ns)
    doc = req.policy_file()
    confinement = doc.policy.confinement
    filters = confinement is not None and confinement.syscalls is not None
    if filters and ns.seccomp_out is None:
        _usage(
            "export: --seccomp-out: the policy filters syscalls; give --seccomp-out FILE for its "
            "seccomp profile (the manifest names it)"
        )
    if not filters and ns.seccomp_out is not None:
        _usage(
            f"export: --seccomp-out {ns.seccomp_out!r}: the policy filters no syscalls, so there "
            "is no profile to write"
        )
    if ns.seccomp_out is not None:
        _check_profile_path(ns.seccomp_out)
    file_name = os.path.basename(ns.seccomp_out) if ns.seccomp_out is not None else None
    try:
        result = export(
            doc,
            req.argv,
            image=ns.image,
            kind=ns.kind,
            name=ns.name,
            seccomp_file_name=file_name,
            working_dir=working_dir,
        )
        text = to_yaml(result.manifest)
    except (PolicyError, ValueError) as err:
        where = str(err).replace("seccomp_file_name", "--seccomp-out").replace("argv", "COMMAND")
        fail(f"export: {where}")
    for item in result.unexpressed:
        print(f"hardexec: export: not expressible in Kubernetes: {item}", file=sys.stderr)
    if ns.strict and result.unexpressed:
        return EXIT_FAILURE
    # The profile is made whole beside its path first, and takes the path only once the
    # manifest naming it is out: a manifest that cannot be written leaves no profile behind.
    temp = None
    if result.seccomp_profile is not None:
        temp = _write_profile(ns.seccomp_out, result.seccomp_profile)
    try:
        _write_manifest(req.source, result.notes, text)
        if temp is not None:
            _install_profile(temp, ns.seccomp_out)
            temp = None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    return 0


def _write_manifest(source: str, notes: Sequence[str], text: str) -> None:
    head = [f"# hardexec export k8s, from {source}"]
    head += [f"# note: {note}" for note in notes]
    try:
        sys.stdout.write("\n".join(head) + "\n" + text)
        sys.stdout.flush()
    except BrokenPipeError:  # `hardexec export k8s ... | head`: the reader left, which is fine
        _stdout_to_devnull()
    except OSError as err:  # `> /dev/full`, a full disk
        _stdout_to_devnull()
        fail(f"export: the manifest cannot be written to stdout: {err.strerror or err}")


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null: what is still buffered would fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# What a path may name besides a regular file, as lstat says it (a link is not followed).
_NOT_REGULAR = (
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def _not_regular(path: str) -> str | None:
    """What ``path`` is when it exists and is not a regular file (``"fifo"``, ...), else None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # absent (or unreadable): writing it says what is wrong, if anything
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "special file")


def _check_profile_path(path: str) -> None:
    """Refuse a ``--seccomp-out`` the profile must not replace: the profile is renamed over
    the path, which would make ``/dev/null`` a regular file, or a symbolic link one that no
    longer points where it did."""
    if not path:
        _usage("export: --seccomp-out: the path is empty; give the profile's file name")
    if path.endswith("/") or os.path.basename(path) in (".", ".."):
        _usage(f"export: --seccomp-out: {path!r} names a directory; give the profile's file name")
    kind = _not_regular(path)
    if kind is not None:
        _usage(f"export: --seccomp-out: {path!r} is a {kind}, not a regular file to replace")


def _write_profile(path: str, profile: dict[str, Any]) -> str:
    """The profile written whole to a temporary file beside ``path``: its name.

    A node given half a profile fails the pod, so the profile takes its path by a rename
    (:func:`_install_profile`) or not at all.
    """
    import json
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".hardexec-seccomp-", dir=directory)
    except OSError as err:
        fail(f"export: --seccomp-out: {path!r}: {err.strerror or err}")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2)
            f.write("\n")
        os.chmod(temp, 0o644)  # a profile is no secret; the node's copy is readable anyway
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if not isinstance(err, OSError):
            raise
        fail(f"export: --seccomp-out: {path!r}: {err.strerror or err}")
    return temp


def _install_profile(temp: str, path: str) -> None:
    """Rename ``temp`` over ``path``, once more making sure that replaces a regular file (the
    path was checked before the export, but the manifest's writing may have taken long)."""
    kind = _not_regular(path)
    if kind is not None:
        _usage(f"export: --seccomp-out: {path!r} is a {kind}, not a regular file to replace")
    try:
        os.replace(temp, path)
    except OSError as err:
        fail(f"export: --seccomp-out: {path!r}: {err.strerror or err}")
