"""Spawn cost of hardexec against plain subprocess, setpriv, and a naive preexec_fn port.

Run as root: ``.venv/bin/python bench/spawn.py`` (``--quick`` for fewer rounds).
Every variant spawns /bin/true with "drop all caps, keep NET_BIND_SERVICE, no_new_privs" (plain
subprocess: no policy). Variants are interleaved round by round so drift in machine load hits all
of them alike; the figure per variant is the median over rounds. Then the same is measured from a
parent holding 4 GiB of touched memory, where fork() (forced by preexec_fn) copies page tables and
vfork() does not. Ratios are printed side by side, each with its target (at most 1.5x plain
subprocess from either parent; faster than setpriv). "hardexec --verify" is the same spawn with
``verify=True`` (the program stopped at its exec and checked against the policy before it
runs), printed as a ratio to plain and to unverified hardexec from the same run.

``--vm`` measures a spawn with a cgroup of its own (create, write memory.max and pids.max, join,
remove) against a plain spawn inside the VM tier's kernel, whose cgroup v2 has the controllers
this host lacks (it boots once with virtme-ng, like tests/vm; software emulation, so only the
ratio means anything there).

``--confine`` measures confinement: the same policy plus Landlock (5 path rules, the program's
libraries added by hardexec) and seccomp (the default deny-list), then that plus new net and pid
namespaces, against plain subprocess (targets: at most 1.6x and 2.5x plain), beside unshare(1) and
bubblewrap doing less (each with the ratio quoted for it as an anchor; a tool that is missing
or cannot run here is skipped, saying why). Then the one-time cost: the first spawn
with a new policy against the later ones, with the calls of the seccomp compiler's uncached body
(and of the Landlock ruleset's compilation) counted, which must happen once per policy.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hardexec
from hardexec import Capability, CgroupLimits, Policy, SecurityConfig
from hardexec.stage import stage_command

TRUE = "/bin/true"
KEEP = Capability.NET_BIND_SERVICE
POLICY = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=[KEEP], no_new_privs=True))
SETPRIV = [
    "setpriv",
    "--bounding-set=-all,+net_bind_service",
    "--inh-caps=-all,+net_bind_service",
    "--ambient-caps=-all,+net_bind_service",
    "--no-new-privs",
    TRUE,
]


def naive_preexec() -> Callable[[], None]:
    """What a direct port of solti-exec's pre_exec hook to Python looks like (the baseline).

    It runs Python between fork and exec, so subprocess must fork() instead of vfork().
    """
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())

    def hook() -> None:
        for cap in range(last_cap + 1):
            if cap != KEEP:
                libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
        header, data = Header(0x20080522, 0), (Data * 2)()
        libc.capget(ctypes.byref(header), data)
        bits = 1 << KEEP
        data[0].effective = data[0].permitted = data[0].inheritable = bits
        data[1].effective = data[1].permitted = data[1].inheritable = 0
        libc.capset(ctypes.byref(header), data)
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
        libc.prctl(47, 2, KEEP, 0, 0)  # PR_CAP_AMBIENT_RAISE
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS

    return hook


VERIFY = "hardexec --verify"


def variants() -> dict[str, Callable[[], object]]:
    hook = naive_preexec()
    return {
        "plain": lambda: subprocess.run([TRUE], check=True),
        "hardexec": lambda: hardexec.run([TRUE], policy=POLICY, check=True),
        VERIFY: lambda: hardexec.run([TRUE], policy=POLICY, check=True, verify=True),
        "setpriv": lambda: subprocess.run(SETPRIV, check=True),
        "preexec_fn": lambda: subprocess.run([TRUE], preexec_fn=hook, check=True),
    }


CGROUP = Policy(cgroups=CgroupLimits(memory=256 << 20, pids=64, fail_on_error=True))


def cgroup_variants() -> dict[str, Callable[[], object]]:
    return {
        "plain": lambda: subprocess.run([TRUE], check=True),
        "hardexec": lambda: hardexec.run([TRUE], policy=POLICY, check=True),
        "+cgroup": lambda: hardexec.run([TRUE], policy=CGROUP, check=True),
    }


def measure_cgroup(rounds: int) -> int:
    """A spawn with its own cgroup against a plain spawn (the VM's kernel has the controllers)."""
    try:
        hardexec.run([TRUE], policy=CGROUP, check=True)
    except hardexec.CgroupError as err:
        print(f"cgroup spawn: not measurable here ({err}); use --vm", file=sys.stderr)
        return 2
    times = measure(cgroup_variants(), rounds)
    for name, seconds in times.items():
        print(f"{name:<12}{seconds * 1e3:>10.3f} ms")
    ratio = times["+cgroup"] / times["plain"]
    print(f"{'hardexec+cgroup / plain':<36}{ratio:>8.2f}   target <= 3.0")
    return 0


def in_vm(rounds: int) -> int:
    """Run ``--cgroup-only`` inside the VM tier's kernel and show its output."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import vm

    why = vm.why_not()
    if why:
        print(f"bench/spawn.py --vm: {why}", file=sys.stderr)
        return 2
    me = [sys.executable, os.path.abspath(__file__), "--cgroup-only", "--rounds", str(rounds)]
    argv, env = vm.command(" ".join(map(shlex.quote, me)))
    print(f"in the VM ({vm.kernel()}, software emulation):", flush=True)
    return subprocess.run(argv, env=env, check=False).returncode


def measure(chosen: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per spawn of each variant, interleaved round by round."""
    samples: dict[str, list[float]] = {name: [] for name in chosen}
    for fn in chosen.values():  # warm caches, page in binaries
        fn()
    for _ in range(rounds):
        for name, fn in chosen.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


# --confine: Landlock, seccomp and namespaces on top of POLICY.
LANDLOCK = "+landlock5+seccomp"
EVERYTHING = "+everything"
CONFINE_TARGETS = {"hardexec": 1.5, LANDLOCK: 1.6, EVERYTHING: 2.5}
REFERENCES = {  # variant: (argv, the usual ratio to plain subprocess)
    "unshare -n": (["unshare", "-n", TRUE], 3.1),
    "bwrap --bind / /": (["bwrap", "--bind", "/", "/", TRUE], 3.9),
    "bwrap ... --unshare-net": (["bwrap", "--bind", "/", "/", "--unshare-net", TRUE], 4.9),
    "bwrap --dev-bind ... --unshare-all": (
        ["bwrap", "--dev-bind", "/", "/", "--unshare-all", TRUE],
        5.3,
    ),
}


def confined(scratch: str, *, namespaces: bool, deny: tuple[str, ...] = ()) -> Policy:
    """POLICY plus 5 Landlock path rules and the default seccomp deny-list (plus ``deny``),
    and with ``namespaces`` new net and pid namespaces."""
    from hardexec import Confinement, SyscallFilter

    fs = [("/etc", "ro"), ("/usr/share", "ro"), (scratch, "ro"), ("/usr/lib", "rx"), ("/tmp", "rw")]
    return POLICY.with_confinement(
        Confinement(
            fs=fs,
            syscalls=SyscallFilter(default=True, deny=deny),
            namespaces=["net", "pid"] if namespaces else [],
        )
    )


def reference_variants() -> dict[str, Callable[[], object]]:
    """The reference tools that exist and run here; a skipped one is printed with why."""
    found: dict[str, Callable[[], object]] = {}
    for name, (argv, _) in REFERENCES.items():
        if shutil.which(argv[0]) is None:
            print(f"skipped {name}: {argv[0]} is not installed")
            continue
        tried = subprocess.run(argv, capture_output=True, text=True, check=False)
        if tried.returncode != 0:
            why = tried.stderr.strip().splitlines()[-1:] or [f"exit status {tried.returncode}"]
            print(f"skipped {name}: {shlex.join(argv)} fails here: {why[0]}")
            continue
        found[name] = lambda argv=argv: subprocess.run(argv, check=True)
    return found


class Counted:
    """A wrapper counting the calls of ``fn`` and the time spent in them."""

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn, self.calls, self.seconds = fn, 0, 0.0

    def __call__(self, *args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start

    def mean_us(self) -> float:
        return self.seconds / max(self.calls, 1) * 1e6


def first_spawn_cost(scratch: str, trials: int, later: int) -> bool:
    """The first spawn with a new policy against later ones, and what is compiled when.

    Each trial is a policy no spawn has used yet: its filter also denies one call of the
    default deny-list (so it filters the same calls), its ruleset has a directory of its own.
    The seccomp compiler's uncached body is counted by a wrapper put under its cache (a fresh
    cache of the same size around the counted body, for the duration), compile_filter and
    landlock.compile_rules by wrappers around them. Returns whether the body ran exactly once
    per new policy.
    """
    import functools

    from hardexec.confine import groups, landlock, seccomp

    names = [n for n in groups.expand("@default-deny")[0] if n in seccomp.syscalls.table()]
    saved = (seccomp._compile, seccomp.compile_filter, landlock.compile_rules)
    body = Counted(saved[0].__wrapped__)
    entry = Counted(saved[1])
    rules = Counted(saved[2])
    seccomp._compile = functools.lru_cache(maxsize=64)(body)  # type: ignore[assignment]
    seccomp.compile_filter = entry  # type: ignore[assignment]
    landlock.compile_rules = rules  # type: ignore[assignment]
    first: list[float] = []
    rest: list[float] = []
    alone: list[float] = []
    try:
        for trial in range(trials):
            own = tempfile.mkdtemp(prefix=f"trial{trial}-", dir=scratch)
            policy = confined(own, namespaces=True, deny=(names[trial % len(names)],))
            filt = policy.confinement.syscalls  # type: ignore[union-attr]
            start = time.perf_counter()
            saved[0].__wrapped__(filt, True)  # the body alone, outside any spawn and cache
            alone.append(time.perf_counter() - start)
            start = time.perf_counter()
            hardexec.run([TRUE], policy=policy, check=True)
            first.append(time.perf_counter() - start)
            for _ in range(later):
                start = time.perf_counter()
                hardexec.run([TRUE], policy=policy, check=True)
                rest.append(time.perf_counter() - start)
    finally:
        seccomp._compile, seccomp.compile_filter, landlock.compile_rules = saved  # type: ignore
    return report_first_spawn(trials, later, (first, rest, alone), (body, entry, rules))


def report_first_spawn(
    trials: int,
    later: int,
    samples: tuple[list[float], list[float], list[float]],
    counted: tuple[Counted, Counted, Counted],
) -> bool:
    """Print what first_spawn_cost found; whether the seccomp body ran once per policy."""
    from hardexec.confine import deps

    first, rest, alone = samples
    body, entry, rules = counted
    spawns = trials * (1 + later)
    hits_us = (entry.seconds - body.seconds) / max(entry.calls, 1) * 1e6
    deps.clear_cache()
    start = time.perf_counter()
    deps.dependencies(TRUE)
    cold_deps = time.perf_counter() - start
    start = time.perf_counter()
    deps.dependencies(TRUE)
    warm_deps = time.perf_counter() - start

    once = body.calls == trials
    per_spawn = rules.calls / spawns
    one_time = statistics.median(first) - statistics.median(rest)
    print(f"{trials} new policies (+everything; a filter and a ruleset no spawn used yet), then")
    print(f"{later} more spawns with each:")
    print(f"{'first spawn with a new policy':<44}{statistics.median(first) * 1e3:>9.3f} ms median")
    print(f"{'later spawns with it':<44}{statistics.median(rest) * 1e3:>9.3f} ms median")
    print(f"{'one-time cost of a new policy':<44}{one_time * 1e3:>9.3f} ms")
    print(f"{'seccomp compile body, alone':<44}{statistics.median(alone) * 1e3:>9.3f} ms median")
    verdict = "once per policy" if once else "NOT once per policy"
    print(
        f"seccomp compile body: {body.calls} runs for {trials} policies and {spawns} spawns "
        f"({verdict}), {body.mean_us():.0f} us each"
    )
    print(
        f"compile_filter: {entry.calls} calls ({entry.calls / spawns:.2f} per spawn), "
        f"{hits_us:.1f} us each besides the body's runs"
    )
    cached = "not cached: runs every spawn" if per_spawn >= 1 else "cached"
    print(
        f"landlock.compile_rules: {rules.calls} calls ({per_spawn:.2f} per spawn, {cached}), "
        f"{rules.mean_us():.1f} us each"
    )
    print(
        f"{'dependencies(/bin/true), cold / cached':<44}{cold_deps * 1e3:>9.3f} ms"
        f"{warm_deps * 1e6:>9.1f} us"
    )
    return once


def measure_confine(rounds: int) -> int:
    """Confined spawns against plain subprocess and the reference tools (see the docstring)."""
    missed = 0
    with tempfile.TemporaryDirectory(prefix="hardexec-bench-") as scratch:
        landlocked = confined(scratch, namespaces=False)
        everything = confined(scratch, namespaces=True)
        hardexec.run([TRUE], policy=POLICY, check=True)  # the spawn modules, imported
        start = time.perf_counter()
        hardexec.run([TRUE], policy=landlocked, check=True)
        cold = time.perf_counter() - start
        chosen: dict[str, Callable[[], object]] = {
            "plain": lambda: subprocess.run([TRUE], check=True),
            "hardexec": lambda: hardexec.run([TRUE], policy=POLICY, check=True),
            LANDLOCK: lambda: hardexec.run([TRUE], policy=landlocked, check=True),
            EVERYTHING: lambda: hardexec.run([TRUE], policy=everything, check=True),
            **reference_variants(),
        }
        print(f"rounds {rounds}")
        times = measure(chosen, rounds)
        print()
        print(f"{'variant':<36}{'median':>12}{'/ plain':>9}")
        for name, seconds in times.items():
            ratio = seconds / times["plain"]
            if name in CONFINE_TARGETS:
                target = CONFINE_TARGETS[name]
                ok = ratio <= target
                missed += not ok
                note = f"target <= {target}{'' if ok else '  MISSED'}"
            elif name in REFERENCES:
                note = f"(anchor {REFERENCES[name][1]})"
            else:
                note = ""
            print(f"{name:<36}{seconds * 1e3:>9.3f} ms{ratio:>8.2f}x   {note}")
        print()
        print(
            f"{'first confined spawn in this process':<44}{cold * 1e3:>9.3f} ms "
            "(confine imports, syscall table, Landlock ABI, libraries)"
        )
        trials, later = (5, 10) if rounds < 100 else (20, 20)
        if not first_spawn_cost(scratch, trials, later):
            missed += 1
    return 1 if missed else 0


def touch_memory(gib: int) -> bytearray:
    block = bytearray(gib << 30)
    block[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * len(range(0, len(block), 4096))
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--gib", type=int, default=4, help="size of the big parent (GiB)")
    parser.add_argument("--vm", action="store_true", help="the cgroup spawn, inside the VM")
    parser.add_argument("--cgroup-only", action="store_true", help="the cgroup spawn, here")
    parser.add_argument("--confine", action="store_true", help="Landlock, seccomp, namespaces")
    parser.add_argument("--rounds", type=int, help="rounds for --vm / --cgroup-only / --confine")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/spawn.py: run as root (capability drops need it)", file=sys.stderr)
        return 2
    if args.vm or args.cgroup_only:
        rounds = args.rounds or (20 if args.quick else 200)
        return in_vm(rounds) if args.vm else measure_cgroup(rounds)
    if args.confine:
        print(f"stage: {stage_command()[0]}")
        kernel = os.uname().release
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, kernel {kernel}")
        return measure_confine(args.rounds or (30 if args.quick else 400))
    rounds, big_rounds = (30, 5) if args.quick else (400, 60)
    print(f"stage: {stage_command()[0]}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, rounds {rounds}/{big_rounds}")

    small = measure(variants(), rounds)
    memory = touch_memory(args.gib)
    big = measure(variants(), big_rounds)
    del memory

    print()
    print(f"{'variant':<20}{'small parent':>16}{f'{args.gib} GiB parent':>16}")
    for name in small:
        print(f"{name:<20}{small[name] * 1e3:>13.3f} ms{big[name] * 1e3:>13.3f} ms")
    print()
    rows = [
        ("hardexec / plain, small parent", small["hardexec"] / small["plain"], "<= 1.5"),
        (f"hardexec / plain, {args.gib} GiB parent", big["hardexec"] / big["plain"], "<= 1.5"),
        ("hardexec / setpriv, small parent", small["hardexec"] / small["setpriv"], "< 1.0"),
        (f"hardexec / setpriv, {args.gib} GiB parent", big["hardexec"] / big["setpriv"], "< 1.0"),
        (f"{VERIFY} / plain, small parent", small[VERIFY] / small["plain"], "none (measured)"),
        (f"{VERIFY} / plain, {args.gib} GiB", big[VERIFY] / big["plain"], "none (measured)"),
        (f"{VERIFY} / hardexec, small", small[VERIFY] / small["hardexec"], "none (measured)"),
        ("preexec_fn / plain, small parent", small["preexec_fn"] / small["plain"], "(baseline)"),
        (f"preexec_fn / plain, {args.gib} GiB", big["preexec_fn"] / big["plain"], "(baseline)"),
    ]
    for label, ratio, target in rows:
        print(f"{label:<40}{ratio:>8.2f}   target {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
