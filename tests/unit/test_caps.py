"""Capability names, parsing, and CapSet (including solti-exec's KeepMask tests, ported)."""

import shutil
import subprocess

import pytest

from hardexec import Capability, CapSet, PolicyError
from hardexec.caps import MAX_CAP, parse_cap


def test_every_kernel_capability_is_named_with_number_and_description():
    assert len(Capability) == 41
    assert [int(c) for c in Capability] == list(range(41))
    assert Capability.CHOWN == 0 and Capability.CHECKPOINT_RESTORE == 40
    for cap in Capability:
        assert cap.description and "\n" not in cap.description
        assert cap.kernel_name == "CAP_" + cap.name


@pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh (libcap2-bin) is not installed")
def test_names_and_numbers_agree_with_libcap():
    """Independent witness: libcap's capsh names each bit exactly as we do."""
    for cap in Capability:
        out = subprocess.run(
            ["capsh", f"--decode={CapSet.of(cap).to_hex()}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out.endswith("=cap_" + cap.name.lower()), (cap, out)


def test_capability_names_are_correct():  # ported from solti-exec
    assert Capability.NET_ADMIN.name == "NET_ADMIN"
    assert Capability.SYS_ADMIN.name == "SYS_ADMIN"
    assert Capability.CHOWN.name == "CHOWN"


@pytest.mark.parametrize("text", ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_net_admin", "12"])
def test_parse_accepts_every_spelling(text):
    assert Capability.parse(text) is Capability.NET_ADMIN


def test_parse_accepts_numbers_and_newer_kernels_caps():
    assert Capability.parse(12) is Capability.NET_ADMIN
    assert Capability.parse(" Cap_Bpf ") is Capability.BPF
    for number in (41, 50, 63):
        parsed = Capability.parse(number)
        assert parsed == number and not isinstance(parsed, Capability)
        assert Capability.parse(str(number)) == number


@pytest.mark.parametrize("bad", [64, -1, "64", "-1", 1000, True, None, 1.5, "", "CAP_", b"CHOWN"])
def test_parse_rejects_everything_else(bad):
    with pytest.raises(PolicyError) as err:
        parse_cap(bad, field="security.keep_caps[0]")
    assert "security.keep_caps[0]" in str(err.value)


def test_unknown_name_names_the_input_and_suggests_close_names():
    with pytest.raises(PolicyError) as err:
        Capability.parse("NET_ADMN")
    assert "'NET_ADMN'" in str(err.value)
    assert "NET_ADMIN" in str(err.value)
    with pytest.raises(PolicyError, match="did you mean SYS_PTRACE"):
        Capability.parse("cap_sys_ptrce")
    with pytest.raises(PolicyError, match="hardexec caps"):
        Capability.parse("XYZZY")


# --- solti-exec's KeepMask tests, ported to CapSet ---------------------------------------


def test_keep_mask_empty_caps_all_zero():
    m = CapSet.from_caps([])
    assert m.words == (0, 0)
    for cap in range(MAX_CAP + 1):
        assert cap not in m


def test_keep_mask_single_low_cap():
    m = CapSet.from_caps([Capability.CHOWN])
    assert 0 in m
    assert 1 not in m
    assert m.words == (1, 0)


def test_keep_mask_cap_in_first_word_high_bits():  # solti-exec's "second word" test
    m = CapSet.from_caps([Capability.SETFCAP, Capability.SYS_PTRACE])
    assert 31 in m
    assert 19 in m
    assert 0 not in m
    assert m.words[1] == 0
    assert m.words[0] == 1 << 31 | 1 << 19


def test_keep_mask_multiple_caps():
    m = CapSet.from_caps([Capability.CHOWN, Capability.NET_BIND_SERVICE, "NET_ADMIN", 21])
    for cap in (0, 10, 12, 21):
        assert cap in m
    for cap in (1, 11, 63):
        assert cap not in m
    assert len(m) == 4


def test_keep_mask_duplicate_caps_idempotent():
    assert CapSet.from_caps([Capability.KILL]) == CapSet.from_caps(["KILL", Capability.KILL, 5])


def test_keep_mask_out_of_range_returns_false():
    m = CapSet.from_caps([Capability.CHOWN])
    for outside in (64, 100, 2**32 - 1, 2**64, -1):
        assert outside not in m
    assert "CHOWN" not in m and None not in m


def test_word_one_caps():
    m = CapSet.of(Capability.BPF, Capability.CHECKPOINT_RESTORE)
    assert m.words == (0, 1 << 7 | 1 << 8)
    assert 39 in m and 40 in m and 38 not in m
    assert m.to_hex() == "0000018000000000"
    assert CapSet.of(63).words == (0, 1 << 31)
    assert CapSet.from_words(*m.words) == m


# --- hex in and out, set behaviour ------------------------------------------------------


def test_hex_round_trips_in_proc_status_form():
    assert CapSet.of("NET_BIND_SERVICE").to_hex() == "0000000000000400"
    host = CapSet.from_hex("000001fffeffffff")
    assert len(host) == 40 and Capability.SYS_RESOURCE not in host
    assert host.to_hex() == "000001fffeffffff"
    assert CapSet.from_hex("0x3000").names() == ["NET_ADMIN", "NET_RAW"]
    assert CapSet.all_known().to_hex() == "000001ffffffffff"


@pytest.mark.parametrize("bad", ["", "xyz", "1" * 17, "-1", "0x", "12_34"])
def test_bad_hex_is_a_policy_error_naming_the_value(bad):
    with pytest.raises(PolicyError) as err:
        CapSet.from_hex(bad)
    assert repr(bad) in str(err.value)


def test_capset_is_an_immutable_hashable_set():
    a, b = CapSet.of("CHOWN", "KILL"), CapSet.of("KILL", 45)
    assert a | b == CapSet.of(0, 5, 45)
    assert a & b == CapSet.of(5)
    assert a - b == CapSet.of(0)
    assert CapSet.of(5).issubset(a) and not a.issubset(b)
    assert list(b) == [Capability.KILL, 45]
    assert b.names() == ["KILL", "45"]
    assert str(CapSet()) == "(none)" and not CapSet()
    assert {a: 1}[CapSet.of(0, 5)] == 1
    with pytest.raises(AttributeError):
        a.mask = 0  # type: ignore[misc]
    with pytest.raises(PolicyError):
        CapSet(1 << 64)


def test_the_names_table_and_the_enum_agree():
    """Parsing uses caps.NAMES (no enum at start-up); Capability must say the same."""
    from hardexec import caps

    assert tuple(cap.name for cap in Capability) == caps.NAMES
    assert [int(cap) for cap in Capability] == list(range(len(caps.NAMES)))
    assert caps.cap_name(12) == "NET_ADMIN" and caps.cap_name(41) == "41"
    assert CapSet.all_known() == CapSet.from_caps(Capability)
