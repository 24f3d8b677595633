"""How every database step of a workflow runs: timeouts, retries, and the history bound under an outage."""

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from core.config import ACTIVITY_START_TO_CLOSE_SECONDS
    from core.errors import ERRORS_BY_TYPE

# Database activities are short; a deadlock or a lost connection is retried with backoff,
# forever, because a case must never be dropped. Business refusals are not retried.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
    non_retryable_error_types=list(ERRORS_BY_TYPE),
)
# Each activity is one short transaction; a lock wait is capped at 5 s and a socket read at 8 s in the
# session (core/db.py), so an attempt that runs longer belongs to a dead worker and is retried elsewhere.
DB_TIMEOUT = timedelta(seconds=ACTIVITY_START_TO_CLOSE_SECONDS)
# How long a step keeps retrying as a local activity. A local activity retries inside the workflow task,
# which the SDK heartbeats (three history events every 8 s or so), so it must not retry for long: past
# this window the step goes on as a regular activity, whose retries the server keeps without writing
# history. Long enough to ride out a deadlock, a failover or a worker restart.
LOCAL_ATTEMPT_WINDOW = timedelta(seconds=25)
# The window is enforced twice, because the SDK (temporalio 1.35) drops a local activity's
# schedule-to-close deadline that falls while the activity waits out a retry backoff, as it does when the
# database refuses at once: so also at most 8 attempts (backoffs 0.2 + 0.4 + ... + 6.4 + 10 s = 22.6 s).
# A hung database is bounded by the deadline, which does fire while an attempt runs.
LOCAL_DB_RETRY = RetryPolicy(
    initial_interval=DB_RETRY.initial_interval,
    backoff_coefficient=DB_RETRY.backoff_coefficient,
    maximum_interval=DB_RETRY.maximum_interval,
    maximum_attempts=8,
    non_retryable_error_types=DB_RETRY.non_retryable_error_types,
)


async def db_step[S, P, R](activity: Callable[[S, P], R], arg: P, *, summary: str) -> R:
    """Run one database step: a local activity for up to LOCAL_ATTEMPT_WINDOW, then, if the database is still
    failing, the same step as a regular activity retried by the server until it succeeds.

    A business refusal (a non-retryable ApplicationError) comes out as that ApplicationError, whichever
    form ran the step; nothing else is caught.
    """
    try:
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            schedule_to_close_timeout=LOCAL_ATTEMPT_WINDOW,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=LOCAL_DB_RETRY,
            summary=summary,
        )
    except FailureError as err:
        refusal = _refusal(err)
        if refusal is not None:
            raise refusal from None
        if isinstance(err.cause if isinstance(err, ActivityError) else err, CancelledError):
            raise
        # What is left: a transient error that the window ran out on.
        workflow.logger.warning("database step still failing after %s; waiting it out: %s", LOCAL_ATTEMPT_WINDOW, err)
    try:
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"{summary} (the database was failing)",
        )
    except FailureError as err:
        refusal = _refusal(err)
        if refusal is not None:
            raise refusal from None
        raise


def _refusal(err: FailureError) -> ApplicationError | None:
    """The business refusal a failed step carries (a local activity raises it bare, a regular one inside an
    ActivityError), or None."""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError) and cause.non_retryable:
        return cause
    return None
