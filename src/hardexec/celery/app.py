"""The Celery side: an app configured for hardened tasks, and the task a worker registers.

Configuration that matters to the guarantees (set by :func:`make_app`, and required of a
user's own app by :func:`install`):

- ``task_acks_late`` and ``task_reject_on_worker_lost``: a message is acknowledged when its task
  has ended, so a task whose pool process died (kill -9, the OOM killer) is delivered again and
  runs once more from scratch; the first attempt's tree was ended by the guard.
- ``worker_prefetch_multiplier = 1``: a worker holds no more messages than it runs, so a dying
  worker strands nothing and a long task does not keep others waiting behind it.
- JSON only (``accept_content``): a message is data, never a pickle, which would run code in
  the worker as it is read.
"""

from __future__ import annotations

import logging

from ..errors import HardexecError, PolicyError
from .task import WorkerSettings, execute, tasks_run_as_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from celery import Celery

    from ..policyfile import PolicyFile

__all__ = ["OUTPUT_STATE", "TASK_NAME", "install", "make_app"]

#: The name hardened tasks are sent and registered under.
TASK_NAME = "hardexec.run"
#: The state a streaming task's lines come in (``meta = {"lines": [[stream, text], ...]}``).
OUTPUT_STATE = "OUTPUT"
logger = logging.getLogger("hardexec")

_CONFIG: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "task_track_started": True,
    # A broker that cannot be reached at start is said at once (a supervisor restarts the
    # worker), not retried a hundred times in silence.
    "broker_connection_retry_on_startup": False,
    "worker_hijack_root_logger": False,
}
_REQUIRED = ("task_acks_late", "task_reject_on_worker_lost")


def make_app(broker: str, backend: str | None = None, *, name: str = "hardexec") -> Celery:
    """A Celery app for hardened tasks: ``broker`` (``redis://…``), ``backend`` (default: the
    broker's URL, which Redis serves as both)."""
    from celery import Celery

    app = Celery(name, broker=broker, backend=backend or broker)
    app.conf.update(_CONFIG)
    return app


def install(
    app: Celery,
    ceiling: PolicyFile,
    *,
    guard: bool = True,
    name: str | None = None,
    allow_root_tasks: bool = False,
) -> WorkerSettings:
    """Register :data:`TASK_NAME` on ``app`` for a worker whose tasks get at most ``ceiling``.

    Call it in the process that becomes the worker (``celery -A … worker`` imports the module
    that calls it; ``hardexec worker`` does it for you). With ``guard`` (the default) the
    worker's main process makes its cgroup directory at start (a worker that cannot refuses to
    start), watches it while it runs and removes it at its end (:mod:`hardexec.treeguard`).

    A root worker's ceiling must name a user tasks run as (``security.user``), unless
    ``allow_root_tasks``: see :func:`~hardexec.celery.task.tasks_run_as_root` for what a task
    as uid 0 can reach, capabilities or not.

    Raises:
        PolicyError: the ceiling leaves tasks as uid 0 (and ``allow_root_tasks`` is not set).
        ValueError: ``app`` lacks the configuration hardened tasks need.
    """
    from celery import signals

    if tasks_run_as_root(ceiling) and not allow_root_tasks:
        raise PolicyError(
            "ceiling: security.user is not set, so tasks would run as uid 0, which owns most of "
            "this machine even without a capability (it can leave its cgroup, signal the "
            'worker, open the broker\'s socket): name a user (security.user = "nobody", say), '
            "or allow root tasks explicitly"
        )

    for key in _REQUIRED:
        if not app.conf.get(key):
            raise ValueError(
                f"celery app {app.main!r}: {key} must be True for hardened tasks (a task "
                "whose worker died is delivered again only then): make it with make_app()"
            )
    settings = WorkerSettings(ceiling, None, name or app.main or "hardexec", guard=guard)

    # Refusals are expected outcomes: Celery logs them in a line, not with a traceback.
    @app.task(name=TASK_NAME, bind=True, throws=(HardexecError,))
    def run_task(
        self: Any, spec: object, policy: object = None, stream: bool = False
    ) -> dict[str, Any]:
        if stream is not True:
            return execute(settings, spec, policy)

        def publish(lines: list[list[str]]) -> None:
            self.update_state(state=OUTPUT_STATE, meta={"lines": lines})

        return execute(settings, spec, policy, publish)

    del run_task
    # worker_init runs in the main process before the pool forks; worker_shutdown at its end.
    # Celery logs what a receiver raises and goes on: a guard that could not start is recorded
    # in the settings, and every task is then refused (fail closed) rather than run unguarded.
    signals.worker_init.connect(lambda **_: settings.start_guard(), weak=False)
    signals.worker_shutdown.connect(lambda **_: settings.stop_guard(), weak=False)
    return settings
