"""Choosing the exec stage, and what happens where policies cannot be enforced."""

import subprocess
import sys
import warnings

import pytest

import hardexec
import hardexec.spawn_core
from hardexec import HardexecError, Policy, SecurityConfig
from hardexec import stage as stage_mod


@pytest.fixture
def fresh_selection():
    stage_mod._commands.clear()
    yield
    stage_mod._commands.clear()


def test_python_selects_the_twin_run_isolated(monkeypatch, fresh_selection):
    monkeypatch.setenv("HARDEXEC_STAGE", "python")
    assert stage_mod.stage_command() == (sys.executable, "-I", "-S", str(stage_mod.TWIN_STAGE))


def test_unknown_selection_names_the_variable_and_value(monkeypatch, fresh_selection):
    monkeypatch.setenv("HARDEXEC_STAGE", "rust")
    with pytest.raises(HardexecError, match="HARDEXEC_STAGE='rust': expected 'native', 'python'"):
        stage_mod.stage_command()


def test_native_required_but_not_built(monkeypatch, tmp_path, fresh_selection):
    monkeypatch.setattr(stage_mod, "NATIVE_STAGE", tmp_path / "missing")
    monkeypatch.setenv("HARDEXEC_STAGE", "native")
    with pytest.raises(HardexecError, match="native exec stage was not built"):
        stage_mod.stage_command()
    monkeypatch.setenv("HARDEXEC_STAGE", "auto")
    assert stage_mod.stage_command()[-1] == str(stage_mod.TWIN_STAGE)


def test_off_linux_a_policy_warns_once_and_is_ignored(monkeypatch):
    monkeypatch.setattr(hardexec.spawn_core.sys, "platform", "darwin")
    monkeypatch.setattr(hardexec.spawn_core, "_platform_warned", False)
    policy = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))
    with pytest.warns(
        RuntimeWarning, match="only enforced on Linux; on darwin they are ignored"
    ) as w:
        first = hardexec.run(["echo", "ran"], policy=policy, capture_output=True, text=True)
    assert w[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = hardexec.run(["echo", "ran"], policy=policy, capture_output=True, text=True)
    assert first.stdout == second.stdout == "ran\n"
    assert isinstance(first, subprocess.CompletedProcess)
