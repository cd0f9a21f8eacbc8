"""The demo's early stop (`demo.learned`): nothing is asked while the answer loss is high; once it is low,
training ends only if every sampled training question is answered right."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tinygpt.recipes import demo
from tinygpt.recipes.demo import LEARNED_LOSS, learned
from tinygpt.tasks.calculator import CalculatorTask, Problem


class Oracle(nn.Module):
    """A fake calculator model: reads the question in its input and puts all probability on the next token of
    the right answer (then <eos>). `wrong` names problems it answers "zero" instead."""

    can_cache = False

    def __init__(self, task: CalculatorTask, wrong: frozenset[Problem] = frozenset()):
        super().__init__()
        self.task, self.wrong = task, wrong
        self.config = type("Config", (), {"block_size": task.block_size})()
        self.dummy = nn.Parameter(torch.zeros(1))

    def next_id(self, row: list[int]) -> int:
        t = self.task
        sep = row.index(t.sep_id)
        problem = t.parse_question(t.tokenizer.decode(row[:sep]))
        answer = 0 if problem in self.wrong else problem.answer
        target = t.number_ids(answer) + [t.eos_id]
        done = len(row) - sep - 1  # answer tokens already in the input
        return target[min(done, len(target) - 1)]

    def forward(self, idx, targets=None):
        B, T = idx.shape
        logits = torch.full((B, T, self.task.tokenizer.vocab_size), -10.0)
        for b, row in enumerate(idx.tolist()):
            logits[b, -1, self.next_id(row)] = 10.0
        return logits, None


@pytest.fixture(scope="module")
def task() -> CalculatorTask:
    # small ranges keep the oracle quick; every training problem is in the sample (fewer than LEARNED_SAMPLE)
    return CalculatorTask(ranges={"plus": (0, 9), "minus": (0, 9), "times": (0, 3)})


def n_train(task: CalculatorTask) -> int:
    return sum(len(ps) for ps in task.splits["train"].values())


def test_high_loss_asks_nothing(task, monkeypatch):
    def never(*a, **k):
        raise AssertionError("score must not run while the loss is high")

    monkeypatch.setattr(task, "score", never)
    check = learned(task)
    model = Oracle(task)
    assert check(model, {"step": 250, "eval_train_loss": LEARNED_LOSS * 1.01}) is None
    assert check(model, {"step": 250, "eval_train_loss": 2.5}) is None
    assert check(model, {"step": 250}) is None  # no evaluation figure: not learned


def test_a_model_that_answers_every_training_question_stops_training(task):
    check = learned(task)
    total = n_train(task)
    # plus 100 problems, minus 55 (non-negative answers), round(10 %) of each held out; times 16, all trained
    assert total == (100 - 10) + (55 - 6) + 16
    reason = check(Oracle(task), {"step": 500, "eval_train_loss": LEARNED_LOSS})
    assert reason == f"it answers all {total} sampled training questions right"


def test_one_wrong_training_answer_keeps_training(task):
    problem = next(p for p in task.splits["train"]["times"] if p.answer)
    oracle = Oracle(task, wrong=frozenset({problem}))
    assert task.answer(oracle, problem.question) == "zero"
    assert learned(task)(oracle, {"step": 500, "eval_train_loss": 0.0}) is None


def test_held_out_questions_are_never_looked_at(task):
    heldout = frozenset(p for ps in task.splits["val"].values() for p in ps)
    assert heldout  # the oracle gets every held-out question wrong, and training still counts as learned
    assert learned(task)(Oracle(task, wrong=heldout), {"step": 500, "eval_train_loss": 0.0}) is not None


def test_the_sample_is_capped_per_operation(task, monkeypatch):
    asked = {}
    real = task.score

    def spy(model, split="val", **kw):
        asked.update(split=split, **kw)
        return real(model, split, **kw)

    monkeypatch.setattr(task, "score", spy)
    learned(task)(Oracle(task), {"eval_train_loss": 0.0})
    assert asked == {"split": "train", "max_per_op": demo.LEARNED_SAMPLE}
