"""The API's Prometheus endpoint: requests per route template, and the queue figures read when scraped.

Each app has its own registry, so several apps in one process (tests) never collide.
"""

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.security import Public
from core.teams import queue_figures

log = logging.getLogger("returns.api.metrics")

# Requests that match no route share one label value, so unknown paths cannot blow up the series count.
UNMATCHED_ROUTE = "<unmatched>"
REQUEST_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)


class HttpMetrics:
    """Request count (by method, route template and status), latency and requests in flight."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "returns_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "returns_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ["method", "route"],
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "returns_http_requests_in_flight", "HTTP requests being answered right now", registry=registry
        )


def route_template(scope: Scope) -> str:
    """The matched route's path template with its router prefix (`/api/v1/cases/{case_id}`), or UNMATCHED_ROUTE."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return UNMATCHED_ROUTE
    # The route knows its path relative to its router; the prefix is what the request path has in front of it.
    segments = str(scope.get("path", "")).rstrip("/").split("/")
    route_depth = path_format.rstrip("/").count("/")
    return "/".join(segments[: max(len(segments) - route_depth, 0)]) + path_format


class RequestMetricsMiddleware:
    """Pure ASGI middleware that times every HTTP request and counts it by route template and status."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.in_flight.dec()
            method, route = scope["method"], route_template(scope)
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, route, str(status)).inc()


class QueueCollector(Collector):
    """Per-team queue depth, oldest wait and agent counts, read from the database at scrape time."""

    def __init__(self, session_factory: Callable[[], sessionmaker[Session] | None]) -> None:
        self._session_factory = session_factory

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (so the registry can check names without a database read)."""
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("returns_cases_waiting", "Cases queued for an agent, per team", labels=["team"]),
            GaugeMetricFamily(
                "returns_oldest_wait_seconds",
                "How long the longest-waiting queued case has waited, per team (0 when none waits)",
                labels=["team"],
            ),
            GaugeMetricFamily(
                "returns_agents", "Live agents per team and state (available, busy, away)", labels=["team", "state"]
            ),
            GaugeMetricFamily("returns_queue_figures_up", "1 when the queue figures could be read from the database"),
        ]

    def collect(self) -> Iterable[Metric]:
        """Read the queue figures now; on a database failure, only `returns_queue_figures_up 0`."""
        waiting, oldest, agents, up = self._families()
        factory = self._session_factory()
        try:
            if factory is None:
                raise RuntimeError("the app has not started")
            with factory() as session:
                figures = queue_figures(session=session)
        except Exception as err:  # a scrape must answer even when the database is down
            log.warning("queue figures unavailable for metrics: %s", err)
            up.add_metric([], 0)
            return [up]
        for q in figures:
            waiting.add_metric([q.team], q.waiting)
            oldest.add_metric([q.team], q.oldest_wait_seconds or 0.0)
            agents.add_metric([q.team, "available"], q.agents_available)
            agents.add_metric([q.team, "busy"], q.agents_busy)
            agents.add_metric([q.team, "away"], q.agents_away)
        up.add_metric([], 1)
        return [waiting, oldest, agents, up]


class EventStreamCollector(Collector):
    """Open event streams of this process and how long ago its outbox reader last read."""

    def __init__(self, hub: Callable[[], Any]) -> None:
        self._hub = hub

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields."""
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("returns_event_stream_subscribers", "Open event streams in this process"),
            GaugeMetricFamily(
                "returns_event_reader_lag_seconds",
                "Seconds since this process's event reader last read the outbox (it reads every few 100 ms)",
            ),
        ]

    def collect(self) -> Iterable[Metric]:
        """Read the hub's figures now (nothing before the app has started)."""
        subscribers, lag = self._families()
        hub = self._hub()
        if hub is None:
            return []
        subscribers.add_metric([], len(hub.subscribers))
        seconds = hub.lag_seconds()
        if seconds is not None:
            lag.add_metric([], seconds)
        return [subscribers, lag]


def install_metrics(app: FastAPI) -> None:
    """Add `GET /metrics` at the root and the request-metrics middleware to `app`."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    registry.register(QueueCollector(lambda: getattr(app.state, "session_factory", None)))
    registry.register(EventStreamCollector(lambda: getattr(app.state, "event_hub", None)))
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetricsMiddleware, metrics=HttpMetrics(registry))

    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        response_class=Response,
        dependencies=[Public("scraped inside the network; the proxy does not serve it")],
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics(request: Request) -> Response:
        """Prometheus metrics: HTTP requests per route, queue depth and oldest wait per team, process figures."""
        return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
