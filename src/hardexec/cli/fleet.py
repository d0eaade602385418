"""``hardexec worker`` and ``hardexec submit``: the fleet on Celery, from the shell.

``hardexec worker --broker URL --ceiling FILE [--concurrency N]`` is a Celery worker (prefork
pool) that runs each task through the runner within the ceiling (``--ceiling`` a policy file,
``--profile`` a profile, or both: the file over the profile). One of them is required: a worker
with no ceiling would run whatever the queue asks as root, so ``--profile none`` must say so.
A ceiling that does not say ``run.env_policy`` clears the environment, and one without
``security.user`` is refused (tasks as uid 0) unless ``--allow-root-tasks``. The broker's URL
may come from ``$HARDEXEC_BROKER`` instead of the command line, which every user can read.

``hardexec submit --broker URL [run options] -- COMMAND [ARG...]`` sends COMMAND with the policy
the run options ask for (the same options as ``hardexec run``, ``--policy`` and ``--profile``
included), waits for its result, prints the program's output on stdout and stderr, and exits
with its status, as ``run`` does: 124 timed out, 125 refused (the worker's ceiling, a bad
policy), 127 not found and 126 not executable there. ``--stream`` prints the program's lines
as they come (each stream cut at the worker's output cap); ``--json`` prints the Result as
JSON instead; ``--no-wait`` prints the task id and exits 0.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

from .options import EXIT_FAILURE, EXIT_NOEXEC, EXIT_NOTFOUND, fail, format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from typing import Any

    from ..policyfile import PolicyFile
    from .options import Request

__all__ = ["submit_command", "worker_command"]

_EXIT_TIMEOUT = 124
_EXIT_INTERRUPTED = 130  # as a shell shows ^C
# A program that could not start there exits as `hardexec run` would: 127 not found, 126 not
# executable.
_SPAWN_STATUS = {errno.ENOENT: EXIT_NOTFOUND, errno.EACCES: EXIT_NOEXEC, errno.ENOEXEC: EXIT_NOEXEC}


def ceiling(ns: Namespace) -> PolicyFile:
    """The worker's ceiling from ``--profile`` and ``--ceiling`` (or exit 125 saying why)."""
    from ..errors import PolicyError
    from ..policyfile import PROFILES, file_plain, from_plain, load_dict, merge

    if ns.ceiling is None and ns.profile is None:
        fail(
            "worker: no ceiling: give --ceiling FILE and/or --profile NAME, and --user NAME if "
            "neither names one (a worker with no ceiling runs whatever its queue asks, with "
            "this worker's privileges; --profile none --user NAME means only that)"
        )
    base: dict[str, object] = {"version": 1}
    if ns.profile is not None:
        if ns.profile not in PROFILES:
            fail(f"--profile: {ns.profile!r} is not a profile ({', '.join(PROFILES)})")
        base = PROFILES[ns.profile]
    name = ns.ceiling or f"--profile {ns.profile}"
    try:
        if ns.ceiling is not None:
            base = merge(base, file_plain(load_dict(ns.ceiling), ns.ceiling))
        if ns.user is not None:  # the worker's --user: the identity every task runs as
            base = merge(base, {"security": {"user": ns.user}})
        run = base.get("run")
        if not isinstance(run, dict) or "env_policy" not in run:
            # Unsaid, a worker's ceiling clears the environment: the worker's own (its broker's
            # address, its credentials) reaches a task only if the ceiling says inherit.
            base = merge(base, {"run": {"env_policy": "clear"}})
        return from_plain(base, name)  # type: ignore[arg-type]
    except PolicyError as err:
        fail(f"--ceiling: {err}")


def broker(ns: Namespace) -> str:
    """``--broker``, else ``$HARDEXEC_BROKER`` (taken out of the environment: a task that
    inherits it, or reads this process's command line, must not learn the broker's password)."""
    url = ns.broker or os.environ.pop("HARDEXEC_BROKER", None)
    if not url:
        fail(f"{ns.command}: no broker: give --broker URL or set HARDEXEC_BROKER")
    if "://" not in url:
        fail(f"--broker: {url!r} is not a URL (redis://HOST:PORT/DB, redis+socket:///PATH)")
    try:
        from kombu import Connection

        Connection(url).get_transport_cls()
    except ImportError:
        pass  # without Celery: said where it is needed
    except KeyError:
        fail(f"--broker: {url.split('://')[0]!r} is not a broker Celery knows (redis, rediss)")
    return url


def worker_command(ns: Namespace) -> int:
    """Run a Celery worker for hardened tasks until it is stopped; its exit status."""
    from ..errors import HardexecError

    url = broker(ns)
    limits = ceiling(ns)
    if ns.concurrency < 1:
        fail(f"--concurrency: {ns.concurrency} is not a positive number")
    try:
        from ..celery import install, make_app
    except ImportError as err:
        fail(str(err))
    app = make_app(url, ns.backend)
    if ns.visibility_timeout is not None:
        if not ns.visibility_timeout > 0:
            fail(f"--visibility-timeout: {ns.visibility_timeout:g} is not a positive number")
        app.conf.broker_transport_options = {"visibility_timeout": ns.visibility_timeout}
    try:
        settings = install(
            app, limits, guard=not ns.no_guard, name=ns.name, allow_root_tasks=ns.allow_root_tasks
        )
        settings.start_guard()
    except HardexecError as err:
        message = str(err).replace(
            'name a user (security.user = "nobody", say), or allow root tasks explicitly',
            "give --user NAME (or security.user in the --ceiling file), or --allow-root-tasks",
        )
        fail(f"worker: {message}")
    import warnings

    from celery.exceptions import SecurityWarning

    # Celery discourages a root worker because a pickled message runs code as it is read; this
    # worker accepts JSON only, and is root to give each task the identity its policy names.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    # Celery's banner only when its log is asked for in detail.
    quiet = [] if ns.loglevel.lower() in ("info", "debug") else ["--quiet"]
    argv = [
        *quiet,
        "worker",
        f"--concurrency={ns.concurrency}",
        "--pool=prefork",
        f"--loglevel={ns.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if ns.name:
        argv.append(f"--hostname={ns.name}")
    if ns.queue:
        argv.append(f"--queues={ns.queue}")
    from celery import signals

    def ready(sender: Any = None, **_: Any) -> None:
        where = settings.directory or "no cgroup (--no-guard)"
        line = (
            f"hardexec: worker {getattr(sender, 'hostname', '')} ready: {ns.concurrency} "
            f"processes, ceiling {ns.ceiling or '--profile ' + str(ns.profile)}, tasks' groups "
            f"in {where}\n"
        )
        os.write(2, line.encode(errors="replace"))  # fd 2 itself: Celery logs sys.stderr

    signals.worker_ready.connect(ready, weak=False)
    try:
        app.worker_main(argv)
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else EXIT_FAILURE
    finally:
        settings.stop_guard()
    return 0


def _print_line(stream: str, text: str) -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    print(text, file=out, flush=True)


def _refuse_local_only(req: Request) -> None:
    """The run options that mean something only where hardexec itself supervises the program."""
    if req.verify:
        fail("submit: --verify: the worker decides how it runs tasks (not a per-task option)")
    if req.max_output:
        fail(
            f"submit: max_output ({format_size(req.max_output)}, from --max-output or the "
            "policy file's run.max_output): a worker caps every result by its ceiling's "
            "run.max_output, not per task"
        )
    if req.json_result:
        fail("submit: --json-result: use --json, which prints the result on stdout")
    if req.keep_leftovers:
        fail("submit: --keep-leftovers: a worker ends every task's tree when the task ends")


def submit_command(req: Request, ns: Namespace) -> int:
    """Send the request's command to the fleet; its exit status, as ``run`` would give it."""
    _refuse_local_only(req)
    if ns.stream and (ns.no_wait or ns.json):
        fail("submit: --stream: prints lines as they come; not with --no-wait or --json")
    try:
        from ..celery import submit
    except ImportError as err:
        fail(str(err))
    assert req.task is not None  # request() always builds one
    url = broker(ns)
    try:
        handle = submit(
            req.task, req.declared, broker=url, backend=ns.backend, queue=ns.queue, stream=ns.stream
        )
    except Exception as err:  # the broker cannot be reached: kombu's and redis's own errors
        fail(f"submit: cannot send to the broker: {type(err).__name__}: {err}")
    if ns.no_wait:
        print(handle.id)
        return 0
    return _wait(handle, req, ns)


def _wait(handle: Any, req: Request, ns: Namespace) -> int:
    """Wait for the task; print what it printed; its exit status. Interrupted (^C, SIGTERM) or
    out of ``--wait``, the task is revoked: nothing this command sent runs on unattended."""
    from ..errors import HardexecError

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        result = handle.get(timeout=ns.wait, on_line=_print_line if ns.stream else None)
    except KeyboardInterrupt:
        handle.revoke(terminate=True)
        print(f"hardexec: submit: interrupted: task {handle.id} revoked", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except (HardexecError, OSError) as err:  # refused by the worker, or the spawn failed
        print(f"hardexec: submit: task {handle.id}: {err}", file=sys.stderr)
        return _SPAWN_STATUS.get(getattr(err, "errno", None), EXIT_FAILURE)
    except Exception as err:  # Celery's own: a time limit, a revoke, a timeout waiting
        if type(err).__name__ == "TimeoutError":
            handle.revoke(terminate=True)
            print(
                f"hardexec: submit: task {handle.id} did not end within --wait {ns.wait:g} s: "
                "revoked",
                file=sys.stderr,
            )
            return _EXIT_TIMEOUT
        print(f"hardexec: submit: task {handle.id}: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _report(result, req, ns)


def _report(result: Any, req: Request, ns: Namespace) -> int:
    if ns.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not ns.stream:
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.write(result.stderr)
    if not ns.json:
        for warning in result.warnings:
            print(f"hardexec: warning: {warning}", file=sys.stderr)
        cut = result.truncated
        for name, size, lines in (
            ("stdout", cut.stdout_bytes, cut.stdout_lines),
            ("stderr", cut.stderr_bytes, cut.stderr_lines),
        ):
            if size or lines:
                print(
                    f"hardexec: {size} bytes ({lines} lines) of {name} over the worker's "
                    "max_output were dropped",
                    file=sys.stderr,
                )
        if req.usage and result.usage is not None:
            from .supervise import _describe_usage

            print(f"hardexec: usage: {_describe_usage(result.usage)}", file=sys.stderr)
    if result.timed_out:
        return _EXIT_TIMEOUT
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code if result.exit_code is not None else EXIT_FAILURE
