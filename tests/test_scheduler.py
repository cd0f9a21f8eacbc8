"""The server's scheduler: round-robin steps, a bounded queue, cancellation, failures kept to their job."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tinygpt.serve.scheduler import Busy, Scheduler


def _steps(name: str, n: int, log: list[str], closed: list[str] | None = None):
    try:
        for i in range(n):
            log.append(f"{name}{i}")
            yield f"{name}{i}"
    finally:
        if closed is not None:
            closed.append(name)


def _blocked(release: threading.Event, started: threading.Event | None = None):
    if started is not None:
        started.set()
    release.wait(10)
    yield "released"


def test_jobs_take_turns_one_step_each():
    async def main(max_running: int) -> tuple[list[str], list[list[str]]]:
        sched = Scheduler(max_running=max_running, max_waiting=4)
        log: list[str] = []
        release = threading.Event()
        gate = sched.submit(_blocked(release))  # holds the worker until both jobs are queued
        jobs = [sched.submit(_steps(n, 3, log)) for n in "ab"]
        release.set()
        results = await asyncio.gather(gate.result(), *(j.result() for j in jobs))
        sched.close()
        return log, results[1:]

    log, results = asyncio.run(main(3))
    assert log == ["a0", "b0", "a1", "b1", "a2", "b2"]  # fair: interleaved
    assert results == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]  # each job's results, in order
    log, _ = asyncio.run(main(1))
    assert log == ["a0", "a1", "a2", "b0", "b1", "b2"]  # one at a time, in arrival order


def test_a_full_queue_refuses_and_counts():
    async def main() -> None:
        sched = Scheduler(max_running=1, max_waiting=1)
        release, started = threading.Event(), threading.Event()
        running = sched.submit(_blocked(release, started))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        waiting = sched.submit(iter(["w"]))
        with pytest.raises(Busy, match="busy: 1 requests are running and 1 waiting"):
            sched.submit(iter(["x"]))
        assert sched.stats() == {"running": 1, "waiting": 1, "completed": 0, "cancelled": 0, "failed": 0,
                                 "refused": 1}
        release.set()
        assert await running.result() == ["released"] and await waiting.result() == ["w"]
        assert sched.stats()["completed"] == 2
        sched.submit(iter(["again"]))  # room again
        sched.close()

    asyncio.run(main())


def test_cancelling_closes_the_iterator_at_the_next_turn():
    def slow(log: list[str], closed: list[str]):
        try:
            for i in range(10_000):
                threading.Event().wait(0.002)  # a model step
                log.append(i)
                yield i
        finally:
            closed.append("a")

    async def main() -> None:
        sched = Scheduler(max_running=2, max_waiting=0)
        log: list[int] = []
        closed: list[str] = []
        job = sched.submit(slow(log, closed))
        async for item in job:
            if item == 2:
                job.cancel()  # what the server does when the client goes away
                at_cancel = len(log)
                break
        for _ in range(500):
            if sched.stats()["cancelled"]:
                break
            await asyncio.sleep(0.01)
        assert closed == ["a"]  # the generator's finally ran
        assert len(log) <= at_cancel + 1  # at most the step already under way
        assert sched.stats()["cancelled"] == 1 and sched.stats()["running"] == 0
        sched.close()

    asyncio.run(main())


def test_a_failing_job_raises_for_its_reader_only():
    def failing():
        yield 1
        raise ValueError("broken model")

    async def main() -> None:
        sched = Scheduler()
        bad, good = sched.submit(failing()), sched.submit(iter([1, 2, 3]))
        with pytest.raises(ValueError, match="broken model"):
            await bad.result()
        assert await good.result() == [1, 2, 3]
        assert sched.stats()["failed"] == 1 and sched.stats()["completed"] == 1
        sched.close()
        with pytest.raises(Busy, match="shutting down"):
            sched.submit(iter([]))

    asyncio.run(main())


def test_closing_ends_waiting_jobs():
    async def main() -> None:
        sched = Scheduler(max_running=1, max_waiting=2)
        release, started = threading.Event(), threading.Event()
        first = sched.submit(_blocked(release, started))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        second = sched.submit(iter(["never"]))
        closer = asyncio.get_running_loop().run_in_executor(None, sched.close)
        while not sched._stop:  # close() has begun while the first job is still mid-step
            await asyncio.sleep(0.01)
        release.set()
        await closer
        assert await second.result() == []  # ended, never started, not left hanging
        assert await first.result() == ["released"]  # the step under way finished
        assert sched.stats()["cancelled"] == 2

    asyncio.run(main())
