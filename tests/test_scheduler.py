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


# --- generations share one forward pass ------------------------------------------------------------------

def _toy_served():
    import torch

    from tinygpt.config import ModelConfig
    from tinygpt.inspect.views import Subject
    from tinygpt.models import GPT
    from tinygpt.serve.completions import ServedModel
    from tinygpt.tokenizers import CharTokenizer

    tok = CharTokenizer(list("abcdefgh \n"), specials=["<unk>", "<eos>"])  # <eos> ends a text
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10)
    return ServedModel("toy", Subject(model, tok, {"path": "toy"}), 0)


def _requests(served, n=16):
    """n requests of different prompt lengths (some longer than the window), greedy and seeded sampling, some
    with stop strings, penalties, log-probabilities; 24 tokens each, so windows slide."""
    tok = served.subject.tokenizer
    out = []
    for i in range(n):
        prompt = tok.encode(("abc hd\nge f" * 3)[:1 + (7 * i) % 23])
        settings = dict(temperature=0.0) if i % 2 == 0 else dict(temperature=0.9, top_k=8, seed=100 + i)
        if i % 4 == 1:
            settings.update(repetition_penalty=1.2, frequency_penalty=0.3, presence_penalty=0.2)
        out.append(dict(ids=prompt, max_tokens=24, stop=["ag"] if i % 5 == 0 else (),
                        logprobs=2 if i % 3 == 0 else None, **settings))
    return out


def _shape(items):
    """A reply's texts, token ids and finish, and its log-probabilities apart (compared to rounding)."""
    from tinygpt.serve.completions import Finish

    exact = [("finish", x.reason, x.completion_tokens) if isinstance(x, Finish) else
             (x.text, [(t, [c for c, _ in top]) for t, _, top in x.tokens]) for x in items]
    logprobs = [v for x in items if not isinstance(x, Finish) for _, lp, top in x.tokens
                for v in [lp] + [v for _, v in top]]
    return exact, logprobs


def test_sixteen_concurrent_generations_share_each_pass_and_equal_their_replies_alone():
    from tinygpt.serve.completions import complete

    served = _toy_served()
    requests = _requests(served)
    alone = [list(complete(served, **r)) for r in requests]
    passes: list[int] = []
    hook = served.subject.model.register_forward_hook(lambda m, args, out: passes.append(args[0].size(0)))

    async def main():
        sched = Scheduler(max_running=16, max_waiting=1)
        jobs = [sched.submit(complete(served, **r)) for r in requests]
        other = sched.submit(iter(["an inspection", "takes its steps"]))  # not a generation: stepped as before
        results = await asyncio.gather(*(j.result() for j in jobs), other.result())
        stats = sched.stats()
        sched.close()
        return results, stats

    try:
        results, stats = asyncio.run(main())
    finally:
        hook.remove()
    assert results[-1] == ["an inspection", "takes its steps"]
    for got, want in zip(results[:-1], alone):
        (g_exact, g_lp), (w_exact, w_lp) = _shape(got), _shape(want)
        assert g_exact == w_exact
        assert g_lp == pytest.approx(w_lp, abs=1e-4)
    assert stats["completed"] == 17 and stats["failed"] == 0
    tokens = sum(x.completion_tokens for r in alone for x in r if not hasattr(x, "text"))
    decoding = [b for b in passes if b > 1]
    assert len(passes) < tokens / 3 and max(decoding) >= 8  # many rows per pass, not a pass per token
    assert len({tuple(_shape(a)[0]) .__repr__() for a in alone}) > 8  # the replies differ from each other


def test_a_batched_generation_with_a_bad_setting_fails_alone():
    from tinygpt.serve.completions import complete

    served = _toy_served()
    good = _requests(served, 2)

    async def main():
        sched = Scheduler(max_running=4, max_waiting=0)
        jobs = [sched.submit(complete(served, **good[0])),
                sched.submit(complete(served, **{**good[1], "top_p": 0.0})),
                sched.submit(complete(served, **good[1]))]
        results = await asyncio.gather(*(j.result() for j in jobs), return_exceptions=True)
        sched.close()
        return results

    a, bad, b = asyncio.run(main())
    assert isinstance(bad, ValueError) and "top_p" in str(bad)
    assert _shape(a)[0] == _shape(list(complete(served, **good[0])))[0]
    assert _shape(b)[0] == _shape(list(complete(served, **good[1])))[0]


def test_penalties_change_the_tokens_not_the_reported_logprobs():
    import torch

    from tinygpt.serve.completions import complete

    served = _toy_served()
    model = served.subject.model
    ids = served.subject.tokenizer.encode("abcab")
    plain = list(complete(served, ids, 8, temperature=0.0, logprobs=1))
    items = list(complete(served, ids, 8, temperature=0.0, logprobs=1, repetition_penalty=3.0,
                          frequency_penalty=2.0, presence_penalty=2.0))
    chosen = [t for x in items if hasattr(x, "text") for t, _, _ in x.tokens]
    assert chosen != [t for x in plain if hasattr(x, "text") for t, _, _ in x.tokens]
    context = list(ids)
    for x in items:
        for t, lp, _ in getattr(x, "tokens", []):
            with torch.no_grad():
                raw = torch.log_softmax(model(torch.tensor([context]))[0][0, -1], -1)  # the model's own
            assert lp == pytest.approx(float(raw[t]), abs=1e-5)
            context.append(t)


def test_a_cancelled_generation_leaves_the_batch_and_the_others_go_on():
    from tinygpt.serve.completions import complete

    served = _toy_served()
    reqs = _requests(served, 3)

    async def main():
        sched = Scheduler(max_running=4, max_waiting=0)
        jobs = [sched.submit(complete(served, **r)) for r in reqs]
        async for _ in jobs[1]:
            break  # its reader goes away after the first piece: the job is cancelled
        results = [await jobs[0].result(), await jobs[2].result()]
        engine = next(iter(sched._batches.values()))
        stats = sched.stats()
        sched.close()
        return results, stats, engine

    (a, c), stats, engine = asyncio.run(main())
    assert stats["cancelled"] == 1 and stats["completed"] == 2
    assert engine.rows == []  # every row left its slot
    assert _shape(a)[0] == _shape(list(complete(served, **reqs[0])))[0]
    assert _shape(c)[0] == _shape(list(complete(served, **reqs[2])))[0]
