"""The server's scheduler: one worker thread runs every job that touches a model, fairly, off the event loop.

A job is an iterator; each `next()` is one step of work (a generated piece of text, a whole inspection).
The worker takes up to `max_running` jobs at a time and advances them round-robin, one step each per turn,
so sixteen streaming clients are served side by side, not one after the other.

Generations are batched ("continuous batching"): a job whose iterator is `Batched` (completions.py's
Completion) is a row of an engine shared by every running generation of the same model (its `batch_key`).
Each turn, the worker runs one forward pass per model for all of its rows that need a token (newcomers are
prefilled in that same pass's step), then lets each generation `advance` on the token it got: a Piece to
post, the Finish, or nothing yet (text held back until the next token). Sixteen requests to one model cost
one batched pass a turn, not sixteen. Other jobs (the inspect views) still take one `next()` each a turn.

Jobs beyond `max_running` wait in arrival order, at most `max_waiting` of them; one more is refused
(`Busy`, the server's 503). Cancelling a job (its client went away) closes its iterator at the worker's next
turn, so a generation nobody reads stops within one step.

Why one thread: every job shares the models, and PyTorch already spreads one forward pass over the cores;
two Python threads stepping models would only fight over them. And some views patch a model while they run
(saliency hooks the embedding), which must never overlap a generation on the same model.

The event loop never waits on the worker: each step's result is handed back with `call_soon_threadsafe` to
the job's asyncio queue, which the request handler reads.

    sched = Scheduler(max_running=2, max_waiting=0)
    job = sched.submit(iter([1, 2]), loop)   # inside a coroutine; then `async for x in job: ...`
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, AsyncIterator, Hashable, Iterator, Protocol, runtime_checkable

_DONE = object()


@runtime_checkable
class Batched(Protocol):
    """A job that is a row of a shared batch (completions.Completion): jobs with equal `batch_key` share the
    engine `new_batch()` made for the first of them; `join` takes a row in it (`row`, None until then);
    `wants_step` says whether the next pass should give the row a token; `advance` returns the next item to
    post, or None for nothing yet, and raises StopIteration once done; `close` leaves the batch."""

    batch_key: Hashable
    wants_step: bool
    row: Any

    def new_batch(self) -> Any: ...

    def join(self, batch: Any) -> None: ...

    def advance(self) -> Any: ...

    def close(self) -> None: ...


class Busy(RuntimeError):
    """Every running and waiting place is taken; the message is one line, fit for a 503."""


class Job:
    """A submitted iterator, its results on an asyncio queue, and a flag to stop it."""

    def __init__(self, steps: Iterator[Any], loop: asyncio.AbstractEventLoop):
        self.steps = steps
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.closed = False  # set by the worker once the iterator is finished or closed
        self.batched = isinstance(steps, Batched)  # a row of a shared batch (checked once: the check is slow)

    def cancel(self) -> None:
        """Stop this job at the worker's next turn (its iterator is closed: its `finally` blocks run)."""
        self.cancelled.set()

    def _post(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._results()

    async def _results(self) -> AsyncIterator[Any]:
        """The job's steps as they come; the job's own exception is raised here. Leaving early cancels it."""
        try:
            while True:
                item = await self.queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.cancel()  # a no-op once the job is done

    async def result(self) -> list[Any]:
        """Every step of the job, once it has finished."""
        return [item async for item in self]


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Scheduler:
    """A worker thread, a bounded queue, round-robin steps. Counters: running, waiting, completed, cancelled,
    failed, refused (see `stats`)."""

    def __init__(self, max_running: int = 16, max_waiting: int = 64):
        if max_running < 1 or max_waiting < 0:
            raise ValueError("the scheduler needs max_running >= 1 and max_waiting >= 0")
        self.max_running, self.max_waiting = max_running, max_waiting
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._counts = {"completed": 0, "cancelled": 0, "failed": 0, "refused": 0}
        self._batches: dict[Hashable, Any] = {}  # batch_key -> the engine its generations share (kept: reused)
        self._thread = threading.Thread(target=self._work, name="tinygpt-worker", daemon=True)
        self._thread.start()

    def submit(self, steps: Iterator[Any], loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Queue a job; raises Busy when every place is taken. loop: the event loop that reads the results
        (default: the running one)."""
        job = Job(steps, loop or asyncio.get_running_loop())
        with self._cond:
            if self._stop:
                raise Busy("the server is shutting down")
            if len(self._running) + len(self._waiting) >= self.max_running + self.max_waiting:
                self._counts["refused"] += 1
                raise Busy(f"the server is busy: {len(self._running)} requests are running and "
                           f"{len(self._waiting)} waiting (at most {self.max_waiting}); try again shortly")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"running": len(self._running), "waiting": len(self._waiting), **self._counts}

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker: every job still running or waiting is closed, and its reader told it ended."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._running and not self._waiting:
                    self._cond.wait()
                if self._stop:
                    for job in self._running + list(self._waiting):
                        self._finish(job, _DONE, "cancelled")
                    self._running, self._waiting = [], deque()
                    return
                while self._waiting and len(self._running) < self.max_running:  # arrival order
                    self._running.append(self._waiting.popleft())
                turn = list(self._running)
            # outside the lock: submit() never waits on a model
            self._step_batches([j for j in turn if j.batched])
            for job in turn:  # the other jobs: one step each
                if not job.batched:
                    self._step(job)
            with self._cond:
                self._running = [j for j in self._running if not j.closed]

    def _step_batches(self, jobs: list[Job]) -> None:
        """One forward pass per model for every batched job that needs a token, then each job advances."""
        groups: dict[Hashable, list[Job]] = {}
        for job in jobs:
            if job.cancelled.is_set():
                self._finish(job, _DONE, "cancelled")
                continue
            steps = job.steps
            if steps.row is None:  # new to the batch: take a row
                try:
                    key = steps.batch_key
                    if key not in self._batches:
                        self._batches[key] = steps.new_batch()
                    steps.join(self._batches[key])
                except Exception as e:  # a setting the engine refuses: this job fails, the others go on
                    self._finish(job, _Failure(e), "failed")
                    continue
            groups.setdefault(steps.batch_key, []).append(job)
        for key, members in groups.items():
            try:
                self._batches[key].step([j.steps.row for j in members if j.steps.wants_step])
            except Exception as e:  # the pass failed: every generation in it fails
                for job in members:
                    self._finish(job, _Failure(e), "failed")
                continue
            for job in members:
                self._advance(job)

    def _advance(self, job: Job) -> None:
        try:
            item = job.steps.advance()
        except StopIteration:
            self._finish(job, _DONE, "completed")
        except Exception as e:
            self._finish(job, _Failure(e), "failed")
        else:
            if item is not None:  # None: its text waits for the next token
                job._post(item)

    def _step(self, job: Job) -> None:
        if job.cancelled.is_set():
            self._finish(job, _DONE, "cancelled")
            return
        try:
            item = next(job.steps)
        except StopIteration:
            self._finish(job, _DONE, "completed")
        except Exception as e:  # the reader raises it; the worker goes on with the other jobs
            self._finish(job, _Failure(e), "failed")
        else:
            job._post(item)

    def _finish(self, job: Job, last: Any, outcome: str) -> None:
        close = getattr(job.steps, "close", None)
        if close is not None:
            try:
                close()  # a generator's finally blocks run now, on the worker
            except Exception:
                pass
        job.closed = True
        with self._cond:
            self._counts[outcome] += 1
        job._post(last)


__all__ = ["Busy", "Job", "Scheduler"]
