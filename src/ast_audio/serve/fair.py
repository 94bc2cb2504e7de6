"""Fair sharing of the model between requests: turns per forward pass, round-robin between clients.

A first-come-first-served queue of *whole requests* lets one client's long request (thousands of windows) hold a
worker for its whole computation while a 1 s clip waits behind it. Here the unit of scheduling is one forward pass
(one batch of windows): a request asks for a turn before each batch and gives it back after, so requests take turns
batch by batch, and a short request waits for at most about one batch of each request being computed.

Turns are handed out round-robin between clients (the client's address), first come first served within one
client, so a client cannot get a larger share by opening more connections. Behind a reverse proxy every request
comes from the proxy's address, and scheduling is round-robin between requests (first come first served per batch).

A request whose client has gone (`Service.run` is told by the app, which watches for the disconnect) stops at its
next batch: `TurnTakingTagger.scores` raises `RequestAbandoned` before waiting for a turn and again once granted one,
so an abandoned request costs at most the batch being computed when its client left.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..infer.tagger import Tagger
from ..model import AST


class RequestAbandoned(Exception):
    """The client of the request a worker thread computes has disconnected: its work stops here."""


class FairTurns:
    """At most `slots` model computations at once, granted round-robin between clients.

    A freed slot goes straight to the first waiter of the client at the front of the round, and that client moves
    to the back of the round if it still has waiters. Handing the slot over directly (instead of releasing it for
    anyone to grab) means no thread can barge ahead of the waiters.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._waiting: OrderedDict[str, deque[threading.Event]] = OrderedDict()  # clients in turn order
        self._granted = 0  # turns granted since start (for /healthz)

    @contextlib.contextmanager
    def turn(self, client: str) -> Iterator[None]:
        """Wait for a slot for `client`, hold it for the body of the `with`, then hand it to the next in turn."""
        granted: threading.Event | None = None
        with self._lock:
            if self._free and not self._waiting:  # a slot is free only while nobody waits (see _release)
                self._free -= 1
            else:
                granted = threading.Event()
                self._waiting.setdefault(client, deque()).append(granted)
        if granted is not None:
            granted.wait()
        with self._lock:
            self._granted += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            client, waiters = next(iter(self._waiting.items()))
            granted = waiters.popleft()
            if waiters:
                self._waiting.move_to_end(client)  # its next turn comes after every other waiting client's
            else:
                del self._waiting[client]
            granted.set()

    def statistics(self) -> dict[str, int]:
        """{"computing": slots in use, "waiting": turns asked for and not yet granted, "granted": turns granted
        since start} (for /healthz)."""
        with self._lock:
            return {"computing": self.slots - self._free,
                    "waiting": sum(len(waiters) for waiters in self._waiting.values()), "granted": self._granted}


class TurnTakingTagger(Tagger):
    """A Tagger whose every forward pass (`scores`, one batch) waits for a turn of the client its thread serves.

    `Tagger.tag` and `events.score_stream` call `scores` once per batch, so both are scheduled batch by batch
    without a second copy of their window loops. `client()` names the client of the calling thread; `abandoned()`
    says whether that client has gone (then `RequestAbandoned` is raised instead of computing).
    """

    def __init__(self, model: AST, turns: FairTurns, client: Callable[[], str], device: str = "cpu",
                 abandoned: Callable[[], bool] = lambda: False) -> None:
        super().__init__(model, device=device)
        self.turns = turns
        self.client = client
        self.abandoned = abandoned

    def check_abandoned(self) -> None:
        """RequestAbandoned if the calling thread's client has gone."""
        if self.abandoned():
            raise RequestAbandoned

    def scores(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.check_abandoned()
        with self.turns.turn(self.client()):
            self.check_abandoned()  # it may have left while this batch waited for its turn
            return super().scores(inputs, *args, **kwargs)


__all__ = ["FairTurns", "RequestAbandoned", "TurnTakingTagger"]
