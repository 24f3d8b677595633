"""Container health checks, run by Docker (docker-compose.yml). Exit 0 when healthy, else 1 with the reason.

- `api`: GET /readyz on this container; healthy when the API answers 200 (it reaches MySQL and Temporal).
- `worker`: asks Temporal for the pollers of TASK_QUEUE; healthy when one of them is this container
  (the SDK's worker identity is `<pid>@<hostname>`, and a container's hostname is its own).
"""

import asyncio
import os
import socket
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

TIMEOUT_SECONDS = 4.0


def check_api() -> None:
    """Raise unless this container's API is ready."""
    port = os.environ.get("API_PORT", "8000")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=TIMEOUT_SECONDS) as response:
        if response.status != 200:
            raise RuntimeError(f"/readyz answered {response.status}")


async def check_worker() -> None:
    """Raise unless this container's worker polls its task queue."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from core.config import get_settings
    from core.temporal import connect

    settings = get_settings()
    client = await connect(settings)
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.TEMPORAL_NAMESPACE,
            task_queue=TaskQueue(name=settings.TASK_QUEUE),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timedelta(seconds=TIMEOUT_SECONDS),
    )
    me = f"@{socket.gethostname()}"
    if not any(poller.identity.endswith(me) for poller in response.pollers):
        raise RuntimeError(f"no poller of task queue {settings.TASK_QUEUE!r} on this host ({me[1:]})")


def main(argv: list[str]) -> int:
    """Run the check named in argv[1]."""
    role = argv[1] if len(argv) > 1 else ""
    try:
        if role == "api":
            check_api()
        elif role == "worker":
            asyncio.run(asyncio.wait_for(check_worker(), timeout=2 * TIMEOUT_SECONDS))
        else:
            sys.stderr.write("usage: healthcheck.py api|worker\n")
            return 2
    except Exception as err:  # any failure means unhealthy; say why in `docker inspect`
        sys.stderr.write(f"unhealthy: {type(err).__name__}: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the Temporal SDK's Rust core can crash the process at exit
    # (sdk-python issue 300), which would turn a healthy answer into a failed check.
    os._exit(code)
