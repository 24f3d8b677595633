"""Where the assignment latency goes: `python -m bench.breakdown [N] [--product-dir DIR]`.

Starts the benchmark's stack (as `python -m bench` does), files N cases one at a time with a free agent
(each resolved after 50 ms), and prints the median of each interval between the client, the workflow's
history events and the database timestamps, then the history of the last case.
"""

import argparse
import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.db import Db
from bench.scenarios import Api
from bench.stack import Stack, StackConfig
from core.config import PROJECT_ROOT


def _ms(a: float, b: float) -> float:
    return (b - a) * 1000


async def breakdown(n: int, cfg: StackConfig) -> None:
    stack = Stack(cfg, bare_task_queue="bench-bare-breakdown")
    api = Api(cfg.api_url)
    db = Db(cfg.database_url)
    try:
        await stack.start()
        await api.sign_in_as_admin(cfg.admin_email, cfg.admin_password)
        client = await Client.connect(cfg.temporal_address, data_converter=pydantic_data_converter)
        team = await api.team(f"breakdown{int(time.time())}")
        await api.agent(team)
        rows: list[dict[str, float]] = []
        last: list[tuple[str, float]] = []
        for i in range(n + 3):
            t0 = time.time()
            case, _ = await api.file(team)
            t1 = time.time()
            await asyncio.sleep(0.05)
            await api.resolve(case["id"], case["agent_id"])
            if i < 3:  # warm-up
                continue
            history = await client.get_workflow_handle(case["workflow_id"]).fetch_history()
            events = [
                (EventType.Name(e.event_type).removeprefix("EVENT_TYPE_"), e.event_time.ToDatetime().timestamp())
                for e in history.events
            ]
            started = events[0][1]
            task_started = next(t for name, t in events if name == "WORKFLOW_TASK_STARTED")
            task_done = next(t for name, t in events if name == "WORKFLOW_TASK_COMPLETED")
            answered = next(t for name, t in events if name == "WORKFLOW_EXECUTION_UPDATE_COMPLETED")
            times = db.times([case["id"]])[case["id"]]
            assert times.assigned_at is not None
            rows.append(
                {
                    "POST /cases, as the client saw it": _ms(t0, t1),
                    "client sent -> workflow started (API pre-checks, start RPC)": _ms(t0, started),
                    "workflow started -> first workflow task started": _ms(started, task_started),
                    "first workflow task started -> completed": _ms(task_started, task_done),
                    "workflow started -> update completed": _ms(started, answered),
                    "update completed -> answer at the client": _ms(answered, t1),
                    "queued_at -> assigned_at (database)": _ms(
                        times.queued_at.timestamp(), times.assigned_at.timestamp()
                    ),
                    "workflow tasks until the answer": sum(
                        1 for name, t in events if name == "WORKFLOW_TASK_COMPLETED" and t <= answered
                    ),
                }
            )
            last = events
        for key in rows[0]:
            print(f"{key:62} p50 {statistics.median(r[key] for r in rows):7.1f}")
        print(f"\nhistory of the last case ({len(last)} events):")
        for name, t in last:
            print(f"  {_ms(last[0][1], t):8.1f} ms  {name}  ({datetime.fromtimestamp(t).time()})")
    finally:
        await api.close()
        db.close()
        stack.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    p.add_argument("n", type=int, nargs="?", default=40)
    p.add_argument("--product-dir", type=Path, default=PROJECT_ROOT)
    a = p.parse_args()
    asyncio.run(breakdown(a.n, StackConfig(product_dir=a.product_dir.resolve())))


if __name__ == "__main__":
    main()
