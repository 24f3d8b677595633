"""The live event stream's engine: one reader per API process, fanning out to its subscribers.

The hub polls the outbox (EVENT_POLL_INTERVAL_SECONDS) after its position and puts each new event into the
bounded queue of every subscriber that may care; it never reads the database for a subscriber. A subscriber
registers first (learning the hub's position P), then reads its backlog `Last-Event-ID < id <= P` from the
database, then takes its queue, which holds exactly the events after P: no gap, no repeat. A subscriber that
falls more than EVENT_SUBSCRIBER_QUEUE_SIZE events behind is dropped; its stream ends after what it was given,
and the client resumes with Last-Event-ID. A client that leaves costs nothing: its queue goes with it.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.sse import ServerSentEvent
from sqlalchemy.orm import Session, sessionmaker

from core.events import Audience, encode_body, public_type
from core.outbox import StoredEvent, last_event_id, read_events

log = logging.getLogger("returns.api.events")

BATCH = 500


@dataclass(eq=False)
class Subscriber:
    """One open stream: who reads it, where it resumes from, and its queue of live events."""

    audience: Audience
    # Events up to this id were already seen (Last-Event-ID), wherever they came from.
    after: int
    queue: asyncio.Queue[tuple[StoredEvent, str]]
    dropped: bool = False


@dataclass(eq=False)
class EventHub:
    """The process's one outbox reader and its subscribers."""

    session_factory: sessionmaker[Session]
    poll_interval: float
    queue_size: int
    position: int | None = None
    last_poll: float | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Start reading (from the newest committed event on)."""
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        """Stop reading; open streams end at their next event."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_ready(self, timeout: float) -> bool:
        """True once the hub knows its position (it has reached the database)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def lag_seconds(self) -> float | None:
        """Seconds since the last successful read of the outbox (None before the first)."""
        return None if self.last_poll is None else time.monotonic() - self.last_poll

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.position is None:
                    self.position = await asyncio.to_thread(self._read_position)
                    self._ready.set()
                events = await asyncio.to_thread(self._read, self.position)
                self.last_poll = time.monotonic()
                failures = 0
            except Exception as err:  # the database is down: keep the position, try again
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("event reader cannot read the outbox (attempt %d): %s", failures, err)
                await asyncio.sleep(min(5.0, self.poll_interval * 2**failures))
                continue
            if events:
                self._fan_out(events)
                if len(events) == BATCH:
                    continue
            await asyncio.sleep(self.poll_interval)

    def _read_position(self) -> int:
        with self.session_factory() as session:
            return last_event_id(session=session)

    def _read(self, after: int) -> list[StoredEvent]:
        with self.session_factory() as session:
            return read_events(session=session, after=after, limit=BATCH)

    def _fan_out(self, events: list[StoredEvent]) -> None:
        # No await in here: a subscriber registers either before a batch (and gets all of it) or after.
        for event in events:
            type = public_type(event)
            if type is not None:
                for sub in list(self.subscribers):
                    if event.id > sub.after and sub.audience.may_care(event, type):
                        try:
                            sub.queue.put_nowait((event, type))
                        except asyncio.QueueFull:
                            sub.dropped = True
                            self.subscribers.discard(sub)
            self.position = event.id

    def subscribe(self, audience: Audience, after: int | None) -> tuple[Subscriber, int]:
        """Register a stream; returns it and the position its backlog must reach (events after it come live)."""
        if self.position is None:
            raise RuntimeError("the event hub has not reached the database yet")
        position = self.position
        sub = Subscriber(
            audience=audience,
            after=position if after is None else after,
            queue=asyncio.Queue(maxsize=self.queue_size),
        )
        self.subscribers.add(sub)
        return sub, position

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a stream (its client left, or it ended)."""
        self.subscribers.discard(sub)

    async def stream(self, sub: Subscriber, position: int) -> AsyncIterator[ServerSentEvent]:
        """The stream's events: the backlog up to `position` from the database, then live ones from the queue."""
        try:
            cursor = sub.after
            while cursor < position:
                backlog = await asyncio.to_thread(self._read_backlog, cursor, position)
                if not backlog:
                    break
                for event in backlog:
                    cursor = event.id
                    type = public_type(event)
                    if type is None:
                        continue
                    sse, last = self._emit(sub.audience, event, type)
                    if sse is not None:
                        yield sse
                    if last:
                        return
            while not (sub.dropped and sub.queue.empty()):
                event, type = await sub.queue.get()
                sse, last = self._emit(sub.audience, event, type)
                if sse is not None:
                    yield sse
                if last:
                    return
        finally:
            self.unsubscribe(sub)

    def _read_backlog(self, after: int, upto: int) -> list[StoredEvent]:
        with self.session_factory() as session:
            return read_events(session=session, after=after, upto=upto, limit=BATCH)

    @staticmethod
    def _emit(audience: Audience, event: StoredEvent, type: str) -> tuple[ServerSentEvent | None, bool]:
        body = audience.view(event, type)
        audience.follow(event)
        sse = None if body is None else ServerSentEvent(id=str(event.id), event=type, raw_data=encode_body(body))
        return sse, audience.ends_with(event)
