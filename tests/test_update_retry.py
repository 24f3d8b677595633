"""An update Temporal aborted because the workflow task failed on the server (UnhandledCommand: a signal
landed while the workflow completed) is sent again, not answered with a 503. The stress test found it."""

import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.routes import cases as case_routes

ABORTED = "Unable to perform workflow execution update due to unexpected workflow task failure."


class Flaky:
    """An update call that fails `failures` times with `status`, then answers."""

    def __init__(self, failures: int, status: RPCStatusCode = RPCStatusCode.FAILED_PRECONDITION) -> None:
        self.failures, self.status, self.calls = failures, status, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RPCError(ABORTED, self.status, b"")
        return "answered"


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(case_routes, "ABORTED_UPDATE_RETRY_DELAYS", (0.0, 0.0, 0.0))


async def test_aborted_update_is_sent_again() -> None:
    send = Flaky(failures=2)
    assert await case_routes._send_update(send) == "answered"
    assert send.calls == 3


async def test_update_aborted_every_time_gives_up() -> None:
    send = Flaky(failures=10)
    with pytest.raises(RPCError) as raised:
        await case_routes._send_update(send)
    assert raised.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert send.calls == len(case_routes.ABORTED_UPDATE_RETRY_DELAYS) + 1


async def test_other_errors_are_not_retried() -> None:
    send = Flaky(failures=1, status=RPCStatusCode.UNAVAILABLE)
    with pytest.raises(RPCError):
        await case_routes._send_update(send)
    assert send.calls == 1
