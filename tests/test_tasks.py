"""Tests of the calculator task: number words, the word tokenizer, problems and splits, the loss mask,
question validation, batched vs one-at-a-time scoring, and a short training run through demo.py."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.data.text import IGNORE_INDEX
from tinygpt.models import build_model
from tinygpt.models.base import LanguageModel
from tinygpt.tasks.calculator import (CalculatorConfig, CalculatorTask, Problem, QuestionError, TaskError, TASKS,
                                      number_to_words, task_from_dict, words_to_number)
from tinygpt.tokenizers import REGISTRY, TokenizerError, WordTokenizer, load_tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast as two, and immune to stalls when the cores are busy
    (with two threads every small op waits for both to be scheduled; measured 1 s -> 100 s under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def task() -> CalculatorTask:
    return CalculatorTask()


# --- number words ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n, words", [(0, "zero"), (7, "seven"), (12, "twelve"), (13, "thirteen"), (20, "twenty"),
                                      (56, "fifty six"), (90, "ninety"), (100, "one hundred"),
                                      (105, "one hundred five"), (144, "one hundred forty four"),
                                      (198, "one hundred ninety eight"), (999, "nine hundred ninety nine")])
def test_number_words_known_answers(n, words):
    assert number_to_words(n) == words
    assert words_to_number(words) == n


def test_number_words_round_trip_and_refusals():
    for n in range(1000):
        assert words_to_number(number_to_words(n)) == n
    assert len({number_to_words(n) for n in range(1000)}) == 1000
    assert words_to_number("  fifty \t six ") == 56
    for bad in ("", "six fifty", "one hundred and six", "fifty-six", "twenty zero", "hundred", "zero five"):
        with pytest.raises(ValueError):
            words_to_number(bad)
    for bad in (-1, 1000, 2.0):
        with pytest.raises(ValueError):
            number_to_words(bad)


# --- the word tokenizer -------------------------------------------------------------------------------

def test_word_tokenizer_round_trip_unknown_and_persistence(tmp_path):
    tok = WordTokenizer(["two", "plus", "three"], specials=["<pad>", "<unk>"])
    assert REGISTRY["word"] is WordTokenizer
    assert tok.vocab_size == 5
    assert tok.encode(" two  plus\nthree ") == [2, 3, 4]
    assert tok.decode([4, 3, 2, 0]) == "three plus two <pad>"
    assert tok.encode("") == [] and tok.decode([]) == ""
    with pytest.raises(TokenizerError, match="'four'") as e:
        tok.encode("two plus four")
    assert "\n" not in str(e.value)
    with pytest.raises(TokenizerError):
        tok.decode([5])
    lenient = WordTokenizer(["two", "plus", "three"], specials=["<pad>", "<unk>"], map_unknown=True)
    assert lenient.encode("two plus four") == [2, 3, 1]
    for t in (tok, lenient):
        t.save(tmp_path / "tok.json")
        back = load_tokenizer(tmp_path / "tok.json")
        assert back == t and back.encode("two plus three") == t.encode("two plus three")
    with pytest.raises(TokenizerError):
        WordTokenizer(["a"], specials=["<pad>"], map_unknown=True)  # no <unk> to map to
    with pytest.raises(TokenizerError):
        WordTokenizer(["a", "a"])
    with pytest.raises(TokenizerError):
        WordTokenizer(["a b"])


# --- problems, vocabulary, splits -----------------------------------------------------------------

def test_problem_counts_and_vocabulary(task):
    assert {op: len(ps) for op, ps in task.problems.items()} == {"plus": 10000, "minus": 5050, "times": 169}
    assert all(p.answer >= 0 for ps in task.problems.values() for p in ps)
    assert task.tokenizer.vocab_size == 35  # 3 specials, zero..nineteen, twenty..ninety, hundred, 3 operations
    assert task.block_size == 10  # "ninety nine plus ninety nine = one hundred ninety eight <eos>" minus one
    assert task.max_answer_len == 4
    assert task.tokenizer.decode(task.encode(Problem(7, "times", 8))) == "seven times eight = fifty six <eos>"


def test_split_is_deterministic_disjoint_and_has_no_times(task):
    again, other = CalculatorTask(), CalculatorTask(seed=1)
    assert again.splits == task.splits
    assert other.splits["val"] != task.splits["val"]
    for op, ps in task.problems.items():
        train, val = set(task.splits["train"][op]), set(task.splits["val"][op])
        assert not train & val and train | val == set(ps)
    assert {op: len(v) for op, v in task.splits["val"].items()} == {"plus": 1000, "minus": 505, "times": 0}
    assert len(task.splits["train"]["times"]) == 169


def test_batches_mask_everything_but_the_answer(task):
    g = torch.Generator().manual_seed(0)
    x, y = task.get_batch("train", 512, g)
    assert x.shape == y.shape == (512, task.block_size) and x.dtype == y.dtype == torch.int64
    seen_ops = set()
    for xr, yr in zip(x.tolist(), y.tolist()):
        full = xr + [yr[-1] if yr[-1] != IGNORE_INDEX else task.pad_id]  # the whole padded sequence
        words = task.tokenizer.decode(xr).split()
        sep = words.index("=")
        problem = task.parse_question(" ".join(words[:sep]))
        seen_ops.add(problem.op)
        answer = task.number_ids(problem.answer) + [task.eos_id]
        kept = [i for i, t in enumerate(yr) if t != IGNORE_INDEX]
        assert kept == list(range(sep, sep + len(answer)))  # y[t] predicts x[t + 1]: the words after "="
        assert [yr[i] for i in kept] == answer
        assert full[sep + 1:sep + 1 + len(answer)] == answer
    assert seen_ops == {"plus", "minus", "times"}
    # an operation is drawn first: the 169 times problems fill about a third of the batch
    n_times = sum(task.tokenizer.stoi["times"] in row for row in x.tolist())
    assert 100 < n_times < 250
    xv, _ = task.get_batch("val", 256, torch.Generator().manual_seed(0))
    assert not (xv == task.tokenizer.stoi["times"]).any()
    x2, y2 = task.get_batch("train", 512, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(ValueError):
        task.get_batch("test", 4, g)


# --- questions --------------------------------------------------------------------------------------

def test_prompt_ids_and_answer_text(task):
    ids = task.prompt_ids("two plus three")
    assert task.tokenizer.decode(ids) == "two plus three ="
    assert task.prompt_ids("  Two PLUS three = ") == ids
    assert task.parse_question("ninety nine minus ninety nine") == Problem(99, "minus", 99)
    five = task.number_ids(5)
    assert task.answer_text(five + [task.eos_id, task.pad_id]) == "five"
    assert task.answer_text(task.number_ids(56)) == "fifty six"


@pytest.mark.parametrize("question, fragment", [
    ("", "empty"), ("   ", "empty"), ("2 plus 3", "'2'"), ("two divided by three", "'divided'"),
    ("two plus", "form"), ("plus two", "form"), ("two plus three plus four", "form"), ("two three", "form"),
    ("six fifty plus one", "six fifty"), ("one hundred plus one", "out of range"),
    ("thirteen times two", "out of range"), ("three minus five", "below zero"), ("<eos> plus two", "'<eos>'"),
])
def test_bad_questions_raise_one_line_errors(task, question, fragment):
    with pytest.raises(QuestionError) as e:
        task.prompt_ids(question)
    assert isinstance(e.value, ValueError)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_operations_outside_the_settings_are_refused():
    small = CalculatorTask(ranges={"plus": (0, 9)}, mix={"plus": 1}, heldout_ops=("plus",), heldout_fraction=0.2)
    assert {op: len(v) for op, v in small.splits["val"].items()} == {"plus": 20}
    with pytest.raises(QuestionError, match="does not know 'times'"):
        small.prompt_ids("two times three")


def test_settings_validation_and_persistence(task):
    d = task.to_dict()
    assert json.loads(json.dumps(d)) == d and d["name"] == "calculator" and TASKS["calculator"] is CalculatorTask
    back = task_from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d and back.splits == task.splits and back.tokenizer == task.tokenizer
    with pytest.raises(TaskError):
        task_from_dict({**d, "name": "chess"})
    with pytest.raises(TaskError):
        task_from_dict({**d, "colour": "red"})
    for bad in (dict(ranges={"divide": (0, 9)}), dict(ranges={"plus": (5, 2)}), dict(ranges={"plus": (0, 600)}),
                dict(mix={"plus": 1, "minus": 1, "times": 0}), dict(heldout_fraction=0.0),
                dict(heldout_ops=("times", "modulo"))):
        with pytest.raises(TaskError) as e:
            CalculatorConfig(**bad)
        assert "\n" not in str(e.value)


# --- scoring: the batched path equals one question at a time ------------------------------------------

def _sample_prompts(task: CalculatorTask, n_per_op: int = 25) -> list[list[int]]:
    ps = [p for split in task.splits.values() for ops in split.values() for p in ops[::max(1, len(ops) // n_per_op)]]
    return [task.question_ids(p) for p in ps]


@pytest.mark.parametrize("kind", ["gpt", "bigram"])
def test_batched_completion_equals_one_at_a_time_on_random_models(task, kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=kind, vocab_size=task.tokenizer.vocab_size, block_size=task.block_size,
                                    n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # larger weights: confident, distinct logits instead of near ties
        for p in model.parameters():
            p.mul_(20)
    prompts = _sample_prompts(task)
    assert len({len(p) for p in prompts}) == 3  # questions of 3, 4 and 5 words
    fast = task.complete(model, prompts, batch_size=37)
    assert fast == task.complete_slow(model, prompts)
    assert fast == task.complete_slow(model, prompts, use_cache=False)
    assert all(0 < len(f) <= task.max_answer_len + 1 for f in fast)


class AnswersAfter(LanguageModel):
    """A calculator stand-in with a KV cache: after a question whose first word has id q it says "one"
    1 + q % 3 times, then <eos>. Records the length of every input, to count passes."""

    can_cache = True

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.config = ModelConfig(vocab_size=task.tokenizer.vocab_size, block_size=task.block_size, n_layer=1,
                                  n_head=1, n_embd=8)
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, int]] = []
        self.one = task.tokenizer.stoi["one"]

    def new_cache(self, batch_size, device=None, dtype=None):
        return {"seen": torch.zeros(batch_size, 0, dtype=torch.long)}

    def forward(self, idx, targets=None, *, cache=None, capture=None):
        self.calls.append(tuple(idx.shape))
        if cache is not None:
            cache["seen"] = idx = torch.cat([cache["seen"], idx], dim=1)
        said = (idx == self.one).sum(dim=1)  # "one"s so far (the questions below have none)
        want = 1 + idx[:, 0] % 3
        nxt = torch.where(said < want, self.one, self.task.eos_id)
        logits = torch.zeros(idx.size(0), idx.size(1), self.config.vocab_size)
        logits[torch.arange(idx.size(0)), -1, nxt] = 1.0
        return logits, None


def test_complete_prefills_once_and_stops_when_every_row_has_answered(task):
    model = AnswersAfter(task)
    questions = ["two plus three", "three plus four", "four plus five"]  # first word ids differ by one
    prompts = [task.prompt_ids(q) for q in questions]
    got = task.complete(model, prompts)
    lengths = [1 + p[0] % 3 for p in prompts]
    assert sorted(lengths) == [1, 2, 3]
    assert got == [[model.one] * n + [task.eos_id] for n in lengths]
    # one batch (this stand-in has no cache for the batched engine, so each step reads the rows' windows again):
    # a row leaves the batch once it has said <eos>, and the batch stops with the last row's
    assert model.calls == [(3, 4), (3, 5), (2, 6), (1, 7)]
    assert got == task.complete_slow(model, prompts) == task.complete_slow(model, prompts, use_cache=False)


# --- a short training run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tinygpt.recipes.demo import train_calculator

    out = tmp_path_factory.mktemp("calc")
    result = train_calculator(out, overrides=dict(max_iters=300, batch_size=64, warmup_iters=30, eval_interval=150,
                                                  eval_iters=4, device="cpu"))
    return out, result


@pytest.mark.slow
def test_short_training_run_learns(trained_run, task):
    from tinygpt.training.run import load_checkpoint
    from tinygpt.training.run import read_metrics

    out, result = trained_run
    assert result.step == 300
    vals = [m["val_loss"] for m in read_metrics(out) if "val_loss" in m]
    assert vals[0] > 3.0  # about ln(35) = 3.56 at the start
    assert vals[-1] < 0.5 * math.log(task.tokenizer.vocab_size)
    model, tokenizer, cfg = load_checkpoint(out)
    assert cfg["task"] == task.to_dict() and tokenizer == task.tokenizer
    assert model.config.n_embd == 64 and model.config.n_layer == 4 and model.config.block_size == task.block_size
    assert isinstance(task.answer(model, "two plus three"), str)
    # the times table is seen most often per problem: some of it is learned already
    assert task.score(model, "train", max_per_op=60)["times"]["correct"] > 5  # 23 of 60 when measured

    prompts = _sample_prompts(task)
    assert task.complete(model, prompts) == task.complete_slow(model, prompts)
    assert task.score(model, "val", max_per_op=40) == task.score(model, "val", max_per_op=40, slow=True)


def test_report(trained_run):
    from tinygpt.recipes.demo import calculator_report

    out, _ = trained_run
    r = calculator_report(out, max_per_op=50, n_examples=4)
    assert set(r["heldout"]) == {"plus", "minus"} and set(r["train"]) == {"plus", "minus", "times"}
    assert all(v["total"] == 50 and 0 <= v["accuracy"] <= 1 for v in r["heldout"].values())
    assert len(r["examples"]) == 4 and {"question", "answer", "expected", "correct"} <= set(r["examples"][0])
    assert [s for s, _ in r["val_loss"]] == [0, 150, 300] and r["train_seconds"] > 0
    assert r["step"] in (150, 300)  # the best checkpoint


# --- `tinygpt sample` on a task run: greedy by default, and every flag honoured or refused -------------

@pytest.mark.slow
def test_sample_on_a_task_run_answers_like_the_library(trained_run, task, cli):
    from tinygpt.training.run import load_checkpoint

    out, _ = trained_run
    model, _, _ = load_checkpoint(out)
    q = "seven times eight"
    greedy = task.answer(model, q)
    assert greedy == task.answer_text(task.complete(model, [task.prompt_ids(q)])[0])  # what scoring sees
    code, text, err = cli("sample", out, "--prompt", q)
    assert code == 0 and text == greedy + "\n", err
    code, text, _ = cli("sample", out, "--prompt", q, "--no_cache", "--greedy")
    assert code == 0 and text == greedy + "\n"
    # sampling settings are honoured, with the seed moving on by one per sample
    code, text, err = cli("sample", out, "--prompt", q, "--temperature", "3", "--top_k", "20", "--seed", "1",
                          "--num_samples", "4")
    want = [task.answer(model, q, temperature=3.0, top_k=20, seed=1 + i) for i in range(4)]
    assert code == 0 and text.split("\n")[:4] == want and want != [greedy] * 4, err
    # beams end at <eos>
    code, text, _ = cli("sample", out, "--prompt", q, "--num_beams", "3", "--max_new_tokens", "4")
    assert code == 0 and text == task.answer(model, q, 4, num_beams=3) + "\n"


@pytest.mark.parametrize("flags, fragment", [(["--stop", "six"], "--stop does not apply to a task run"),
                                             (["--num_beams", "2", "--temperature", "1"], "drop --temperature"),
                                             (["--greedy", "--temperature", "0.5"], "--greedy"),
                                             (["--num_beams", "0"], "--num_beams"),
                                             (["--max_new_tokens", "-1"], "--max_new_tokens")])
def test_sample_on_a_task_run_refuses_what_does_not_apply(trained_run, cli, flags, fragment):
    out, _ = trained_run
    code, text, err = cli("sample", out, "--prompt", "two plus three", *flags)
    assert code == 2 and fragment in err and err.startswith("error:") and err.count("\n") == 1 and text == ""


def test_sample_escapes_control_characters_of_a_question(trained_run, cli):
    out, _ = trained_run
    code, _, err = cli("sample", out, "--prompt", "two\x1b[31m plus three")
    assert code == 2 and "\x1b" not in err and "\\x1b" in err and err.count("\n") == 1
