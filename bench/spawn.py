"""Spawn cost of hardexec against plain subprocess, setpriv, and a naive preexec_fn port.

Run as root: ``.venv/bin/python bench/spawn.py`` (``--quick`` for fewer rounds).
Every variant spawns /bin/true with "drop all caps, keep NET_BIND_SERVICE, no_new_privs" (plain
subprocess: no policy). Variants are interleaved round by round so drift in machine load hits all
of them alike; the figure per variant is the median over rounds. Then the same is measured from a
parent holding 4 GiB of touched memory, where fork() (forced by preexec_fn) copies page tables and
vfork() does not. Ratios are printed side by side, each with its target (at most 1.5x plain
subprocess from either parent; faster than setpriv).

``--vm`` measures a spawn with a cgroup of its own (create, write memory.max and pids.max, join,
remove) against a plain spawn inside the VM tier's kernel, whose cgroup v2 has the controllers
this host lacks (it boots once with virtme-ng, like tests/vm; software emulation, so only the
ratio means anything there).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import statistics
import subprocess
import sys
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


def variants() -> dict[str, Callable[[], object]]:
    hook = naive_preexec()
    return {
        "plain": lambda: subprocess.run([TRUE], check=True),
        "hardexec": lambda: hardexec.run([TRUE], policy=POLICY, check=True),
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
    parser.add_argument("--rounds", type=int, help="rounds for --vm / --cgroup-only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/spawn.py: run as root (capability drops need it)", file=sys.stderr)
        return 2
    if args.vm or args.cgroup_only:
        rounds = args.rounds or (20 if args.quick else 200)
        return in_vm(rounds) if args.vm else measure_cgroup(rounds)
    rounds, big_rounds = (30, 5) if args.quick else (400, 60)
    print(f"stage: {stage_command()[0]}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, rounds {rounds}/{big_rounds}")

    small = measure(variants(), rounds)
    memory = touch_memory(args.gib)
    big = measure(variants(), big_rounds)
    del memory

    print()
    print(f"{'variant':<12}{'small parent':>16}{f'{args.gib} GiB parent':>16}")
    for name in small:
        print(f"{name:<12}{small[name] * 1e3:>13.3f} ms{big[name] * 1e3:>13.3f} ms")
    print()
    rows = [
        ("hardexec / plain, small parent", small["hardexec"] / small["plain"], "<= 1.5"),
        (f"hardexec / plain, {args.gib} GiB parent", big["hardexec"] / big["plain"], "<= 1.5"),
        ("hardexec / setpriv, small parent", small["hardexec"] / small["setpriv"], "< 1.0"),
        (f"hardexec / setpriv, {args.gib} GiB parent", big["hardexec"] / big["setpriv"], "< 1.0"),
        ("preexec_fn / plain, small parent", small["preexec_fn"] / small["plain"], "(baseline)"),
        (f"preexec_fn / plain, {args.gib} GiB", big["preexec_fn"] / big["plain"], "(baseline)"),
    ]
    for label, ratio, target in rows:
        print(f"{label:<36}{ratio:>8.2f}   target {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
