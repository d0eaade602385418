"""``hardexec explain [OPTIONS] -- COMMAND [ARG...]``: what ``run`` would give COMMAND, unrun.

It takes every ``run`` option, and says, without running anything: each capability set of
hardexec's own process and what the program would hold after its exec (hex and names),
NoNewPrivs, the ids, the rlimits, the cgroup files and where they would go, the confinement,
the warnings the run would give, and the exposure score with each check passed or failed
(:mod:`hardexec.explain`). ``--json`` prints one document instead (schema ``version`` 1, the
keys of :meth:`hardexec.explain.Explanation.to_dict`). With ``--verify`` it says what the
verified run would find: the exec traced by hardexec (no set-user-ID or file-capability gain
for a launcher without CAP_SYS_PTRACE), and a refusal when the program would hold more than
the policy.

Exit status: 0 when the run would start the program. When hardexec would refuse it (or could
not start it), the explanation is printed all the same, then one line on stderr says so and
what ``run`` would exit with, and the status is 125 — the run's own refusal status, so a
script can ask ``explain`` whether a policy is applicable here.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..explain import Explanation
    from .options import Request

__all__ = ["explain_command", "render"]


def _ids(values: tuple[int, ...]) -> str:
    return " ".join(map(str, values)) or "(none)"


def render(e: Explanation) -> list[str]:
    """The explanation as the lines ``hardexec explain`` prints."""
    from ..explain import level

    lines = [f"program     {' '.join(e.argv)}  ->  {e.prediction.program or '(none would run)'}"]
    lines.append("")
    lines.extend(_capabilities(e))
    lines.extend(_limits(e))
    lines.extend(_cgroup(e))
    lines.append("confinement")
    lines.extend(f"  {topic:<14} {text}" for topic, text in e.confinement)
    if not e.confinement:
        lines.append("  none")
    if e.warnings or e.notes:
        lines.append("warnings")
        lines.extend(f"  warning: {text}" for text in e.warnings)
        lines.extend(f"  note: {text}" for text in e.notes)
    lines.append("")
    lines.append(f"  {'':4} {'weight':>6}  {'check':<16} {'exposed when':<44} found")
    for r in e.checks:
        mark = "pass" if r.passed else "FAIL"
        check = r.check
        lines.append(
            f"  {mark:4} {check.weight:>6.1f}  {check.name:<16} {check.title:<44} {r.detail}"
        )
    lines.append(f"overall exposure level: {e.score:.1f} {level(e.score)}")
    return lines


def _capabilities(e: Explanation) -> list[str]:
    from ..predict import SECBIT_NOROOT

    p, launcher = e.prediction, e.launcher
    lines = ["capabilities (hardexec's own  ->  the program's after exec)"]
    before = {
        "CapInh": launcher.inh,
        "CapPrm": launcher.prm,
        "CapEff": launcher.eff,
        "CapBnd": launcher.bnd,
        "CapAmb": launcher.amb,
    }
    for name, new in p.sets().items():
        old = before[name]
        lines.append(f"  {name}  {old.to_hex()}  ->  {new.to_hex()}  {new}")
        dropped, gained = old - new, new - old
        if dropped:
            some = str(dropped) if len(dropped) <= 6 else f"{len(dropped)} capabilities"
            lines.append(f"          dropped: {some}")
        if gained:
            lines.append(f"          gained:  {gained}")
    lines.append(f"  NoNewPrivs  {int(launcher.no_new_privs)}  ->  {int(p.no_new_privs)}")
    noroot = " (SECBIT_NOROOT: uid 0 gets nothing at exec)" if p.securebits & SECBIT_NOROOT else ""
    lines.append(f"  securebits  {launcher.securebits:#x}  ->  {p.securebits:#x}{noroot}")
    if p.user_namespace:
        lines.append("  (the program's capabilities are over its own user namespace only)")
    lines.append("identity")
    lines.append(f"  Uid     {_ids(launcher.uids)}  ->  {_ids(p.uids)}")
    lines.append(f"  Gid     {_ids(launcher.gids)}  ->  {_ids(p.gids)}")
    lines.append(f"  Groups  {_ids(launcher.groups)}  ->  {_ids(p.groups)}")
    return lines


def _limits(e: Explanation) -> list[str]:
    lines = ["limits"]
    if not e.rlimits and e.timeout is None:
        lines.append("  none")
    for r in e.rlimits:
        lower = f" (asked {r.asked}; the launcher's hard limit is lower)"
        lines.append(f"  RLIMIT_{r.name:<7} {r.readable}{lower if r.asked != r.value else ''}")
    if e.timeout is not None:
        lines.append(f"  timeout        {e.timeout:g} s, then SIGTERM to the tree")
    return lines


def _cgroup(e: Explanation) -> list[str]:
    from ..explain import readable_size

    g = e.cgroup
    if g is None:
        return ["cgroup", "  none"]
    lines = ["cgroup", f"  group   {g.parent or '(no parent found)'}/{g.name}"]
    for name, value in g.files:
        size = f" ({readable_size(int(value))})" if name == "memory.max" else ""
        lines.append(f"  {name:<11} {value}{size}")
    lines.append(f"  usable  {'yes' if g.usable else f'no: {g.why}'}")
    return lines


def explain_command(req: Request, as_json: bool) -> int:
    """Print what ``hardexec run`` with the same options would give the program.

    Args:
        req: the ``run`` options, checked (``hardexec.cli.options.request``).
        as_json: one JSON document instead of text.

    Returns:
        0, or 125 when hardexec would refuse the run (one line on stderr says why).
    """
    from ..explain import explain

    e = explain(req.argv, req.policy, task=req.task, env=req.env, verify=req.verify)
    try:
        if as_json:
            import json

            json.dump(e.to_dict(), sys.stdout, indent=2)
            print()
        else:
            print("\n".join(render(e)))
        sys.stdout.flush()
    except BrokenPipeError:  # `hardexec explain ... | head`: the reader left, which is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if e.refused is not None:
        from .supervise import in_cli_words

        why = in_cli_words(e.refused)
        print(
            f"hardexec: explain: the run would be refused (exit {e.exit_status}): {why}",
            file=sys.stderr,
        )
        return 125
    return 0
