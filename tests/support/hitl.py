"""Answering a Human-in-the-loop task while `dag.test()` waits for it, from outside the run, as Airflow does.

`dag.test()` parks a HITL task in `awaiting_input` and waits until something outside the run resumes it. `Responder`
is that something: a thread that waits for the task to park, then records the answer and resumes the task with the
same model calls as the REST API's `PATCH .../hitlDetails` handler (`update_hitl_detail`), or lets the deadline
pass and runs the scheduler's own timeout sweep (`SchedulerJobRunner.check_awaiting_input_timeouts`).

    with Responder("db_restore", "approve_live_restore", answer="Approve", user="approver") as responder:
        run = dag.test(run_conf=...)
    responder.request  # the HITL detail the task wrote (subject, body, assigned_users, ...); None if never asked

`params` is the form's input (`params_input`). A task that asks again (the same question, its answer cleared) is
answered again by a new Responder; `respond()` does it in the caller's thread, returning once answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Responder:
    dag_id: str
    task_id: str
    answer: str | None = None
    user: str | None = None
    # No answer: wait until the response deadline has passed, then run the scheduler's timeout sweep.
    timeout_sweep: bool = False
    params: dict | None = None
    # Called (with the question) right before the answer: what happens in the world while a person types.
    before_answer: Callable[[dict], None] | None = None
    request: dict | None = None
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Responder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.errors:
            raise self.errors[0]

    def respond(self, timeout: float = 120) -> Responder:
        """Wait for the question (one not answered yet), then answer it or let it time out; in this thread."""
        timer = threading.Timer(timeout, self._stop.set)
        timer.start()
        try:
            self._respond()
        finally:
            timer.cancel()
        if self.request is None:
            raise TimeoutError(f"{self.task_id} of {self.dag_id} did not ask within {timeout:.0f} s")
        return self

    def _run(self) -> None:
        try:
            self._respond()
        except BaseException as exc:  # reported by __exit__, in the test's thread
            self.errors.append(exc)

    def _parked(self, session):
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        return session.scalars(
            select(TaskInstance)
            .where(
                TaskInstance.dag_id == self.dag_id,
                TaskInstance.task_id == self.task_id,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
            )
            .options(joinedload(TaskInstance.hitl_detail))
        ).first()

    def _respond(self) -> None:
        from airflow._shared.timezones import timezone
        from airflow.models.hitl import HITLUser
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session

        while not self._stop.is_set():
            with create_session() as session:
                ti = self._parked(session)
                if ti is not None and ti.hitl_detail is not None and not ti.hitl_detail.response_received:
                    detail = ti.hitl_detail
                    self.request = {
                        "subject": detail.subject,
                        "body": detail.body,
                        "options": list(detail.options),
                        "assigned_users": list(detail.assigned_users or []),
                        "defaults": detail.defaults,
                    }
                    if self.timeout_sweep:
                        self._sweep_after(ti.trigger_timeout)
                        return
                    if self.before_answer is not None:
                        self.before_answer(self.request)
                    detail.responded_by = HITLUser(id=self.user, name=self.user)
                    detail.responded_at = timezone.utcnow()
                    detail.chosen_options = [self.answer]
                    detail.params_input = self.params or {}
                    session.add(detail)
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                    return
            self._stop.wait(0.3)

    def _sweep_after(self, trigger_timeout) -> None:
        from airflow._shared.timezones import timezone
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.utils.session import create_session

        assert trigger_timeout is not None, "the task parked without a response deadline"
        time.sleep(max(0.0, (trigger_timeout - timezone.utcnow()).total_seconds()) + 0.5)
        runner = SchedulerJobRunner.__new__(SchedulerJobRunner)  # the sweep needs only the runner's logger
        with create_session() as session:
            runner.check_awaiting_input_timeouts(session=session)
