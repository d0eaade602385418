"""Hardened tasks across many machines on Celery (with Redis as broker and result backend).

    from hardexec.celery import submit
    result = submit(TaskSpec.command(["./grade", "sub42"]), policy, broker=URL).get(timeout=60)

A worker (``hardexec worker --broker URL --ceiling worker.toml``, or :func:`install` on a
Celery app of your own) runs each task through the runner, within its ceiling: a submitted
policy may only narrow it (:mod:`hardexec.ceiling`), and each task's tree ends with the
process running it (:mod:`hardexec.treeguard`). Modules: :mod:`.app` (the app and the task),
:mod:`.task` (one task, on the worker), :mod:`.submit` (the submitter's side). Needs the
``celery`` extra (``pip install 'hardexec[celery]'``).
"""

from __future__ import annotations

try:
    import celery as _celery  # noqa: F401  (present: the rest may import it)
except ImportError as err:  # pragma: no cover (the test extra installs it)
    raise ImportError(
        "hardexec.celery needs Celery and the Redis client: pip install 'hardexec[celery]'"
    ) from err

from .app import TASK_NAME, install, make_app
from .submit import Submission, submit

__all__ = ["TASK_NAME", "Submission", "install", "make_app", "submit"]
