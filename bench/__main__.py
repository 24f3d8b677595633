"""`python -m bench` (`make bench`): start the stack (or use a running one), drive it, write the figures.

Run `python -m bench --help` for the knobs; `BENCH_SCALE=0.1` is a quick run of a few minutes.
"""

import argparse
import asyncio
import dataclasses
import functools
import os
import shlex
import subprocess
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import report
from bench.db import Db, server_connections
from bench.procs import find_pid, load_average, machine, rss_mib
from bench.scenarios import (
    Api,
    CpuMeter,
    LevelResult,
    bare_lifecycle,
    bounded,
    closed_loop,
    fill,
    fill_direct,
    hand_offs,
    product_lifecycle,
)
from bench.stack import Stack, StackConfig, say
from bench.stats import summarize
from core.config import PROJECT_ROOT

PHASES = ("throughput", "handoff", "depth")


@dataclasses.dataclass
class Options:
    scale: float
    label: str
    think_ms: float
    levels: list[int]
    level_seconds: float
    warmup_seconds: float
    light_handoffs: int
    depths: list[int]
    depth_agents: int
    depth_handoffs: int
    dispatch_probes: int
    fill_concurrency: int
    fill_via: str
    phases: list[str]
    output_dir: Path
    stack: StackConfig


def parse_args(argv: list[str]) -> Options:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scale",
        type=float,
        default=float(env("BENCH_SCALE", "1")),
        help="1 = the full run (~15-20 min); 0.1 = quick (queue depths 10/100/1000, 100 agents, ~5 min)",
    )
    p.add_argument("--label", default=env("BENCH_LABEL", "run"), help="name part of the result files")
    p.add_argument("--think-ms", type=float, default=50, help="an agent's think time before resolving")
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent lifecycles of the throughput sweep")
    p.add_argument("--level-seconds", type=float, default=None, help="measuring window per level and system")
    p.add_argument("--depths", default=None, help="queue depths (default 100,1000,10000 times the scale)")
    p.add_argument("--agents", type=int, default=None, help="agents for the queue-depth runs (default 1000 x scale)")
    p.add_argument("--fill-concurrency", type=int, default=16, help="filings in flight while filling the queue")
    p.add_argument(
        "--fill-via",
        choices=("temporal", "api"),
        default=env("BENCH_FILL_VIA", "temporal"),
        help="fill the deep queue by starting the case workflows directly (fast, default) or by POST /cases",
    )
    p.add_argument(
        "--phases",
        default=env("BENCH_PHASES", ",".join(PHASES)),
        help="which parts to run: throughput (with the baseline), handoff (light load), depth",
    )
    p.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "bench" / "results")
    p.add_argument(
        "--external",
        action="store_true",
        default=env("BENCH_EXTERNAL", "") not in ("", "0"),
        help="use a running stack (BENCH_API_URL, BENCH_TEMPORAL_ADDRESS, BENCH_DATABASE_URL)",
    )
    p.add_argument("--api-url", default=env("BENCH_API_URL", StackConfig.api_url))
    p.add_argument("--temporal-address", default=env("BENCH_TEMPORAL_ADDRESS", StackConfig.temporal_address))
    p.add_argument("--database-url", default=env("BENCH_DATABASE_URL", StackConfig.database_url))
    p.add_argument(
        "--task-queue",
        default=env("BENCH_TASK_QUEUE", StackConfig.task_queue),
        help="the case workflows' task queue (with --external: the running worker's TASK_QUEUE)",
    )
    p.add_argument(
        "--worker-pid",
        type=int,
        default=int(env("BENCH_WORKER_PID", "0")) or None,
        help="with --external: the worker's pid, for its memory and CPU",
    )
    p.add_argument("--api-pid", type=int, default=int(env("BENCH_API_PID", "0")) or None)
    p.add_argument("--admin-email", default=env("BENCH_ADMIN_EMAIL", StackConfig.admin_email))
    p.add_argument(
        "--admin-password",
        default=env("BENCH_ADMIN_PASSWORD"),
        help="with --external: the password of --admin-email (BENCH_ADMIN_PASSWORD); else one is made per run",
    )
    p.add_argument(
        "--product-dir",
        type=Path,
        default=Path(env("BENCH_PRODUCT_DIR", str(PROJECT_ROOT))),
        help="run the worker, API and migrations from this copy of the code (before/after comparisons)",
    )
    a = p.parse_args(argv)
    if unknown := set(a.phases.split(",")) - set(PHASES):
        p.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    scale = a.scale
    if not 0 < scale <= 1:
        p.error("--scale must be in (0, 1]")
    if a.depths:
        depths = [int(x) for x in a.depths.split(",")]
    else:
        depths = [max(10, round(d * scale)) for d in (100, 1000, 10000)]
    return Options(
        scale=scale,
        label=a.label,
        think_ms=a.think_ms,
        levels=[int(x) for x in a.levels.split(",")],
        level_seconds=a.level_seconds or (20 if scale >= 1 else max(5.0, 20 * scale * 3)),
        warmup_seconds=3 if scale >= 1 else 2,
        light_handoffs=max(20, round(100 * scale)),
        depths=depths,
        depth_agents=a.agents or max(10, round(1000 * scale)),
        depth_handoffs=max(15, round(40 * scale)),
        dispatch_probes=max(10, round(30 * scale)),
        fill_concurrency=a.fill_concurrency,
        fill_via=a.fill_via,
        phases=[x for x in a.phases.split(",") if x],
        output_dir=a.output_dir,
        stack=StackConfig(
            api_url=a.api_url,
            temporal_address=a.temporal_address,
            database_url=a.database_url,
            task_queue=a.task_queue,
            external=a.external,
            worker_pid=a.worker_pid,
            api_pid=a.api_pid,
            product_dir=a.product_dir.resolve(),
            admin_email=a.admin_email,
            **({"admin_password": a.admin_password} if a.admin_password else {}),
        ),
    )


def git_revision() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False).stdout

    return {
        "commit": run("rev-parse", "--short", "HEAD").strip(),
        "changed_files": [line[3:] for line in run("status", "--porcelain").splitlines() if line],
    }


def memory(stack: Stack) -> dict[str, float | None]:
    return {name: rss_mib(pid) for name in ("worker", "api", "temporal", "bare-worker") if (pid := stack.pid(name))}


async def running_case_workflows(client: Client, task_queue: str) -> int | None:
    try:
        count = await client.count_workflows(
            f"WorkflowType = 'ReturnCaseWorkflow' AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
        )
        return count.count
    except Exception:  # visibility may not answer counts; the database figure is reported too
        return None


class Run:
    """One benchmark run: the phases share the stack, the clients and the results."""

    def __init__(self, opts: Options, run_id: str, results: dict[str, Any]) -> None:
        self.opts, self.run_id, self.results = opts, run_id, results
        self.think = opts.think_ms / 1000
        self.stack = Stack(opts.stack, bare_task_queue=f"bench-bare-{run_id}")
        self.api = Api(opts.stack.api_url)
        self.db = Db(opts.stack.database_url)
        self.teams: list[str] = []
        self.fifo_violations = 0

    def team_name(self, name: str) -> str:
        team = f"b{self.run_id}-{name}"
        self.teams.append(team)
        return team

    async def start(self) -> None:
        # Read through the server, not the benchmark's database: on a new machine it does not exist yet.
        connections = server_connections(self.opts.stack.database_url)
        self.results["mariadb_connections_at_start"] = connections
        if connections["max_connections"] - connections["connected"] < 80:
            say(f"warning: MariaDB has {connections} (shared); the stack may run out of connections")
        await self.stack.start()
        await self.api.sign_in_as_admin(self.opts.stack.admin_email, self.opts.stack.admin_password)
        self.client = await Client.connect(self.opts.stack.temporal_address, data_converter=pydantic_data_converter)
        self.meter = CpuMeter(
            {
                "temporal": self.stack.pid("temporal"),
                "worker": self.stack.pid("worker"),
                "api": self.stack.pid("api"),
                "bare-worker": self.stack.pid("bare-worker"),
                "mariadb": find_pid("mariadbd"),
                "driver": os.getpid(),
            }
        )
        # Warm-up: imports, sandboxes, connection pools, task-queue pollers.
        warm = await self.api.team(self.team_name("warm"))
        for _ in range(2):
            await self.api.agent(warm)
        for _ in range(10):
            await product_lifecycle(self.api, self.db, warm, 0)()
            await bare_lifecycle(self.client, self.stack.bare_task_queue, 0)()
        self.results["memory_idle_mib"] = memory(self.stack)
        say(f"warm; memory (RSS MiB) {self.results['memory_idle_mib']}")

    async def stop(self) -> None:
        await self.api.close()
        self.db.close()
        self.stack.stop()

    async def throughput(self) -> None:
        """Throughput and latency against load: baseline and product, level by level, on the same server."""
        levels: list[dict[str, Any]] = []
        self.results["throughput"] = levels
        for concurrency in self.opts.levels:
            team = await self.api.team(self.team_name(f"tp{concurrency}"))
            await bounded(16, [functools.partial(self.api.agent, team)] * concurrency)
            seconds = self.opts.level_seconds * (1.5 if concurrency == 1 else 1)
            runs: dict[str, LevelResult] = {}
            for system, lifecycle in (
                ("baseline", bare_lifecycle(self.client, self.stack.bare_task_queue, self.think)),
                ("product", product_lifecycle(self.api, self.db, team, self.think)),
            ):
                self.stack.check_alive()
                r = await closed_loop(
                    system, concurrency, self.think, self.opts.warmup_seconds, seconds, lifecycle, self.meter
                )
                runs[system] = r
                say(
                    f"{system:8} x{concurrency:<3} {r.per_second:6.1f}/s  assign p50 {r.assign_ms['p50']} ms  "
                    f"lifecycle p50 {r.lifecycle_ms['p50']} ms  load {load_average()[0]}"
                )
            levels.append(
                {
                    "concurrency": concurrency,
                    "baseline": dataclasses.asdict(runs["baseline"]),
                    "product": dataclasses.asdict(runs["product"]),
                    "ratio": round(runs["product"].per_second / max(runs["baseline"].per_second, 1e-9), 3),
                }
            )

    async def handoff_light(self) -> None:
        """Hand-off at light load: one agent, a short queue, one resolve at a time."""
        team = await self.api.team(self.team_name("handoff"))
        agent_id = await self.api.agent(team)
        first, _ = await self.api.file(team)
        for _ in range(5):
            await self.api.file(team)
        light = await hand_offs(
            self.api,
            self.db,
            team,
            {agent_id: first["id"]},
            self.opts.light_handoffs,
            self.think,
            depth=5,
            meter=self.meter,
        )
        self.fifo_violations += light.fifo_violations
        self.results["handoff_light"] = dataclasses.asdict(light)
        say(f"hand-off (light): p50 {light.handoff_ms['p50']} ms, p95 {light.handoff_ms['p95']} ms")

    async def depth(self) -> None:
        """N agents all busy, then 100 / 1,000 / 10,000 waiting: hand-off and dispatch against queue depth."""
        opts, api, db = self.opts, self.api, self.db
        team = await api.team(self.team_name("depth"))
        say(f"adding {opts.depth_agents} agents and their first cases")
        # Without passwords: only the few who resolve sign in (below), so Argon2 is not paid a thousand times.
        agents = await bounded(16, [functools.partial(api.agent, team, signed_in=False)] * opts.depth_agents)
        spare = await api.agent(team, status="away", signed_in=False)  # made available only in rolled-back probes
        firsts = await bounded(32, [functools.partial(api.file, team)] * len(agents))
        held = {case["agent_id"]: case["id"] for case, _ in firsts if case["status"] == "assigned"}
        if len(held) != len(agents):
            raise RuntimeError(f"{len(agents) - len(held)} of the first cases were not assigned at filing")
        rows: list[dict[str, Any]] = []
        plans: dict[str, Any] = {}
        self.results["queue_depth"] = rows
        self.results["dispatch_plans"] = plans
        for depth in opts.depths:
            waiting = db.waiting(team)
            say(f"filling the queue from {waiting} to {depth} waiting")
            if opts.fill_via == "api":
                rate, fill_latency, _ = await fill(api, team, depth - waiting, opts.fill_concurrency)
            else:
                rate = await fill_direct(
                    self.client, db, opts.stack.task_queue, team, depth - waiting, opts.fill_concurrency * 4
                )
                fill_latency = summarize([])
                await asyncio.sleep(2)  # let the last workflow tasks finish before measuring
            self.stack.check_alive()
            probes = []
            for i in range(opts.dispatch_probes):
                probe, statements = await asyncio.to_thread(db.probe_dispatch, team, spare)
                probes.append(probe)
                if i == 0:
                    plans[str(depth)] = await asyncio.to_thread(db.explain, statements)
            await api.sign_in_agents(list(held)[: opts.depth_handoffs])  # the agents hand_offs resolves as
            h = await hand_offs(api, db, team, held, opts.depth_handoffs, self.think, depth=depth, meter=self.meter)
            self.fifo_violations += h.fifo_violations
            dispatch_ms = summarize([p.dispatch_ms for p in probes])
            rows.append(
                {
                    "depth": depth,
                    "waiting_measured": db.waiting(team),
                    "fill_per_second": rate,
                    "fill_post_ms": fill_latency,
                    "handoff": dataclasses.asdict(h),
                    "dispatch_probe_ms": dispatch_ms,
                    "dispatch_probe_transaction_ms": summarize([p.transaction_ms for p in probes]),
                    "dispatch_rows_read": max(p.rows_read for p in probes),
                    "dispatch_statements": probes[0].statements,
                }
            )
            say(
                f"depth {depth}: hand-off p50 {h.handoff_ms['p50']} ms p95 {h.handoff_ms['p95']} ms; "
                f"dispatch p50 {dispatch_ms['p50']} ms, rows read {rows[-1]['dispatch_rows_read']}; "
                f"filled at {rate}/s"
            )
        # With the deepest queue standing: every waiting and held case is a running workflow.
        loaded = {
            "open_cases": db.open_cases(),
            "running_case_workflows": await running_case_workflows(self.client, opts.stack.task_queue),
            "rss_mib": memory(self.stack),
        }
        self.results["memory_loaded"] = loaded
        say(f"memory with {loaded['open_cases']} open cases: {loaded['rss_mib']}")

    def check(self) -> None:
        """Correctness of everything the run did, from the database."""
        levels = self.results.get("throughput", [])
        self.results["correctness"] = {
            "holding_violations": self.db.holding_violations(self.teams),
            "reservations_left_unconfirmed": self.db.stuck_reservations(self.teams),
            "cases_by_status": self.db.count_by_status(self.teams),
            "fifo_violations": self.fifo_violations,
            "filings_not_assigned_with_agents_free": sum(lv["product"]["not_assigned_at_filing"] for lv in levels),
            "filings_retried_after_503": self.api.retried,
        }
        # Setup only, outside every measured phase: each agent who resolves signs in once.
        self.results["sign_in_ms"] = summarize([s * 1000 for s in self.api.sign_in_seconds])
        self.results["signed_in"] = self.api.signs_in


async def bench(opts: Options, run_id: str, results: dict[str, Any]) -> None:
    """Run the chosen phases, filling `results` as it goes (so a failed run still leaves what it measured)."""
    results |= {
        "label": opts.label,
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench" + (f" BENCH_SCALE={opts.scale:g}" if opts.scale != 1 else ""),
        "argv": shlex.join(sys.argv),
        "machine": machine(),
        "git": git_revision(),
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("stack", "output_dir")},
        "stack": {k: v for k, v in dataclasses.asdict(opts.stack).items() if k != "admin_password"},
        "load_average": {"start": load_average()},
    }
    say(f"run {run_id}: scale {opts.scale:g}, phases {','.join(opts.phases)}, load average {load_average()}")
    run = Run(opts, run_id, results)
    try:
        results["phase"] = "start"
        await run.start()
        for phase, step in (("throughput", run.throughput), ("handoff", run.handoff_light), ("depth", run.depth)):
            if phase in opts.phases:
                results["phase"] = phase
                await step()
        results["phase"] = "check"
        run.check()
        del results["phase"]
        results["load_average"]["end"] = load_average()
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        await run.stop()


def main() -> None:
    opts = parse_args(sys.argv[1:])
    run_id = uuid.uuid4().hex[:6]
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    try:
        asyncio.run(bench(opts, run_id, results))
    except (Exception, KeyboardInterrupt) as err:
        # One line: the phase, what went wrong, where the figures (and the traceback) went.
        results["error"] = repr(err)
        results["traceback"] = traceback.format_exc()
        path = report.write_json(results, opts.output_dir, suffix="-failed")
        shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        say(f"failed in phase {results.get('phase', 'start')}: {reason} (details and traceback: {shown})")
        sys.exit(130 if isinstance(err, KeyboardInterrupt) else 1)
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    results["targets"] = report.targets(results)
    paths = report.write(results, opts.output_dir)
    print(report.table(results))
    for path in paths:
        say(f"wrote {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}")


if __name__ == "__main__":
    main()
