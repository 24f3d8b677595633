"""Domain metrics recorded by the worker, and the worker's Prometheus endpoint.

The worker exposes one endpoint (METRICS_PORT): the Temporal SDK's own series (task latencies, slots,
sticky cache, ...) and the domain series below, all recorded through Temporal metric meters:

- the case workflow records time to assign and time to resolve when it adopts the new state, through
  `workflow.metric_meter()`, which records nothing while a workflow replays its history;
- activities record hand-offs and reconciler repairs right after their transaction commits, through
  `activity.metric_meter()` (activities never replay; see activities/reporting.py for the one retry case).

Workflows import this module passed through the sandbox, like the models and schemas it reads.
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from temporalio.common import MetricMeter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from core.models import CaseStatus
from workflows.messages import CaseRecord, ReconcileResult, Reservation

TIME_TO_ASSIGN = "returns_time_to_assign_seconds"
TIME_TO_RESOLVE = "returns_time_to_resolve_seconds"
HANDOFFS = "returns_handoffs_total"
WEBHOOK_ATTEMPTS = "returns_webhook_attempts_total"
WEBHOOK_FAILURES = "returns_webhook_failures_total"
WEBHOOK_LAG = "returns_webhook_lag_seconds"
RECONCILER_REPAIRS = "returns_reconciler_repairs_total"

# A case may be assigned in milliseconds or wait for days.
TIME_TO_ASSIGN_BUCKETS: Sequence[float] = (
    0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 259200,
)  # fmt: skip
TIME_TO_RESOLVE_BUCKETS: Sequence[float] = (
    1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 259200, 604800,
)  # fmt: skip


def worker_runtime(metrics_port: int, host: str = "0.0.0.0") -> Runtime:
    """The worker's Temporal runtime: Prometheus on `metrics_port` (0: none), SDK core logs sent to Python logging.

    Forwarded core logs come out as JSON and redacted, like ours. Create the runtime once per process and pass
    it to `Client.connect`: each runtime binds its own port.
    """
    metrics = None
    if metrics_port:
        metrics = PrometheusConfig(
            bind_address=f"{host}:{metrics_port}",
            histogram_bucket_overrides={
                TIME_TO_ASSIGN: TIME_TO_ASSIGN_BUCKETS,
                TIME_TO_RESOLVE: TIME_TO_RESOLVE_BUCKETS,
            },
        )
    core_logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    return Runtime(telemetry=TelemetryConfig(logging=core_logs, metrics=metrics))


def _seconds_between(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())


def record_case_transition(meter: MetricMeter, before: CaseRecord | None, after: CaseRecord) -> None:
    """Observe time to assign (queued to assigned) and time to resolve (queued to resolved) on entering those states.

    Both are measured from `queued_at`, the time the case joined the queue (kept when a case is put back),
    with the database's timestamps, so the metric and the history endpoint agree.
    """
    if before is not None and before.status == after.status:
        return
    labels = {"team": after.team, "priority": after.priority.value}
    if after.status == CaseStatus.ASSIGNED:
        waited = _seconds_between(after.queued_at, after.assigned_at)
        if waited is not None:
            meter.create_histogram_float(
                TIME_TO_ASSIGN, "Time from joining the queue to being assigned an agent", "s"
            ).record(waited, labels)
    elif after.status == CaseStatus.RESOLVED:
        took = _seconds_between(after.queued_at, after.resolved_at)
        if took is not None:
            meter.create_histogram_float(TIME_TO_RESOLVE, "Time from joining the queue to being resolved", "s").record(
                took, labels
            )


def record_handoffs(meter: MetricMeter, team: str, reservations: list[Reservation]) -> None:
    """Count freed agents who were handed a waiting case in the transaction that freed them."""
    if reservations:
        meter.create_counter(HANDOFFS, "Agents freed by a resolve or cancel who took the next waiting case").add(
            len(reservations), {"team": team}
        )


def record_reconciler_repairs(meter: MetricMeter, result: ReconcileResult) -> None:
    """Count what the reconciler had to fix, by kind: missed dispatches, lost signals, drift."""
    counter = meter.create_counter(RECONCILER_REPAIRS, "Problems the reconciler found and repaired")
    for kind, count in (
        ("dispatched", len(result.dispatched)),
        ("resignalled", len(result.resignalled)),
        ("repaired", len(result.repaired)),
    ):
        if count:
            counter.add(count, {"kind": kind})


def record_webhook_attempt(meter: MetricMeter, endpoint_id: str, succeeded: bool) -> None:
    """Count one delivery attempt to an endpoint, and its failure."""
    labels = {"endpoint": endpoint_id}
    meter.create_counter(WEBHOOK_ATTEMPTS, "Webhook delivery attempts, per endpoint").add(1, labels)
    if not succeeded:
        meter.create_counter(WEBHOOK_FAILURES, "Webhook delivery attempts that failed, per endpoint").add(1, labels)


def record_webhook_lag(meter: MetricMeter, endpoint_id: str, oldest_pending: datetime | None, now: datetime) -> None:
    """How far an endpoint is behind: now minus its oldest undelivered wanted event (0 when caught up)."""
    lag = 0.0 if oldest_pending is None else max(0.0, (now - oldest_pending).total_seconds())
    meter.create_gauge_float(
        WEBHOOK_LAG, "Now minus the oldest event an endpoint wants and has not received, per endpoint", "s"
    ).set(lag, {"endpoint": endpoint_id})
