"""hardexec.predict and ``hardexec explain`` against reality: what the prediction says the
program will hold is what the program then reads in its own /proc/self/status — across the
golden matrix, from a launcher without CAP_SETPCAP (under capsh), for set-user-ID-root and
file-capability copies of a program and ``#!`` scripts run through them, for verified runs
(``--verify``), for a launcher that may not make a user namespace, and through the command
line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

import hardexec
from hardexec import Capability, Confinement, Policy, SecurityConfig, SyscallFilter
from hardexec.explain import explain
from hardexec.predict import gather, predict
from helpers import parse_status, run_text
from host.test_matrix import KEPT_SETS  # the golden matrix's own kept sets

HARDEXEC = [sys.executable, "-m", "hardexec"]
SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
CAPSH = shutil.which("capsh") or "/usr/sbin/capsh"
SETCAP = shutil.which("setcap") or "/usr/sbin/setcap"
STATUS = ["cat", "/proc/self/status"]


def predicted(p) -> dict[str, str]:
    """A prediction in /proc/self/status's own words."""
    found = {name: caps.to_hex() for name, caps in p.sets().items()}
    found["NoNewPrivs"] = "1" if p.no_new_privs else "0"
    found["Uid"] = "\t".join(map(str, p.uids))
    found["Gid"] = "\t".join(map(str, p.gids))
    found["Groups"] = " ".join(map(str, p.groups))
    return found


def read(status: dict[str, str]) -> dict[str, str]:
    fields = (*SETS, "NoNewPrivs", "Uid", "Gid", "Groups")
    found = {name: status[name] for name in fields}
    found["Uid"] = "\t".join(status["Uid"].split())
    found["Gid"] = "\t".join(status["Gid"].split())
    found["Groups"] = " ".join(status["Groups"].split())
    return found


def status_under(policy: Policy, argv=STATUS) -> dict[str, str]:
    result = hardexec.run(argv, policy=policy, capture_output=True, text=True, check=True)
    assert result.stderr == ""
    return read(parse_status(result.stdout))


# --- the golden matrix ---------------------------------------------------------------------


MATRIX = [
    pytest.param(SecurityConfig(drop_all_caps=True, keep_caps=kept, no_new_privs=nnp, user=user),
                 id=f"{name}-{user or 'root'}-{'nnp' if nnp else 'no-nnp'}")
    for name, kept in KEPT_SETS.items()
    for user in (None, "nobody")
    for nnp in (True, False)
] + [
    pytest.param(SecurityConfig(no_new_privs=True), id="no-drop-root-nnp"),
    pytest.param(SecurityConfig(user="nobody"), id="no-drop-nobody"),
    pytest.param(SecurityConfig(user="nobody", group=0, supplementary_groups=[7, 8]), id="groups"),
]  # fmt: skip


@pytest.mark.parametrize("security", MATRIX)
def test_prediction_is_what_the_program_reads(stage, security):
    policy = Policy(security=security)
    p = predict(gather(STATUS, policy))
    assert p.refused is None and p.warnings == ()
    assert predicted(p) == status_under(policy)


def test_prediction_with_confinement_is_what_the_program_reads(stage):
    """A filter implies no_new_privs; a user namespace is not needed as root."""
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody"),
        confinement=Confinement(syscalls=SyscallFilter(default=True), namespaces=["net"]),
    )
    p = predict(gather(STATUS, policy))
    assert p.no_new_privs and p.notes  # implied, and noted
    assert predicted(p) == status_under(policy)


# --- launchers without CAP_SETPCAP, without CAP_SYS_ADMIN --------------------------------------

# Run by a Python that capsh started without a capability: for each case (security fields and
# namespaces), predict, then run, and print both as one JSON line.
CHILD = r"""
import json, subprocess, sys, warnings
import hardexec
from hardexec import Confinement, Policy, SecurityConfig
from hardexec.predict import gather, predict
warnings.simplefilter("ignore")
for fields, namespaces in json.loads(sys.argv[1]):
    policy = Policy(security=SecurityConfig(**fields),
                    confinement=Confinement(namespaces=namespaces) if namespaces else None)
    p = predict(gather(["cat", "/proc/self/status"], policy))
    got = {"status": None, "warnings": [], "error": None}
    try:
        with hardexec.Popen(["cat", "/proc/self/status"], policy=policy,
                            stdout=subprocess.PIPE, text=True) as proc:
            got["status"] = proc.stdout.read()
        got["warnings"] = [str(w) for w in proc.stage_warnings]
    except OSError as err:
        got["error"] = str(err)
    sets = {name: caps.to_hex() for name, caps in p.sets().items()}
    print(json.dumps({"sets": sets, "nnp": p.no_new_privs, "uids": p.uids,
                      "warnings": list(p.warnings), "refused": p.refused,
                      "userns": p.user_namespace,
                      "launcher": gather(["true"]).launcher.eff.to_hex(), "got": got}))
"""

BIND_ONLY = {"drop_all_caps": True, "keep_caps": ["NET_BIND_SERVICE"]}
WITHOUT = {
    "setpcap": [
        ({**BIND_ONLY, "no_new_privs": True}, []),
        (BIND_ONLY, []),  # root without no_new_privs: refused
        ({**BIND_ONLY, "user": "nobody"}, []),  # the bounding-set warning
        ({"drop_all_caps": True, "user": "nobody", "no_new_privs": True}, []),
        ({"drop_all_caps": True, "keep_caps": ["NET_ADMIN"], "user": "nobody"}, []),
    ],
    "sys_admin": [  # namespaces through a user namespace of the program's own
        ({"drop_all_caps": True, "keep_caps": ["NET_ADMIN"], "no_new_privs": True}, ["net"]),
        ({"no_new_privs": True}, ["net"]),
        ({"drop_all_caps": True}, ["pid"]),
        ({"drop_all_caps": True, "user": "nobody"}, ["net"]),  # setgroups: refused there
    ],
}
# How many cases each launcher refuses, and how many of the others warn.
EXPECTED = {"setpcap": (1, 4), "sys_admin": (1, 0)}


@pytest.mark.parametrize("cap", list(WITHOUT))
def test_prediction_from_a_launcher_without_a_cap_matches_the_run(stage, cap):
    cases = WITHOUT[cap]
    argv = [CAPSH, f"--drop=cap_{cap}", "--", "-c", 'exec "$0" "$@"', sys.executable, "-c"]
    result = run_text([*argv, CHILD, json.dumps(cases)], timeout=120)
    assert result.returncode == 0, result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(cases)
    refused = warned = 0
    for case, out in zip(cases, outcomes, strict=True):
        assert not int(out["launcher"], 16) >> Capability[cap.upper()] & 1  # capsh dropped it
        got = out["got"]
        assert out["warnings"] == got["warnings"], case
        if got["error"] is not None:
            assert out["refused"] == got["error"], case
            refused += 1
            continue
        assert out["refused"] is None, case
        status = parse_status(got["status"])
        assert out["sets"] == {name: status[name] for name in SETS}, case
        assert out["nnp"] == (status["NoNewPrivs"] == "1"), case
        assert out["uids"] == [int(x) for x in status["Uid"].split()], case
        assert out["userns"] is bool(case[1]), case
        warned += bool(got["warnings"])
    assert (refused, warned) == EXPECTED[cap]


# --- set-user-ID-root and file-capability copies of a program -----------------------------------


@pytest.fixture
def copies():
    """A directory (not on a nosuid mount) holding a set-user-ID-root copy of cat and copies
    with file capabilities; removed afterwards."""
    for base in (tempfile.gettempdir(), "/var/tmp", os.path.dirname(__file__)):
        if not os.statvfs(base).f_flag & os.ST_NOSUID:
            break
    else:
        pytest.fail("no directory here is on a mount without nosuid")
    where = tempfile.mkdtemp(prefix="explain-", dir=base)
    try:
        os.chmod(where, 0o755)  # nobody must reach the copies
        cat = shutil.which("cat")
        made = {}
        for name, caps in (
            ("setuid", None),
            ("raw-ep", "cap_net_raw+ep"),
            ("raw-p", "cap_net_raw+p"),
        ):
            path = os.path.join(where, name)
            shutil.copy(cat, path)
            if caps is None:
                os.chmod(path, stat.S_ISUID | 0o755)
            else:
                subprocess.run([SETCAP, caps, path], check=True)
            made[name] = path
        yield made
    finally:
        shutil.rmtree(where)


FILE_CASES = [
    ("setuid", SecurityConfig(user="nobody")),
    ("setuid", SecurityConfig(user="nobody", drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"])),
    ("setuid", SecurityConfig(user="nobody", no_new_privs=True)),
    ("setuid", SecurityConfig(user="nobody", drop_all_caps=True)),
    ("raw-ep", SecurityConfig(user="nobody", drop_all_caps=True, keep_caps=["NET_RAW"])),
    ("raw-ep", SecurityConfig(user="nobody")),
    ("raw-ep", SecurityConfig(user="nobody", no_new_privs=True)),
    ("raw-ep", SecurityConfig(user="nobody", drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"])),
    ("raw-p", SecurityConfig(user="nobody", drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"])),
    ("raw-p", SecurityConfig(drop_all_caps=True, keep_caps=["NET_RAW"], no_new_privs=True)),
]


@pytest.mark.parametrize(
    ("copy", "security"), FILE_CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(FILE_CASES)]
)
def test_prediction_for_set_id_and_file_caps_programs(stage, copies, copy, security):
    policy = Policy(security=security)
    argv = [copies[copy], "/proc/self/status"]
    p = predict(gather(argv, policy))
    if p.refused is not None:  # an effective file whose fP the bounding set does not cover
        assert p.refused_step == "exec" and p.exit_status == 126
        with pytest.raises(PermissionError):
            hardexec.run(argv, policy=policy, capture_output=True, check=True)
        return
    assert predicted(p) == status_under(policy, argv)


def test_the_file_cases_cover_each_rule(stage, copies):
    """The cases above are not all alike: set-uid gives euid 0, file caps raise P, one exec
    is refused."""
    outcomes = [predict(gather([copies[c], "x"], Policy(security=s))) for c, s in FILE_CASES]
    assert any(p.uids[1] == 0 for p in outcomes)
    assert any(p.refused_step == "exec" for p in outcomes)
    assert any(p.prm == hardexec.CapSet.of("NET_RAW") for p in outcomes)


# --- the command line ------------------------------------------------------------------------


def hx(*args: str) -> subprocess.CompletedProcess[str]:
    return run_text([*HARDEXEC, *args], timeout=60)


CLI_CASES = [
    ("--drop-all-caps", "--keep-cap", "NET_BIND_SERVICE", "--user", "nobody"),
    ("--drop-all-caps", "--no-new-privs"),
    ("--drop-all-caps", "--keep-cap", "net_admin,bpf"),
    ("--no-new-privs", "--user", "nobody"),
    ("--drop-all-caps", "--syscalls", "default", "--net", "none", "--user", "nobody"),
    (),
]


@pytest.mark.parametrize("options", CLI_CASES, ids=[" ".join(c) or "none" for c in CLI_CASES])
def test_cli_explain_json_is_what_run_gives(stage, options):
    explained = hx("explain", "--json", *options, "--", "cat")
    assert explained.returncode == 0, explained.stderr
    doc = json.loads(explained.stdout)
    ran = hx("run", *options, "--", "cat", "/proc/self/status")
    assert ran.returncode == 0, ran.stderr
    status = parse_status(ran.stdout)
    for name in SETS:
        assert doc["predicted"]["sets"][name]["hex"] == status[name], name
    assert doc["predicted"]["no_new_privs"] == (status["NoNewPrivs"] == "1")
    assert doc["predicted"]["uids"] == [int(x) for x in status["Uid"].split()]
    assert doc["program"] == shutil.which("cat")


def test_cli_json_schema():
    doc = json.loads(
        hx("explain", "--json", "--drop-all-caps", "--nofile", "64", "--", "true").stdout
    )
    assert doc["version"] == 1
    keys = {"version", "argv", "program", "refused", "exit_status", "launcher", "predicted",
            "rlimits", "cgroup", "confinement", "warnings", "notes", "timeout", "score",
            "level", "checks"}  # fmt: skip
    assert set(doc) == keys
    assert set(doc["predicted"]["sets"]) == set(SETS)
    assert doc["rlimits"] == [
        {"name": "NOFILE", "resource": 7, "asked": 64, "value": 64, "readable": "64"}
    ]
    assert [c["name"] for c in doc["checks"]] == [c.name for c in hardexec.explain.CHECKS]
    assert all(
        set(c) == {"name", "weight", "title", "why", "passed", "detail"} for c in doc["checks"]
    )


def test_cli_text_names_each_set_and_the_score():
    out = hx("explain", "--drop-all-caps", "--keep-cap", "NET_RAW", "--", "true")
    assert out.returncode == 0, out.stderr
    for name in SETS:
        assert f"  {name}  " in out.stdout and "->  0000000000002000  NET_RAW" in out.stdout
    assert "overall exposure level: " in out.stdout
    assert "FAIL" in out.stdout and "pass" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--memory", "64M", "--", "true"),
        ("--", "no-such-program-here"),
        ("--user", "nobody", "--", "true"),
        ("--fs-ro", "/no-such-dir-for-explain", "--", "true"),
        ("--drop-all-caps", "--", "/etc/passwd"),
        ("--", "/etc/hostname"),
    ],
    ids=["memory", "not-found", "plain", "rule-path", "not-executable", "exec-format"],
)
def test_cli_refuses_when_run_would(args):
    """explain exits 125 exactly when run would not start the program, naming run's status."""
    explained = hx("explain", *args)
    ran = hx("run", *args)
    if ran.returncode in (125, 126, 127):
        assert explained.returncode == 125
        last = explained.stderr.strip().splitlines()[-1]
        assert last.startswith(
            f"hardexec: explain: the run would be refused (exit {ran.returncode}):"
        )
    else:
        assert ran.returncode == 0 and explained.returncode == 0, explained.stderr
        assert explained.stderr == ""


@pytest.mark.parametrize(
    "policy",
    [
        Policy(confinement=Confinement(fs=[("/no-such-dir-for-explain", "ro")])),
        Policy(security=SecurityConfig(user="nobody", drop_all_caps=True)),
    ],
    ids=["rule-path", "runs"],
)
@pytest.mark.parametrize(
    "argv", [["true"], ["no-such-program-here"], ["/etc/passwd"], ["/etc/hostname"]]
)
def test_library_refusals_are_the_errors_run_raises(stage, policy, argv):
    e = explain(argv, policy)
    try:
        hardexec.run(argv, policy=policy, capture_output=True, check=True)
    except OSError as err:
        assert e.refused == str(err)
    else:
        assert e.refused is None


# --- the score ---------------------------------------------------------------------------------


def test_unconfined_root_scores_10():
    e = explain(["true"], Policy())
    assert 21 in e.prediction.eff and e.prediction.uids[1] == 0
    assert e.score == 10.0 and not any(r.passed for r in e.checks)


def test_a_confined_policy_scores_lower_than_none():
    from hardexec import RlimitConfig

    confined = Policy(
        security=SecurityConfig(drop_all_caps=True, no_new_privs=True, user="nobody"),
        rlimits=RlimitConfig(max_open_files=64, disable_core_dumps=True, cpu_seconds=10,
                             max_file_size_bytes=1 << 20, address_space=1 << 30,
                             max_processes=100),
        confinement=Confinement(fs=[("/usr", "rx")], syscalls=SyscallFilter(default=True),
                                namespaces=["net", "pid", "ipc"]),
    )  # fmt: skip
    e = explain(["true"], confined)
    assert e.refused is None
    assert e.score < explain(["true"], Policy()).score
    assert e.score <= 1.0, [r.check.name for r in e.checks if not r.passed]


# --- #! scripts: the kernel runs the interpreter, whose set-id bits and file caps count --------


def _base_without_nosuid() -> str:
    for base in (tempfile.gettempdir(), "/var/tmp", os.path.dirname(__file__)):
        if not os.statvfs(base).f_flag & os.ST_NOSUID:
            return base
    pytest.fail("no directory here is on a mount without nosuid")


def _script(path: str, line: str, mode: int = 0o755) -> str:
    with open(path, "w") as f:
        f.write(line + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture
def scripts():
    """Scripts whose interpreters are set-user-ID-root or file-capability copies of cat (and
    a set-user-ID script of plain cat, missing and non-executable interpreters, a chain deeper
    than the kernel follows), in a directory nobody can search; removed afterwards."""
    where = tempfile.mkdtemp(prefix="explain-scripts-", dir=_base_without_nosuid())
    try:
        os.chmod(where, 0o755)  # nobody must reach them
        cat = shutil.which("cat")
        copy = {}
        for name, caps in (("setuid", None), ("raw-ep", "cap_net_raw+ep"), ("plain", None)):
            path = copy[name] = os.path.join(where, name)
            shutil.copy(cat, path)
            if name == "setuid":
                os.chmod(path, stat.S_ISUID | 0o755)
            elif caps is not None:
                subprocess.run([SETCAP, caps, path], check=True)
        os.chmod(copy["plain"], 0o644)  # not executable: an interpreter execve refuses
        made = {
            "via-setuid": _script(f"{where}/via-setuid", f"#!{copy['setuid']}"),
            "via-setuid-arg": _script(f"{where}/via-setuid-arg", f"#!  {copy['setuid']}  -u "),
            "setuid-script": _script(f"{where}/setuid-script", f"#!{cat}", stat.S_ISUID | 0o755),
            "via-raw": _script(f"{where}/via-raw", f"#!{copy['raw-ep']}"),
            "missing": _script(f"{where}/missing", f"#!{where}/no-such-interpreter"),
            "not-executable": _script(f"{where}/not-executable", f"#!{copy['plain']}"),
        }
        made["two-deep"] = _script(f"{where}/two-deep", f"#!{made['via-setuid']}")
        deepest = made["via-setuid"]  # 1 script; 5 are followed, a 6th is ELOOP
        for level in range(2, 7):
            deepest = _script(f"{where}/chain-{level}", f"#!{deepest}")
            made[f"chain-{level}"] = deepest
        yield made
    finally:
        shutil.rmtree(where)


NOBODY = SecurityConfig(user="nobody")
SCRIPT_CASES = [
    ("via-setuid", NOBODY),
    ("via-setuid", SecurityConfig(user="nobody", no_new_privs=True)),
    ("via-setuid", SecurityConfig(user="nobody", drop_all_caps=True, keep_caps=["NET_RAW"])),
    ("via-setuid-arg", NOBODY),
    ("setuid-script", NOBODY),
    ("via-raw", NOBODY),
    ("via-raw", SecurityConfig(user="nobody", no_new_privs=True)),
    ("two-deep", NOBODY),
    ("chain-5", NOBODY),
]


@pytest.mark.parametrize(
    ("script", "security"), SCRIPT_CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(SCRIPT_CASES)]
)
def test_prediction_for_scripts_is_what_the_interpreter_reads(stage, scripts, script, security):
    policy = Policy(security=security)
    argv = [scripts[script], "/proc/self/status"]  # cat prints the script, then its status
    p = predict(gather(argv, policy))
    assert p.refused is None and p.program == scripts[script]
    assert predicted(p) == status_under(policy, argv)


def test_the_script_cases_cover_each_rule(scripts):
    """Not all alike: an interpreter's set-user-ID bit gives euid 0 (even two scripts down and
    with an argument), a script's own gives nothing, an interpreter's file caps raise P."""
    found = {
        (c, i): predict(gather([scripts[c], "x"], Policy(security=s)))
        for i, (c, s) in enumerate(SCRIPT_CASES)
    }
    assert found["via-setuid", 0].uids[1] == 0 and found["via-setuid", 0].eff
    assert found["via-setuid-arg", 3].uids[1] == 0 and found["two-deep", 7].uids[1] == 0
    assert found["chain-5", 8].uids[1] == 0
    assert found["setuid-script", 4].uids == (65534,) * 4 and not found["setuid-script", 4].eff
    assert found["via-raw", 5].prm == hardexec.CapSet.of("NET_RAW")


@pytest.mark.parametrize(
    ("script", "status"), [("missing", 127), ("not-executable", 126), ("chain-6", 126)]
)
def test_cli_script_interpreter_refusals_are_run_s(scripts, script, status):
    """A missing interpreter is ENOENT (127), one that may not be run EACCES (126), a sixth
    script in a chain ELOOP (126): explain names the status run exits with."""
    ran = hx("run", "--user", "nobody", "--", scripts[script], "/proc/self/status")
    assert ran.returncode == status, ran.stderr
    explained = hx("explain", "--json", "--user", "nobody", "--", scripts[script])
    assert explained.returncode == 125
    doc = json.loads(explained.stdout)
    assert doc["exit_status"] == status and doc["refused"]
    assert explained.stderr.startswith(
        f"hardexec: explain: the run would be refused (exit {status}):"
    )


# A private mount namespace (made by unshare, gone with it) with a nosuid tmpfs: the set-id
# bit that counts is the interpreter's, on the interpreter's mount.
NOSUID_CHILD = r"""
import json, os, shutil, subprocess, sys
sys.path.insert(0, sys.argv[3])
import hardexec
from hardexec import Policy, SecurityConfig
from hardexec.predict import gather, predict
from helpers import parse_status
mounted, plain = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,mode=755", "explain-test", mounted],
               check=True)
cat = shutil.which("cat")
for where in (mounted, plain):
    shutil.copy(cat, f"{where}/setuid")
    os.chmod(f"{where}/setuid", 0o4755)
cases = {"script-on-nosuid": (mounted, plain), "interpreter-on-nosuid": (plain, mounted)}
policy = Policy(security=SecurityConfig(user="nobody"))
for name, (script_dir, interp_dir) in cases.items():
    script = f"{script_dir}/{name}"
    with open(script, "w") as f:
        f.write(f"#!{interp_dir}/setuid\n")
    os.chmod(script, 0o755)
    p = predict(gather([script, "/proc/self/status"], policy))
    out = hardexec.run([script, "/proc/self/status"], policy=policy, capture_output=True,
                       text=True, check=True).stdout
    print(json.dumps({"case": name, "predicted": list(p.uids),
                      "read": [int(x) for x in parse_status(out)["Uid"].split()]}))
"""


def test_nosuid_is_the_interpreter_s_mount(stage):
    base = _base_without_nosuid()
    mounted = tempfile.mkdtemp(prefix="explain-nosuid-", dir=base)
    plain = tempfile.mkdtemp(prefix="explain-plain-", dir=base)
    try:
        for d in (mounted, plain):
            os.chmod(d, 0o755)
        tests = os.path.dirname(os.path.dirname(__file__))
        argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c"]
        result = run_text([*argv, NOSUID_CHILD, mounted, plain, tests], timeout=120)
        assert result.returncode == 0, result.stderr
        found = {d["case"]: d for d in map(json.loads, result.stdout.splitlines())}
        assert found["script-on-nosuid"]["read"] == [65534, 0, 0, 0]  # the interpreter's mount
        assert found["interpreter-on-nosuid"]["read"] == [65534] * 4
        for case in found.values():
            assert case["predicted"] == case["read"], case
    finally:
        shutil.rmtree(plain)
        os.rmdir(mounted)  # its tmpfs went with the mount namespace


# --- verified runs -------------------------------------------------------------------------------

NO_PTRACE = [CAPSH, "--drop=cap_sys_ptrace", "--", "-c", 'exec "$0" "$@"', *HARDEXEC]


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


VERIFY_CASES = [
    ("setuid", ("--user", "nobody")),
    ("setuid", ("--user", "nobody", "--drop-all-caps")),
    ("raw-ep", ("--user", "nobody")),
    ("raw-p", ("--drop-all-caps", "--keep-cap", "NET_RAW", "--user", "nobody")),
    ("setuid", ("--user", "nobody", "--drop-all-caps", "--no-new-privs")),
]


@pytest.mark.parametrize("launcher", ["root", "no-ptrace"])
@pytest.mark.parametrize(
    ("copy", "options"), VERIFY_CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(VERIFY_CASES)]
)
def test_cli_explain_verify_is_what_the_verified_run_gives(copies, launcher, copy, options):
    """Under --verify: a launcher without CAP_SYS_PTRACE gets no set-user-ID or file-capability
    gain at the traced exec; a program beyond its policy is refused with run's own words."""
    prefix = NO_PTRACE if launcher == "no-ptrace" else HARDEXEC
    argv = ["--verify", *options, "--", copies[copy], "/proc/self/status"]
    ran = run_text([*prefix, "run", *argv], timeout=60)
    explained = run_text([*prefix, "explain", "--json", *argv], timeout=60)
    doc = json.loads(explained.stdout)
    if ran.returncode != 0:
        assert ran.returncode == 125, ran.stderr
        assert explained.returncode == 125 and doc["exit_status"] == 125
        why = _said(explained).split("(exit 125): ", 1)[1]
        assert "hardexec: " + why == _said(ran)
        return
    assert explained.returncode == 0, explained.stderr
    status = parse_status(ran.stdout)
    for name in SETS:
        assert doc["predicted"]["sets"][name]["hex"] == status[name], name
    assert doc["predicted"]["uids"] == [int(x) for x in status["Uid"].split()]
    assert doc["predicted"]["no_new_privs"] == (status["NoNewPrivs"] == "1")


def test_the_verify_cases_cover_each_rule(copies):
    """Root's verified set-user-ID run is refused; without CAP_SYS_PTRACE it runs, gaining
    nothing; a file capability is withheld."""
    options = ["--verify", "--user", "nobody", "--json", "--", copies["setuid"]]
    refused = hx("explain", *options)
    assert refused.returncode == 125 and "verify: Uid is 65534 0 0 0" in refused.stderr
    untraced = json.loads(
        hx("explain", "--json", "--user", "nobody", "--", copies["raw-ep"]).stdout
    )
    assert untraced["predicted"]["sets"]["CapPrm"]["caps"] == ["NET_RAW"]
    for copy in ("setuid", "raw-ep"):
        out = run_text([*NO_PTRACE, "explain", *options[:-1], copies[copy]], timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["predicted"]["uids"] == [65534] * 4
        assert doc["predicted"]["sets"]["CapPrm"]["caps"] == []


def test_verify_with_a_pid_namespace_is_refused_as_run_refuses_it():
    ran = hx("run", "--verify", "--pid-ns", "--", "true")
    explained = hx("explain", "--verify", "--pid-ns", "--", "true")
    assert ran.returncode == explained.returncode == 125
    assert _said(ran) == _said(explained) and "--pid-ns" in _said(ran)
    policy = Policy(confinement=Confinement(namespaces=["pid"]))
    with pytest.raises(hardexec.PolicyError) as err:
        hardexec.run(["true"], policy=policy, verify=True)
    e = explain(["true"], policy, verify=True)
    assert e.refused == str(err.value) and e.exit_status == 125


# --- a launcher that may not make the user namespace its confinement needs ---------------------


@pytest.mark.parametrize("setfcap", [False, True], ids=["without-setfcap", "with-setfcap"])
def test_cli_explain_says_when_the_user_namespace_cannot_be_made(setfcap):
    """Root without CAP_SYS_ADMIN confines through a user namespace, whose uid_map for uid 0
    the kernel refuses unless the stage holds CAP_SETFCAP."""
    caps = "-all,+net_raw,+setpcap,+setuid,+setgid" + (",+setfcap" if setfcap else "")
    prefix = ["setpriv", f"--bounding-set={caps}", "--", *HARDEXEC]
    args = ["--profile", "strict", "--", "/bin/true"]
    ran = run_text([*prefix, "run", *args], timeout=60)
    explained = run_text([*prefix, "explain", *args], timeout=60)
    assert ran.returncode == (0 if setfcap else 125), ran.stderr
    if setfcap:
        assert explained.returncode == 0, explained.stderr
        return
    assert "userns failed" in _said(ran)
    assert explained.returncode == 125
    assert _said(explained) == "hardexec: explain: the run would be refused (exit 125): " + _said(
        ran
    ).removeprefix("hardexec: ")
