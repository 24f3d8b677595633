"""Timeouts and retry policies shared by every activity call."""

from datetime import timedelta

from temporalio.common import RetryPolicy

with __import__("temporalio").workflow.unsafe.imports_passed_through():
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
# Each activity is one short transaction; a lock wait is capped at 5 s in the session (core/db.py),
# so an attempt that runs longer belongs to a dead worker and is retried elsewhere.
DB_TIMEOUT = timedelta(seconds=10)
