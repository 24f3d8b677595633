"""What ops see after a real case lifecycle: Temporal visibility and UI metadata, the history endpoint,
the API's and the worker's Prometheus metrics, and the worker's JSON logs.

One lifecycle runs once for the module, through the real API and a real `python worker.py` child process
with METRICS_PORT set; the tests read what it left behind.
"""

import io
import json
import logging
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core import search_attributes as sa
from core.logging import EmailRedactingFilter, JsonFormatter, case_context
from core.models import Agent, AgentStatus, utcnow
from tests.conftest import Stack, start_stack, temporal_address
from tests.helpers import API, add_agent, eventually, file_case, get_case, new_team, resolve
from tests.support import ServiceProcess, child_env, free_port, running, worker_process

Samples = list[tuple[dict[str, str], float]]


@dataclass
class Lifecycle:
    """What the module's case lifecycle produced, for the tests to inspect."""

    stack: Stack
    team: str
    customer_email: str
    agent_a: dict[str, Any]
    agent_b: dict[str, Any]
    # resolved by agent_a; assigned to agent_a by hand-off; assigned to agent_b by the reconciler;
    # cancelled while queued; still queued.
    resolved: dict[str, Any]
    handed_off: dict[str, Any]
    repaired: dict[str, Any]
    cancelled: dict[str, Any]
    waiting: dict[str, Any]
    worker: ServiceProcess
    worker_metrics_url: str

    @property
    def api(self) -> httpx.AsyncClient:
        return self.stack.api

    @property
    def client(self) -> Client:
        return self.stack.client

    @property
    def cases(self) -> list[dict[str, Any]]:
        return [self.resolved, self.handed_off, self.repaired, self.cancelled, self.waiting]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def samples(text: str, name: str, **labels: str) -> Samples:
    """Every sample called `name` whose labels include `labels`."""
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def total(text: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(text, name, **labels))


async def _scrape_worker(url: str) -> str:
    return scrape(url)


async def _wait_for_metrics_endpoint(url: str) -> None:
    async def probe() -> bool:
        try:
            scrape(url)
        except OSError:
            return False
        return True

    await eventually(probe, bool, timeout=60)


def _make_agent_available_without_dispatch(stack: Stack, agent_id: str) -> None:
    """A dispatch lost to a crash: the agent is free and available, yet nobody gave them the waiting case."""
    with stack.session_factory.begin() as session:
        session.execute(
            update(Agent).where(Agent.id == agent_id).values(status=AgentStatus.AVAILABLE, available_since=utcnow())
        )


async def _until_assigned(api: httpx.AsyncClient, case_id: str) -> None:
    await eventually(lambda: get_case(api, case_id), lambda c: c["status"] == "assigned")


async def _run_lifecycle(stack: Stack, worker: ServiceProcess, metrics_url: str) -> Lifecycle:
    """File five cases and take them through every path: assign, resolve with hand-off, reconciler repair,
    cancel, and waiting."""
    api = stack.api
    team = await new_team(api)
    email = f"cust-{uuid.uuid4().hex[:8]}@shop.example"
    agent_a = await add_agent(api, team)
    resolved = await file_case(api, team, priority="high", customer_email=email, customer_name="Dana Reyes")
    handed_off = await file_case(api, team)
    assert (resolved["status"], handed_off["status"]) == ("assigned", "queued")

    assert (await resolve(api, resolved["id"], agent_a["id"])).status_code == 200
    await _until_assigned(api, handed_off["id"])

    agent_b = await add_agent(api, team, status="away")
    repaired = await file_case(api, team)
    assert repaired["status"] == "queued"
    _make_agent_available_without_dispatch(stack, agent_b["id"])
    await _until_assigned(api, repaired["id"])

    cancelled = await file_case(api, team)
    r = await api.post(f"{API}/cases/{cancelled['id']}/cancel", json={"reason": "customer changed their mind"})
    assert r.status_code == 200, r.text
    waiting = await file_case(api, team)
    assert waiting["status"] == "queued"

    # Refusals, so the request metrics have errors to count.
    assert (await api.get(f"{API}/cases/c-no-such-case")).status_code == 404
    assert (await resolve(api, resolved["id"], agent_b["id"])).status_code == 403
    assert (await api.get("/no-such-page")).status_code == 404

    return Lifecycle(
        stack=stack,
        team=team,
        customer_email=email,
        agent_a=agent_a,
        agent_b=agent_b,
        resolved=await get_case(api, resolved["id"]),
        handed_off=await get_case(api, handed_off["id"]),
        repaired=await get_case(api, repaired["id"]),
        cancelled=await get_case(api, cancelled["id"]),
        waiting=await get_case(api, waiting["id"]),
        worker=worker,
        worker_metrics_url=metrics_url,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lifecycle(
    mysql_url: str, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Lifecycle]:
    async for stack in start_stack("mysql", mysql_url, temporal_env, in_process_worker=False):
        port = free_port()
        env = child_env(
            DATABASE_URL=mysql_url,
            TEMPORAL_ADDRESS=temporal_address(temporal_env),
            TASK_QUEUE=stack.settings.TASK_QUEUE,
            METRICS_PORT=str(port),
            RECONCILE_INTERVAL_SECONDS="1",
            RESERVATION_RESIGNAL_SECONDS="2",
            LOG_LEVEL="INFO",
        )
        worker = worker_process("observed-worker", env, tmp_path_factory.mktemp("observability"))
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        with running(worker):
            await _wait_for_metrics_endpoint(metrics_url)
            yield await _run_lifecycle(stack, worker, metrics_url)


# --- Temporal visibility and UI ---------------------------------------------------------------------


async def _workflow_ids(client: Client, query: str) -> set[str]:
    return {wf.id async for wf in client.list_workflows(query)}


async def _eventually_found(client: Client, query: str, ids: set[str]) -> None:
    # Visibility is eventually consistent: wait for the query to answer exactly these workflows.
    await eventually(lambda: _workflow_ids(client, query), lambda found: found == ids)


async def test_each_search_attribute_finds_the_case(lifecycle: Lifecycle) -> None:
    team, client = lifecycle.team, lifecycle.client
    resolved, handed_off, repaired = lifecycle.resolved, lifecycle.handed_off, lifecycle.repaired
    expected = {
        f'CaseStatus = "resolved" AND Team = "{team}"': {resolved["workflow_id"]},
        f'CaseStatus = "assigned" AND Team = "{team}"': {handed_off["workflow_id"], repaired["workflow_id"]},
        f'CaseStatus = "queued" AND Team = "{team}"': {lifecycle.waiting["workflow_id"]},
        f'CaseStatus = "cancelled" AND Team = "{team}"': {lifecycle.cancelled["workflow_id"]},
        f'AgentId = "{lifecycle.agent_b["id"]}"': {repaired["workflow_id"]},
        f'AgentId = "{lifecycle.agent_a["id"]}" AND CaseStatus = "assigned"': {handed_off["workflow_id"]},
        f'CasePriority = "high" AND Team = "{team}"': {resolved["workflow_id"]},
        f'CustomerEmail = "{lifecycle.customer_email}"': {resolved["workflow_id"]},
        f'OrderId = "{resolved["order_id"]}"': {resolved["workflow_id"]},
        # The README's queries: what an agent holds now, a customer's cases.
        f'AgentId = "{lifecycle.agent_a["id"]}" AND ExecutionStatus = "Running"': {handed_off["workflow_id"]},
        f'CustomerEmail = "{lifecycle.customer_email}" OR OrderId = "{repaired["order_id"]}"': {
            resolved["workflow_id"],
            repaired["workflow_id"],
        },
    }
    for query, ids in expected.items():
        await _eventually_found(client, query, ids)
    count = await client.count_workflows(f'Team = "{team}"')
    assert count.count == len(lifecycle.cases)


async def test_search_attribute_values_follow_the_case(lifecycle: Lifecycle) -> None:
    case = lifecycle.resolved

    async def described() -> dict[str, Any]:
        description = await lifecycle.client.get_workflow_handle(case["workflow_id"]).describe()
        attributes = description.typed_search_attributes
        return {key.name: attributes.get(key) for key in sa.ALL_SEARCH_ATTRIBUTES}

    values = await eventually(described, lambda v: v["CaseStatus"] == "resolved")
    assert values == {
        "CaseStatus": "resolved",
        "AgentId": lifecycle.agent_a["id"],
        "Team": lifecycle.team,
        "CasePriority": "high",
        "CustomerEmail": lifecycle.customer_email,
        "OrderId": case["order_id"],
        "CaseEscalated": False,
        "CaseOverdue": False,
    }
    queued = await lifecycle.client.get_workflow_handle(lifecycle.waiting["workflow_id"]).describe()
    assert queued.typed_search_attributes.get(sa.AGENT_ID) is None
    assert queued.typed_search_attributes.get(sa.CASE_STATUS) == "queued"


async def test_ui_row_details_panel_and_summaries(lifecycle: Lifecycle) -> None:
    case = lifecycle.resolved
    handle = lifecycle.client.get_workflow_handle(case["workflow_id"])
    description = await handle.describe()
    summary = await description.static_summary()
    assert summary is not None
    for part in ("Dana Reyes", case["order_id"], case["product_name"]):
        assert part in summary
    assert case["customer_email"] not in summary

    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert "**resolved**" in details and lifecycle.agent_a["id"] in details and "waited" in details

    queued = lifecycle.client.get_workflow_handle(lifecycle.waiting["workflow_id"])
    queued_details = (await queued.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    assert "**queued**" in queued_details and "waiting since" in queued_details

    # Every activity (a local activity is recorded as a marker) and timer is labelled on the timeline (a patch
    # marker, `workflow.patched`, is not something the workflow does and carries no summary).
    history = await handle.fetch_history()
    labelled = [
        e
        for e in history.events
        if e.event_type in (EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, EventType.EVENT_TYPE_TIMER_STARTED)
        or (
            e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name != "core_patch"
        )
    ]
    assert len(labelled) >= 2  # at least: file the case, resolve it
    for event in labelled:
        assert event.user_metadata.summary.data, event


async def test_reconciler_is_one_running_workflow_found_by_type(lifecycle: Lifecycle) -> None:
    from core.temporal import reconciler_id
    from workflows.reconcile import ReconcileWorkflow

    reconciler = reconciler_id(lifecycle.stack.settings)
    query = f'WorkflowType = "ReconcileWorkflow" AND WorkflowId = "{reconciler}" AND ExecutionStatus = "Running"'
    await _eventually_found(lifecycle.client, query, {reconciler})
    state = await lifecycle.client.get_workflow_handle_for(ReconcileWorkflow.run, reconciler).query(
        ReconcileWorkflow.state
    )
    assert state.passes >= 1 and not state.paused


# --- history endpoint ---------------------------------------------------------------------------------


async def _history(lifecycle: Lifecycle, case: dict[str, Any]) -> dict[str, Any]:
    r = await lifecycle.api.get(f"{API}/cases/{case['id']}/history")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_history_gives_every_transition_an_actor_and_a_reason(lifecycle: Lifecycle) -> None:
    for case in lifecycle.cases:
        history = await _history(lifecycle, case)
        assert history["temporal_ui_url"].endswith(f"/namespaces/default/workflows/{case['workflow_id']}")
        assert history["events"], case["id"]
        for event in history["events"]:
            assert event["actor"] and event["reason"], event

    resolved = (await _history(lifecycle, lifecycle.resolved))["events"]
    assert [e["type"] for e in resolved] == ["filed", "reserved", "assigned", "resolved"]
    assert resolved[-1]["actor"] == f"agent:{lifecycle.agent_a['id']}"
    assert resolved[-1]["data"]["note"] == "refunded"

    repaired = (await _history(lifecycle, lifecycle.repaired))["events"]
    assert [(e["type"], e["actor"]) for e in repaired][1] == ("reserved", "reconciler")

    cancelled = (await _history(lifecycle, lifecycle.cancelled))["events"][-1]
    admin_id = (await lifecycle.api.get(f"{API}/me")).json()["user_id"]
    assert (cancelled["type"], cancelled["actor"], cancelled["reason"]) == (
        "cancelled",
        f"admin:{admin_id}",
        "customer changed their mind",
    )
    filed = (await _history(lifecycle, lifecycle.cancelled))["events"][0]
    assert (filed["type"], filed["actor"]) == ("filed", f"admin:{admin_id}")


# --- worker metrics -----------------------------------------------------------------------------------


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_worker_exports_sdk_metrics(lifecycle: Lifecycle) -> None:
    queue = lifecycle.stack.settings.TASK_QUEUE
    text = scrape(lifecycle.worker_metrics_url)
    for name in (
        "temporal_workflow_task_schedule_to_start_latency_count",
        "temporal_workflow_task_execution_latency_count",
    ):
        assert total(text, name, task_queue=queue) > 0, name
    # Case steps may run as activities or local activities; either way their latencies are there.
    activity_runs = total(text, "temporal_activity_execution_latency_count", task_queue=queue) + total(
        text, "temporal_local_activity_execution_latency_count", task_queue=queue
    )
    assert activity_runs > 0
    assert samples(text, "temporal_worker_task_slots_available", task_queue=queue, worker_type="ActivityWorker")
    assert samples(text, "temporal_sticky_cache_size", task_queue=queue)


async def test_worker_domain_metrics_tell_the_history_story(lifecycle: Lifecycle) -> None:
    team = lifecycle.team
    assigned_cases = [lifecycle.resolved, lifecycle.handed_off, lifecycle.repaired]
    text = await eventually(
        lambda: _scrape_worker(lifecycle.worker_metrics_url),
        lambda t: total(t, "returns_time_to_assign_seconds_count", team=team) >= len(assigned_cases),
    )
    # One observation per assignment in the history, of the same length.
    waited = 0.0
    for case in assigned_cases:
        events = (await _history(lifecycle, case))["events"]
        assigned = [e for e in events if e["type"] == "assigned"]
        assert len(assigned) == 1
        waited += _seconds(assigned[0]["at"]) - _seconds(case["queued_at"])
    assert total(text, "returns_time_to_assign_seconds_count", team=team) == len(assigned_cases)
    assert total(text, "returns_time_to_assign_seconds_sum", team=team) == pytest.approx(waited, abs=0.01)
    assert samples(text, "returns_time_to_assign_seconds_bucket", team=team, priority="high", le="+Inf")

    resolved = lifecycle.resolved
    took = _seconds(resolved["resolved_at"]) - _seconds(resolved["queued_at"])
    assert total(text, "returns_time_to_resolve_seconds_count", team=team) == 1
    assert total(text, "returns_time_to_resolve_seconds_sum", team=team) == pytest.approx(took, abs=0.01)

    assert total(text, "returns_handoffs_total", team=team) == 1
    assert total(text, "returns_reconciler_repairs_total", kind="dispatched") >= 1


# --- API metrics --------------------------------------------------------------------------------------


async def _scrape_api(lifecycle: Lifecycle) -> str:
    r = await lifecycle.api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_api_metrics_count_requests_per_route_template(lifecycle: Lifecycle) -> None:
    text = await _scrape_api(lifecycle)
    requests = "returns_http_requests_total"
    assert total(text, requests, method="POST", route="/api/v1/cases", status="201") == len(lifecycle.cases)
    assert total(text, requests, method="POST", route="/api/v1/cases/{case_id}/resolve", status="200") == 1
    assert total(text, requests, method="POST", route="/api/v1/cases/{case_id}/resolve", status="403") == 1
    assert total(text, requests, method="POST", route="/api/v1/cases/{case_id}/cancel", status="200") == 1
    assert total(text, requests, method="GET", route="/api/v1/cases/{case_id}", status="404") == 1
    assert total(text, requests, method="GET", route="<unmatched>", status="404") == 1
    # No label carries a concrete id.
    assert not [labels for labels, _ in samples(text, requests) if lifecycle.resolved["id"] in labels["route"]]
    latency = "returns_http_request_duration_seconds_count"
    assert total(text, latency, method="POST", route="/api/v1/cases") == len(lifecycle.cases)
    assert samples(text, "returns_http_request_duration_seconds_bucket", route="/api/v1/cases", le="+Inf")


async def test_api_metrics_show_the_queue_like_the_queue_endpoint(lifecycle: Lifecycle) -> None:
    team = lifecycle.team
    text = await _scrape_api(lifecycle)
    queue = next(q for q in (await lifecycle.api.get(f"{API}/queue")).json()["teams"] if q["team"] == team)
    assert queue["waiting"] == 1 and queue["next_case_id"] == lifecycle.waiting["id"]
    assert total(text, "returns_cases_waiting", team=team) == 1
    assert total(text, "returns_oldest_wait_seconds", team=team) >= 0
    assert total(text, "returns_agents", team=team, state="busy") == 2
    assert total(text, "returns_agents", team=team, state="available") == 0
    assert total(text, "returns_queue_figures_up") == 1


# --- logs ---------------------------------------------------------------------------------------------


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


async def test_worker_logs_are_json_with_case_context_and_no_customer_email(lifecycle: Lifecycle) -> None:
    text = lifecycle.worker.log_text()
    assert lifecycle.customer_email not in text
    entries = _json_lines(text)
    assert entries, text[:2000]
    case_ids = {c["id"] for c in lifecycle.cases}
    about_cases = [e for e in entries if any(case_id in e["msg"] for case_id in case_ids) or e.get("case_id")]
    assert about_cases
    for entry in about_cases:
        assert {"case_id", "agent_id", "workflow_id"} <= entry.keys(), entry
        assert entry["workflow_id"] == f"case-{entry['case_id']}"
    resolved = lifecycle.resolved["id"]
    assert any(e["case_id"] == resolved and e["agent_id"] == lifecycle.agent_a["id"] for e in about_cases)
    assert any(e["case_id"] == lifecycle.repaired["id"] and e["level"] == "warning" for e in about_cases)


def _json_log(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def json_logger() -> tuple[logging.Logger, io.StringIO]:
    """A logger writing redacted JSON lines into a buffer, set up like production's handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EmailRedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_email_addresses_are_redacted_from_messages_and_tracebacks(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    logger.info("case filed by %s", "Dana.Reyes+returns@shop.example", extra=case_context("c1"))
    try:
        raise ValueError("duplicate customer dana@shop.example")
    except ValueError:
        logger.exception("filing failed for ana@desk.example")
    output = stream.getvalue()
    assert "@shop.example" not in output and "ana@desk.example" not in output
    first, second = _json_log(stream)
    assert first["msg"] == "case filed by <email>"
    assert second["msg"] == "filing failed for <email>"
    assert "duplicate customer <email>" in second["exc"]


def test_json_lines_about_a_case_carry_case_agent_and_workflow(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    logger.info("queued", extra=case_context("c1"))
    logger.info("assigned", extra=case_context("c1", "a7"))
    # The SDK's own lines carry only its context; the case is derived from the workflow id.
    logger.warning("activity failed", extra={"temporal_activity": {"workflow_id": "case-c2", "activity_type": "x"}})
    logger.info("worker started")
    queued, assigned, sdk_line, plain = _json_log(stream)
    assert (queued["case_id"], queued["agent_id"], queued["workflow_id"]) == ("c1", None, "case-c1")
    assert (assigned["case_id"], assigned["agent_id"], assigned["workflow_id"]) == ("c1", "a7", "case-c1")
    assert (sdk_line["case_id"], sdk_line["agent_id"], sdk_line["workflow_id"]) == ("c2", None, "case-c2")
    assert sdk_line["temporal"]["activity_type"] == "x"
    assert not {"case_id", "agent_id", "workflow_id"} & plain.keys()
