"""``hardexec export k8s``, run as a reader runs it: the manifest on stdout is the one
``hardexec.k8s.export`` makes of the same policy, and one the Kubernetes client's models take
as it is; what a pod cannot say is one line each on stderr; mistakes exit 2 (usage) or 125
(policy, --strict) with nothing written; and examples/export_k8s.sh shows what it says."""

import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from hardexec import k8s, policyfile
from hardexec._record import replace
from helpers import run_example, run_text

HARDEXEC = [sys.executable, "-m", "hardexec"]
PREFIX = "hardexec: export: not expressible in Kubernetes: "
ROOT = Path(__file__).resolve().parents[2]


def hx(*args, **kwargs):
    return run_text([*HARDEXEC, "export", "k8s", *args], **kwargs)


def manifest_of(stdout: str) -> dict:
    """The YAML document on stdout, checked by the client's own model (an unknown key would be
    dropped by it, a value of the wrong type changed)."""
    data = yaml.safe_load(stdout)
    with ApiClient() as client:
        model = client._ApiClient__deserialize(data, {"Pod": "V1Pod", "Job": "V1Job"}[data["kind"]])
        assert client.sanitize_for_serialization(model) == data
    return data


def test_the_strict_profile_as_the_library_makes_it(tmp_path):
    out = tmp_path / "strict.json"
    result = hx(
        "--profile",
        "strict",
        "--image",
        "alpine:3",
        "--seccomp-out",
        str(out),
        "--",
        "sh",
        "-c",
        "echo hi",
    )
    assert result.returncode == 0, result.stderr
    expected = k8s.export(
        policyfile.profile("strict"),
        ["sh", "-c", "echo hi"],
        image="alpine:3",
        seccomp_file_name="strict.json",
    )
    assert manifest_of(result.stdout) == expected.manifest
    assert json.loads(out.read_text()) == expected.seccomp_profile
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert result.stderr.splitlines() == [PREFIX + line for line in expected.unexpressed]
    assert expected.unexpressed  # the strict profile has rlimits and a network namespace
    # The notes lead the manifest as comments.
    head = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert head == [
        "# hardexec export k8s, from --profile strict",
        *(f"# note: {note}" for note in expected.notes),
    ]
    assert not list(tmp_path.glob(".hardexec-seccomp-*"))  # no temporary file left


def test_options_over_a_policy_file(tmp_path):
    policy = tmp_path / "web.toml"
    policy.write_text(
        'version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = ["NET_BIND_SERVICE"]\n'
        'no_new_privs = true\nuser = "nobody"\n[cgroups]\nmemory = 268435456\n'
        '[run]\nenv = { GREETING = "hello" }\ntimeout = 30.0\n'
    )
    policy.chmod(0o600)
    result = hx(
        "--policy",
        str(policy),
        "--cpus",
        "0.25",
        "--image",
        "python:3.12",
        "--name",
        "web",
        "--cwd",
        "/srv",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
    )
    assert result.returncode == 0, result.stderr
    pod = manifest_of(result.stdout)
    [c] = pod["spec"]["containers"]
    nobody = pwd.getpwnam("nobody")
    assert c["securityContext"]["runAsUser"] == nobody.pw_uid
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert c["resources"] == {"limits": {"cpu": "250m", "memory": "256Mi"}}
    assert c["env"] == [{"name": "GREETING", "value": "hello"}]
    assert (c["name"], c["workingDir"]) == ("web", "/srv")
    assert pod["metadata"]["name"] == "web"
    assert pod["spec"]["activeDeadlineSeconds"] == 30
    assert f"# note: user 'nobody' is uid {nobody.pw_uid} on this machine" in result.stdout
    assert result.stderr.startswith(PREFIX + 'security.keep_caps = ["NET_BIND_SERVICE"] (')


def test_a_job():
    result = hx(
        "--kind",
        "job",
        "--drop-all-caps",
        "--no-new-privs",
        "--timeout",
        "10m",
        "--image",
        "busybox",
        "--",
        "/bin/backup",
        "--all",
    )
    assert result.returncode == 0, result.stderr
    job = manifest_of(result.stdout)
    assert (job["kind"], job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (
        "Job",
        0,
        600,
    )
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["/bin/backup", "--all"]
    assert result.stderr == ""  # nothing lost: no rlimits, no Landlock, caps dropped


@pytest.mark.parametrize(
    "options", [["--syscalls", "default"], ["--drop-all-caps", "--keep-cap", "SYS_ADMIN"]]
)
def test_the_manifest_does_not_depend_on_the_exporters_capabilities(options, tmp_path):
    """allowPrivilegeEscalation is decided from the container's capabilities, not from those
    of the process exporting: as root and without CAP_SYS_ADMIN, the same manifest."""
    if os.geteuid() != 0 or not shutil.which("capsh"):
        pytest.skip("needs root and capsh to export once with CAP_SYS_ADMIN and once without")
    args = [*options, "--syscalls", "default", "--image", "x", "--name", "p", "--", "true"]
    outputs = []
    for drop in (False, True):
        out = tmp_path / str(drop) / "p.json"  # the same name: the manifest names it
        out.parent.mkdir()
        argv = [*HARDEXEC, "export", "k8s", *args[:-4], "--seccomp-out", str(out), *args[-4:]]
        if drop:
            argv = ["capsh", "--drop=cap_sys_admin", "--", "-c", shlex.join(argv)]
        result = run_text(argv)
        assert result.returncode == 0, result.stderr
        outputs.append((result.stdout, result.stderr, out.read_text()))
    assert outputs[0] == outputs[1]
    ctx = manifest_of(outputs[0][0])["spec"]["containers"][0]["securityContext"]
    assert ("allowPrivilegeEscalation" in ctx) == ("SYS_ADMIN" not in options)


def test_strict_refuses_anything_unexpressed_and_writes_nothing(tmp_path):
    out = tmp_path / "p.json"
    result = hx(
        "--strict",
        "--profile",
        "strict",
        "--nofile",
        "64",
        "--image",
        "alpine",
        "--seccomp-out",
        str(out),
        "--",
        "true",
    )
    assert result.returncode == 125
    assert result.stdout == ""
    assert not out.exists() and not list(tmp_path.iterdir())
    lines = result.stderr.splitlines()
    doc = policyfile.profile("strict")
    doc = replace(
        doc,
        policy=doc.policy.with_rlimits(replace(doc.policy.rlimits, max_open_files=64)),
    )
    expected = k8s.export(doc, ["true"], image="alpine", seccomp_file_name="p.json").unexpressed
    assert lines == [PREFIX + line for line in expected]
    assert PREFIX + "rlimits.max_open_files = 64 (" in result.stderr


def test_strict_passes_what_a_pod_says_whole():
    result = hx(
        "--strict",
        "--drop-all-caps",
        "--no-new-privs",
        "--memory",
        "64M",
        "--image",
        "alpine",
        "--",
        "true",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert manifest_of(result.stdout)["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "64Mi"}
    }


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--", "true"], 2, "hardexec: export: --image is required"),
        (["--image", "a b", "--", "true"], 2, "hardexec: export: --image: 'a b' is not an image"),
        (["--image", "x", "--name", "Web", "--", "true"], 2, "--name: 'Web' is not a DNS-1123"),
        (["--image", "x", "--kind", "cronjob", "--", "true"], 2, "--kind: 'cronjob' is not one"),
        (["--image", "x", "--syscalls", "default", "--", "true"], 2, "export: --seccomp-out:"),
        (["--image", "x", "--seccomp-out", "p.json", "--", "true"], 2, "filters no syscalls"),
        (["--image", "x", "--verify", "--", "true"], 2, "export: --verify is about a run"),
        (["--image", "x", "--usage", "--", "true"], 2, "export: --usage is about a run"),
        (["--image", "x", "--cwd", "srv", "--", "true"], 2, "--cwd: 'srv' is not absolute"),
        (
            ["--image", "x", "--keep-cap", "NET_BIND", "--drop-all-caps", "--", "true"],
            125,
            "hardexec: --keep-cap",
        ),
        (["--image", "x", "--profile", "lax", "--", "true"], 125, "--profile: 'lax' is not"),
        (["--image", "x"], 125, "no command given"),
    ],
)
def test_mistakes_are_named_and_nothing_is_written(args, status, message, tmp_path):
    result = hx(*args, cwd=tmp_path)
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert message in line
    assert not list(tmp_path.iterdir())


def test_a_profile_that_cannot_be_written_is_a_failure(tmp_path):
    out = tmp_path / "missing" / "p.json"
    result = hx(
        "--syscalls",
        "default",
        "--drop-all-caps",
        "--image",
        "x",
        "--seccomp-out",
        str(out),
        "--",
        "true",
    )
    assert result.returncode == 125
    assert result.stdout == ""
    assert f"hardexec: export: --seccomp-out: {str(out)!r}: No such file or directory" in (
        result.stderr.splitlines()
    )


def _special(kind: str, tmp_path: Path) -> Path:
    """A path of ``kind`` in ``tmp_path`` that is not a regular file to replace."""
    target = tmp_path / "p.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "character device":
        os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null is
    elif kind == "symbolic link":
        (tmp_path / "elsewhere.json").write_text("kept\n")
        target.symlink_to(tmp_path / "elsewhere.json")
    elif kind == "directory":
        target.mkdir()
    return target


SPECIAL = ["fifo", "character device", "symbolic link", "directory"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_the_profile_never_replaces_what_is_not_a_regular_file(kind, tmp_path):
    target = _special(kind, tmp_path)
    before = os.lstat(target)
    result = hx("--syscalls", "default", "--image", "x", "--seccomp-out", str(target), "--", "true")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line == (
        f"hardexec: export: --seccomp-out: {str(target)!r} is a {kind}, not a regular file to "
        "replace"
    )
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    if kind == "symbolic link":
        assert (tmp_path / "elsewhere.json").read_text() == "kept\n"
    names = {"p.json", "elsewhere.json"}
    assert {p.name for p in tmp_path.iterdir()} <= names  # no temporary file left


def test_a_profile_path_naming_a_directory_is_a_usage_mistake(tmp_path):
    result = hx(
        "--syscalls", "default", "--image", "x", "--seccomp-out", f"{tmp_path}/", "--", "true"
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line == (
        f"hardexec: export: --seccomp-out: {str(tmp_path) + '/'!r} names a directory; give "
        "the profile's file name"
    )
    assert not list(tmp_path.iterdir())


def test_a_regular_file_is_replaced_whole(tmp_path):
    out = tmp_path / "p.json"
    out.write_text("old\n")
    result = hx("--syscalls", "default", "--image", "x", "--seccomp-out", str(out), "--", "true")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["defaultAction"] == "SCMP_ACT_ALLOW"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_a_manifest_that_cannot_be_written_leaves_no_profile(tmp_path):
    out = tmp_path / "p.json"
    argv = [*HARDEXEC, "export", "k8s", "--syscalls", "default", "--image", "x"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*argv, "--seccomp-out", str(out), "--", "true"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert result.returncode == 125
    *said, last = result.stderr.splitlines()
    assert all(line.startswith(PREFIX) for line in said)  # the filter's unexpressed lines
    assert (
        last
        == "hardexec: export: the manifest cannot be written to stdout: No space left on device"
    )
    assert not list(tmp_path.iterdir())  # neither the profile nor its temporary file


def test_export_alone_and_its_help():
    result = run_text([*HARDEXEC, "export"])
    assert result.returncode == 2
    assert "hardexec export k8s" in result.stderr
    result = hx("--help")
    assert result.returncode == 0
    for option in ("--image", "--kind", "--name", "--seccomp-out", "--strict", "--profile"):
        assert option in result.stdout


# --- the example -------------------------------------------------------------------------------


def test_the_example_shows_what_it_says(tmp_path):
    done = run_example(ROOT / "examples" / "export_k8s.sh", tmp_path)
    status, out, err = done.returncode, done.stdout, done.stderr
    assert status == 0, err
    manifest_text, rest = out.split("SCMP_ACT_ALLOW SCMP_ACT_ERRNO\n")  # ptrace: refused
    pod = manifest_of(manifest_text)
    [c] = pod["spec"]["containers"]
    ctx = c["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert ctx["runAsUser"] == pwd.getpwnam("nobody").pw_uid
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["seccompProfile"] == {"type": "Localhost", "localhostProfile": "hardexec/web.json"}
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"}}
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    assert rest.splitlines() == [
        'kind: "Job"',
        "  backoffLimit: 0",
        "  activeDeadlineSeconds: 600",
        "refused (exit 125)",
    ]
    said = err.splitlines()
    assert all(line.startswith(PREFIX) for line in said), err
    fields = [line[len(PREFIX) :].split(" = ")[0] for line in said]
    assert fields == [
        "rlimits.disable_core_dumps",
        "run.env_policy",
        "confinement.syscalls.default",  # open_tree_attr: an older libseccomp skips it
        "confinement.syscalls.default",  # numbers beyond the table
        "security.keep_caps",
        "rlimits.max_open_files",
    ]
