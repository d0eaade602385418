"""Rlimit and cgroup policies: validation with solti-exec's messages, and their plans."""

import pytest

from hardexec import CgroupLimits, CpuMax, Policy, PolicyError, RlimitConfig
from hardexec.plan import compile_plan
from hardexec.policy import RLIMIT_FIELDS

RLIMIT_NAMES = list(RLIMIT_FIELDS)


@pytest.mark.parametrize("name", RLIMIT_NAMES)
def test_zero_rlimits_are_rejected_with_solti_execs_message(name):
    with pytest.raises(PolicyError) as err:
        RlimitConfig(**{name: 0})
    assert str(err.value) == f"rlimits.{name} cannot be zero"


@pytest.mark.parametrize("name", RLIMIT_NAMES)
@pytest.mark.parametrize(("bad", "says"), [(-1, "is negative"), (1.5, "whole number"),
                                           (True, "whole number"), ("10", "whole number"),
                                           (2**63, "larger than")])  # fmt: skip
def test_bad_rlimits_name_the_field_and_value(name, bad, says):
    with pytest.raises(PolicyError) as err:
        RlimitConfig(**{name: bad})
    assert str(err.value).startswith(f"rlimits.{name}") and says in str(err.value)


def test_rlimits_compile_to_resource_value_pairs():
    config = RlimitConfig(
        max_open_files=1024, max_file_size_bytes=10 << 20, disable_core_dumps=True
    )
    assert config.limits() == ((1, 10 << 20), (4, 0), (7, 1024))
    assert RlimitConfig().is_empty() and not config.is_empty()
    everything = RlimitConfig(1, 2, True, 3, 4, 5, 6)
    assert dict(everything.limits()) == {7: 1, 1: 2, 4: 0, 9: 3, 0: 4, 6: 5, 3: 6}
    with pytest.raises(PolicyError, match="rlimits.disable_core_dumps: expected True or False"):
        RlimitConfig(disable_core_dumps=1)


def test_cpu_max_validation_as_solti_exec():
    with pytest.raises(PolicyError) as err:
        CpuMax(quota=50_000, period=0)
    assert str(err.value) == "cgroups.cpu.period cannot be zero"
    with pytest.raises(PolicyError) as err:
        CpuMax(quota=0)
    assert str(err.value) == "cgroups.cpu.quota cannot be zero (process would get no CPU)"
    for period in (999, 1_000_001):
        with pytest.raises(PolicyError, match=rf"cgroups.cpu.period: {period} µs is outside"):
            CpuMax(quota=50_000, period=period)
    with pytest.raises(PolicyError, match="below the kernel's minimum of 1000"):
        CpuMax(quota=999)
    with pytest.raises(PolicyError, match="cgroups.cpu.quota: -5 is negative"):
        CpuMax(quota=-5)


def test_cpu_max_values():
    assert CpuMax(quota=50_000, period=100_000).to_file() == "50000 100000"
    assert CpuMax().to_file() == "max 100000"
    assert CpuMax(quota=200_000).to_file() == "200000 100000"  # two CPUs, as CPUQuota=200%
    assert CpuMax.from_fraction(0.5) == CpuMax(quota=50_000, period=100_000)
    assert CpuMax.from_fraction(0.2, period=50_000) == CpuMax(quota=10_000, period=50_000)
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(PolicyError, match="not a positive number"):
            CpuMax.from_fraction(bad)


def test_cgroup_limits_validation_and_files():
    with pytest.raises(PolicyError) as err:
        CgroupLimits(memory=0)
    assert str(err.value) == "cgroups.memory cannot be zero"
    with pytest.raises(PolicyError) as err:
        CgroupLimits(pids=0)
    assert str(err.value) == "cgroups.pids cannot be zero"
    with pytest.raises(PolicyError, match="cgroups.memory: -1 is negative"):
        CgroupLimits(memory=-1)
    with pytest.raises(PolicyError, match="cgroups.cpu: expected a CpuMax"):
        CgroupLimits(cpu=0.5)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="cgroups.fail_on_error: expected True or False"):
        CgroupLimits(fail_on_error="yes")  # type: ignore[arg-type]
    limits = CgroupLimits(cpu=CpuMax(quota=20_000), memory=64 << 20, pids=64)
    assert limits.files() == {"cpu.max": "20000 100000", "memory.max": "67108864", "pids.max": "64"}
    assert limits.controllers() == ("cpu", "memory", "pids")
    assert CgroupLimits().files() == {} and CgroupLimits().controllers() == ()


def test_policy_emptiness_and_builders():
    assert Policy().is_empty()
    assert not Policy(rlimits=RlimitConfig(disable_core_dumps=True)).is_empty()
    assert not Policy(cgroups=CgroupLimits()).is_empty()  # a group alone is worth a stage
    policy = Policy().with_rlimits(RlimitConfig(max_open_files=8)).with_cgroups(CgroupLimits())
    assert policy.rlimits.max_open_files == 8 and policy.cgroups == CgroupLimits()
    with pytest.raises(PolicyError, match="policy.rlimits: expected a RlimitConfig"):
        Policy(rlimits={"max_open_files": 8})  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="policy.cgroups: expected a CgroupLimits"):
        Policy(cgroups=True)  # type: ignore[arg-type]


def test_cgroup_parent_must_be_an_existing_cgroup_v2_directory(tmp_path):
    with pytest.raises(PolicyError, match="cgroup_parent: '/nonexistent-x' does not exist"):
        Policy(cgroups=CgroupLimits(), cgroup_parent="/nonexistent-x")
    with pytest.raises(PolicyError, match="is not a cgroup v2 group"):
        Policy(cgroups=CgroupLimits(), cgroup_parent=tmp_path)
    with pytest.raises(PolicyError, match="'relative/x' is not an absolute path"):
        Policy(cgroups=CgroupLimits(), cgroup_parent="relative/x")
    (tmp_path / "cgroup.controllers").write_text("")
    assert Policy(cgroups=CgroupLimits(), cgroup_parent=tmp_path).cgroup_parent == str(tmp_path)


def test_plan_carries_rlimits_and_the_cgroup_join():
    policy = Policy(
        rlimits=RlimitConfig(max_open_files=64, disable_core_dumps=True),
        cgroups=CgroupLimits(fail_on_error=True),
    )
    args = compile_plan(policy).stage_args(5, None, cgroup_fd=6)
    assert args == ["--report-fd=5", "--cgroup-fd=6", "--cgroup-strict", "--rlimit=4:0",
                    "--rlimit=7:64", "--"]  # fmt: skip
    lenient = compile_plan(Policy(cgroups=CgroupLimits())).stage_args(5, None, cgroup_fd=6)
    assert lenient == ["--report-fd=5", "--cgroup-fd=6", "--"]
