"""The submitter's side: send a TaskSpec and a Policy to the fleet, wait for the Result.

The submitter needs no ceiling and registers no task: a message is sent by name
(:data:`~.app.TASK_NAME`) as plain JSON data, and whatever worker takes it decides, by its own
ceiling, whether it runs.
"""

from __future__ import annotations

import math
import threading

from ..errors import PolicyError, TaskFailed
from ..runner import Result, TaskSpec
from ..serial import policy_to_dict, task_to_dict
from .app import OUTPUT_STATE, TASK_NAME, make_app

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from celery import Celery
    from celery.result import AsyncResult

    from ..policy import Policy

__all__ = ["Submission", "submit"]

# Beyond the task's own timeout, its grace and its drain: Celery's hard time limit is the
# backstop (it kills the pool process, and the guard the tree), never the first to fire.
_TIME_LIMIT_MARGIN = 30.0
_apps: dict[tuple[str, str | None], Celery] = {}
_apps_lock = threading.Lock()


class Submission:
    """A task sent to the fleet.

    Attributes:
        id: the Celery task id.
        async_result: Celery's own handle, for what this class does not wrap.
    """

    def __init__(self, async_result: AsyncResult, *, fail_on_non_zero: bool = False) -> None:
        self.async_result = async_result
        self.id: str = async_result.id
        self.fail_on_non_zero = fail_on_non_zero

    def get(
        self,
        timeout: float | None = None,
        *,
        on_line: Callable[[str, str], Any] | None = None,
    ) -> Result:
        """Wait for the task and return its :class:`~hardexec.runner.Result`.

        ``on_line(stream, text)`` is called with each line as it comes (``"stdout"`` or
        ``"stderr"``, the line without its newline) when the task was submitted with
        ``stream=True``; each stream is cut at the worker's output cap, as the result is.

        Raises what the worker raised: :class:`~hardexec.errors.CeilingError` (the task asked
        for more than the worker allows; it did not run), :class:`~hardexec.errors.PolicyError`
        (the message was not a valid task), :class:`~hardexec.errors.SpawnFailed` (the program
        could not be started there), :class:`~hardexec.errors.TaskFailed` (a task with
        ``fail_on_non_zero`` did not exit 0; it carries the Result), Celery's
        ``TimeLimitExceeded`` or ``TaskRevokedError``; and Celery's ``TimeoutError`` when
        ``timeout`` passes first.
        """
        if on_line is None:
            data = self.async_result.get(timeout=timeout, propagate=True)
            return self._checked(Result.from_dict(data))

        def on_message(meta: dict[str, Any]) -> None:
            if meta.get("status") != OUTPUT_STATE:
                return
            for stream, text in (meta.get("result") or {}).get("lines", ()):
                on_line(stream, text)

        data = self.async_result.get(timeout=timeout, propagate=True, on_message=on_message)
        return self._checked(Result.from_dict(data))

    def _checked(self, result: Result) -> Result:
        if self.fail_on_non_zero and not result.ok:
            raise TaskFailed(result)
        return result

    def ready(self) -> bool:
        """Whether the task has ended (its result, or its error, is in the backend)."""
        return bool(self.async_result.ready())

    def revoke(self, *, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Revoke the task; with ``terminate``, end it where it runs (its tree is killed)."""
        self.async_result.revoke(terminate=terminate, signal=signal)

    def __repr__(self) -> str:
        return f"Submission({self.id!r})"


def submit(
    spec: TaskSpec,
    policy: Policy | None = None,
    *,
    app: Celery | None = None,
    broker: str | None = None,
    backend: str | None = None,
    queue: str | None = None,
    time_limit: float | None = None,
    stream: bool = False,
) -> Submission:
    """Send ``spec`` to run under ``policy`` (narrowed to the worker's ceiling there).

    Args:
        spec: the task.
        policy: what it asks for; ``None``: the worker's ceiling as it stands.
        app: the Celery app to send with; else one made for ``broker`` (and ``backend``).
        broker: the broker's URL (``redis://host:6379/0``), when no ``app`` is given.
        backend: the result backend's URL (default: the broker's).
        queue: the queue to send to (default: Celery's, ``celery``).
        time_limit: Celery's hard time limit in seconds; default: each attempt's timeout,
            ``kill_after`` and ``drain_timeout``, the backoffs between them, and a margin (none
            without a timeout).
        stream: send the program's lines as they come, for :meth:`Submission.get`'s
            ``on_line`` (the result carries them all the same).
    """
    if not isinstance(spec, TaskSpec):
        raise PolicyError(f"submit: spec: expected a TaskSpec, got {type(spec).__name__}")
    if app is None:
        if not broker:
            raise PolicyError("submit: broker: give the broker's URL (or an app)")
        app = _app(broker, backend)
    if time_limit is None and spec.timeout is not None:
        attempt = spec.timeout + spec.kill_after + spec.drain_timeout
        backoffs = sum(min(spec.backoff * 2**n, 60.0) for n in range(spec.retries))
        time_limit = attempt * (spec.retries + 1) + backoffs + _TIME_LIMIT_MARGIN
    options: dict[str, Any] = {}
    if time_limit is not None:
        options["time_limit"] = math.ceil(time_limit)
    if queue is not None:
        options["queue"] = queue
    args = [task_to_dict(spec), None if policy is None else policy_to_dict(policy)]
    kwargs = {"stream": True} if stream else {}
    sent = app.send_task(TASK_NAME, args=args, kwargs=kwargs, **options)
    return Submission(sent, fail_on_non_zero=spec.fail_on_non_zero)


def _app(broker: str, backend: str | None) -> Celery:
    with _apps_lock:
        app = _apps.get((broker, backend))
        if app is None:
            app = _apps[broker, backend] = make_app(broker, backend, name="hardexec-submit")
        return app
