"""The golden matrix: what the program itself sees in /proc/self/status.

Kept sets x (root, nobody) x (no_new_privs on, off) x (native, python stage). All five capability
sets must equal the kept set exactly. Root without no_new_privs is the case solti-exec gets
wrong (its bounding set stays full, so execve hands uid 0 every capability back).
"""

import subprocess

import pytest

import hardexec
from hardexec import Capability, CapSet, Policy, SecurityConfig
from helpers import parse_status

KEPT_SETS = {
    "none": [],
    "net_bind": [Capability.NET_BIND_SERVICE],
    "net_admin+bind": [Capability.NET_ADMIN, Capability.NET_BIND_SERVICE],
    "setfcap": [Capability.SETFCAP],
    "bpf+checkpoint": [Capability.BPF, Capability.CHECKPOINT_RESTORE],
}
CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def status_of(policy: Policy) -> dict[str, str]:
    result = hardexec.run(
        ["cat", "/proc/self/status"], policy=policy, capture_output=True, text=True, check=True
    )
    assert result.stderr == ""
    return parse_status(result.stdout)


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
@pytest.mark.parametrize("user", [None, "nobody"], ids=["root", "nobody"])
@pytest.mark.parametrize("kept", list(KEPT_SETS.values()), ids=list(KEPT_SETS))
def test_program_holds_exactly_the_kept_caps(stage, kept, user, nnp):
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True, keep_caps=kept, no_new_privs=nnp, user=user)
    )
    status = status_of(policy)
    want = CapSet.from_caps(kept).to_hex()
    assert {line: status[line] for line in CAP_LINES} == dict.fromkeys(CAP_LINES, want)
    assert status["NoNewPrivs"] == ("1" if nnp else "0")
    uid = "65534" if user else "0"
    assert status["Uid"].split() == [uid] * 4
    assert status["Gid"].split() == [uid] * 4  # nobody's primary group is nogroup (65534)


def test_setpriv_witness_agrees(stage):
    """util-linux setpriv, asked for the same thing, gives the program the same five sets."""
    keep = "net_admin,+net_bind_service"
    witness = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--init-groups",
            f"--bounding-set=-all,+{keep}",
            f"--inh-caps=-all,+{keep}",
            f"--ambient-caps=-all,+{keep}",
            "--no-new-privs",
            "cat",
            "/proc/self/status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = status_of(
        Policy(
            security=SecurityConfig(
                drop_all_caps=True,
                keep_caps=["NET_ADMIN", "NET_BIND_SERVICE"],
                no_new_privs=True,
                user="nobody",
            )
        )
    )
    theirs = parse_status(witness)
    for line in (*CAP_LINES, "NoNewPrivs", "Uid", "Gid", "Groups"):
        assert ours[line] == theirs[line], line


def test_without_drop_all_caps_capabilities_are_untouched(stage):
    with open("/proc/self/status") as f:
        before = parse_status(f.read())
    status = status_of(Policy(security=SecurityConfig(no_new_privs=True)))
    assert status["NoNewPrivs"] == "1"
    for line in CAP_LINES:
        assert status[line] == before[line], line


def test_user_without_caps_policy_is_an_ordinary_unprivileged_user(stage):
    status = status_of(Policy(security=SecurityConfig(user="nobody")))
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0000000000000000"
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Groups"] == "65534"  # nobody's own groups, never root's


def test_explicit_groups_replace_the_users_groups(stage):
    status = status_of(
        Policy(security=SecurityConfig(user="nobody", group=0, supplementary_groups=[7, 8]))
    )
    assert status["Gid"].split() == ["0"] * 4
    assert status["Groups"].split() == ["7", "8"]
