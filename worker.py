"""The Temporal worker: runs case workflows, the reconciler and their database activities."""

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.cases import CaseActivities
from activities.webhooks import WebhookActivities
from core import webhooks as webhook_service
from core.config import Settings, get_settings, require_secret_key
from core.db import make_engine, make_session_factory
from core.logging import configure_logging
from core.metrics import worker_runtime
from core.temporal import connect, ensure_reconciler
from core.webhook_runs import ensure_webhook_deliveries
from workflows.reconcile import ReconcileWorkflow
from workflows.return_case import ReturnCaseWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS: Sequence[type] = (ReturnCaseWorkflow, ReconcileWorkflow, WebhookDeliveryWorkflow)

log = logging.getLogger("returns.worker")


def all_activities(
    session_factory: sessionmaker[Session], settings: Settings, client: Client
) -> list[Callable[..., Any]]:
    """Every activity the worker runs (production and tests register the same list)."""
    return [*CaseActivities(session_factory).all(), *WebhookActivities(session_factory, settings, client).all()]


def build_worker(
    client: Client, settings: Settings, activities: Sequence[Callable[..., Any]], executor: ThreadPoolExecutor
) -> Worker:
    """The worker exactly as production runs it (tests build theirs here too)."""
    return Worker(
        client,
        task_queue=settings.TASK_QUEUE,
        workflows=list(WORKFLOWS),
        activities=list(activities),
        activity_executor=executor,
        # The sandbox re-imported the workflow module for every new case (a third of the worker's busy CPU).
        # Determinism is kept by the workflows' own imports and by tests/test_replay.py, which replays every
        # recorded history both in the sandbox (it rejects a nondeterministic call) and as production runs.
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=settings.ACTIVITY_THREADS,
        # In-flight activities get this long to finish on SIGTERM before they are handed back.
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    # One runtime per process: it owns the metrics endpoint (SDK and domain series) on METRICS_PORT.
    client = await connect(settings, worker_runtime(settings.METRICS_PORT))
    if settings.METRICS_PORT:
        log.info("worker metrics on :%d/metrics", settings.METRICS_PORT)
    engine = make_engine(settings.DATABASE_URL, pool_size=settings.ACTIVITY_THREADS, settings=settings)
    session_factory = make_session_factory(engine)
    await ensure_reconciler(client, settings)
    with session_factory() as session:
        endpoints = webhook_service.enabled_endpoint_ids(session=session)
    await ensure_webhook_deliveries(client, settings, endpoints)
    with ThreadPoolExecutor(max_workers=settings.ACTIVITY_THREADS) as executor:
        worker = build_worker(client, settings, all_activities(session_factory, settings, client), executor)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker polling task queue %s on %s", settings.TASK_QUEUE, settings.TEMPORAL_ADDRESS)
        async with worker:
            await stop.wait()
            log.info("worker shutting down: finishing in-flight activities")
    engine.dispose()
    log.info("worker stopped")


if __name__ == "__main__":
    require_secret_key(get_settings())
    configure_logging(get_settings().LOG_LEVEL)
    asyncio.run(run_worker(get_settings()))
