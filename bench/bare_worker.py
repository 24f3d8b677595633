"""The baseline's worker, a process of its own like `worker.py`: `python -m bench.bare_worker ADDRESS TASK_QUEUE`."""

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare_workflow import BareCaseWorkflow, bare_close, bare_open

# The same activity concurrency the product's worker runs with (ACTIVITY_THREADS default).
THREADS = 32


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=THREADS) as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[BareCaseWorkflow],
            activities=[bare_open, bare_close],
            activity_executor=executor,
            max_concurrent_activities=THREADS,
        )
        async with worker:
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
