"""Policy validation: every mistake is a PolicyError naming the field and the value."""

import grp
import os
import pwd

import pytest

from hardexec import Capability, CapSet, Policy, PolicyError, SecurityConfig


def test_empty_config_is_empty_and_fail_on_cap_error_alone_changes_nothing():
    assert SecurityConfig().is_empty()
    assert SecurityConfig(fail_on_cap_error=True).is_empty()
    assert Policy().is_empty()
    assert not SecurityConfig(drop_all_caps=True).is_empty()
    assert not SecurityConfig(no_new_privs=True).is_empty()
    assert not SecurityConfig(user="nobody").is_empty()
    assert not SecurityConfig(group="nogroup").is_empty()
    assert not SecurityConfig(supplementary_groups=[]).is_empty()


def test_keep_caps_are_parsed_into_a_capset():
    config = SecurityConfig(drop_all_caps=True, keep_caps=["cap_net_admin", 10, Capability.BPF, 50])
    assert config.keep_caps == CapSet.of(10, 12, 39, 50)


def test_keep_caps_without_drop_all_caps_is_an_error_not_a_no_op():
    with pytest.raises(PolicyError) as err:
        SecurityConfig(keep_caps=[Capability.NET_BIND_SERVICE])
    message = str(err.value)
    assert "security.keep_caps" in message and "NET_BIND_SERVICE" in message
    assert "drop_all_caps" in message


def test_unknown_capability_names_its_position():
    with pytest.raises(PolicyError, match=r"security\.keep_caps\[1\].*'NET_ADMN'.*NET_ADMIN"):
        SecurityConfig(drop_all_caps=True, keep_caps=["CHOWN", "NET_ADMN"])


@pytest.mark.parametrize("bad", ["NET_ADMIN", 12, b"x"])
def test_keep_caps_must_be_a_list(bad):
    with pytest.raises(PolicyError, match="security.keep_caps: expected a list"):
        SecurityConfig(drop_all_caps=True, keep_caps=bad)


@pytest.mark.parametrize("field", ["drop_all_caps", "no_new_privs", "fail_on_cap_error"])
def test_flags_must_be_booleans(field):
    with pytest.raises(PolicyError, match=f"security.{field}: expected True or False, got 'yes'"):
        SecurityConfig(**{field: "yes"})


def test_user_by_name_defaults_group_and_groups_from_the_databases():
    nobody = pwd.getpwnam("nobody")
    ident = SecurityConfig(user="nobody").identity
    assert ident.uid == nobody.pw_uid
    assert ident.gid == nobody.pw_gid
    assert ident.groups == tuple(os.getgrouplist("nobody", nobody.pw_gid))


def test_user_and_groups_by_number_and_by_name():
    nogroup = grp.getgrnam("nogroup").gr_gid
    ident = SecurityConfig(user=65534, group="nogroup", supplementary_groups=["0", 5]).identity
    assert (ident.uid, ident.gid, ident.groups) == (65534, nogroup, (0, 5))
    assert SecurityConfig(user="65534").identity.uid == 65534


def test_a_new_identity_never_keeps_the_launchers_groups():
    assert SecurityConfig(group="nogroup").identity.groups == ()
    assert SecurityConfig(user=54321, group=54321).identity.groups == ()
    assert SecurityConfig(supplementary_groups=[]).identity.groups == ()
    assert SecurityConfig().identity.groups is None


def test_unknown_user_and_group_are_policy_errors():
    with pytest.raises(PolicyError, match="security.user: unknown user 'no-such-user-x'"):
        SecurityConfig(user="no-such-user-x")
    with pytest.raises(PolicyError, match="security.group: unknown group 'no-such-group-x'"):
        SecurityConfig(group="no-such-group-x")
    with pytest.raises(
        PolicyError, match=r"security.supplementary_groups\[1\]: unknown group 'nope-x'"
    ):
        SecurityConfig(supplementary_groups=["nogroup", "nope-x"])


def test_uid_without_account_needs_an_explicit_group():
    with pytest.raises(PolicyError, match="security.user: uid 54321 has no entry.*security.group"):
        SecurityConfig(user=54321)


@pytest.mark.parametrize("bad", [-1, 2**32 - 1, 2**32, True, 1.0, "", "  "])
def test_ids_out_of_range_or_of_the_wrong_type(bad):
    with pytest.raises(PolicyError, match="security.user"):
        SecurityConfig(user=bad)


def test_supplementary_groups_must_be_a_list():
    with pytest.raises(PolicyError, match="security.supplementary_groups: expected a list"):
        SecurityConfig(supplementary_groups="nogroup")


def test_configs_are_frozen_hashable_and_compare_by_value():
    a = SecurityConfig(drop_all_caps=True, keep_caps=["CHOWN"], supplementary_groups=[0])
    b = SecurityConfig(drop_all_caps=True, keep_caps=[0], supplementary_groups=(0,))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.no_new_privs = True  # type: ignore[misc]
    policy = Policy().with_security(a)
    assert policy.security is a and not policy.is_empty() and Policy().is_empty()


def test_policy_rejects_a_security_that_is_not_a_config():
    with pytest.raises(PolicyError, match="policy.security: expected a SecurityConfig"):
        Policy(security={"drop_all_caps": True})  # type: ignore[arg-type]
