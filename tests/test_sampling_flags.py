"""The sampling flags `sample` and `chat` share: the same names, meanings and checks in both (--greedy in chat
too), and the repetition, frequency and presence penalties passed to the generation functions by name."""
from __future__ import annotations

import io
import sys

import pytest
import torch

from tinygpt import GPT, ModelConfig
from tinygpt.generation.chat import ChatSession
from tinygpt.generation.sampling import penalize
from tinygpt.tokenizers import CharTokenizer, ChatTokenizer
from tinygpt.training.checkpoint import save_checkpoint
from tinygpt.training.run import load_checkpoint

TEXT = "the cat sat on the mat. a dog ran to the sun.\n"


def _run(path, tok, seed=1):
    """A checkpoint of a random tiny GPT (weights wide enough that its greedy text varies, and repeats itself):
    what the flags do does not need a trained one."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=tok.vocab_size, init_std=0.2))
    save_checkpoint(path / "best", model, tok, {"step": 0})
    return path


@pytest.fixture
def text_run(tmp_path):
    return _run(tmp_path / "text", CharTokenizer.train(TEXT))


@pytest.fixture
def chat_run(tmp_path):
    return _run(tmp_path / "chat", ChatTokenizer(CharTokenizer.train(TEXT)))


def test_chat_takes_greedy_as_sample_does(cli, chat_run, monkeypatch):
    """`chat --greedy` is chat's default (temperature 0) said out loud: the same replies as without it."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat?\na dog?\n"))
    code, greedy, err = cli("chat", chat_run, "--greedy", "--max_new_tokens=6", "--device=cpu")
    assert code == 0, err
    model, tok, _ = load_checkpoint(chat_run)
    session = ChatSession(model, tok, max_new_tokens=6)
    expected = [" ".join("".join(session.reply(q)).splitlines()) for q in ("the cat?", "a dog?")]
    assert greedy.split("\n")[:2] == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat?\na dog?\n"))
    assert cli("chat", chat_run, "--max_new_tokens=6", "--device=cpu")[1] == greedy


@pytest.mark.parametrize("command", ["sample", "chat"])
@pytest.mark.parametrize("flags, words", [
    (["--greedy", "--temperature", "0.5"], "--greedy means temperature 0; drop --temperature 0.5"),
    (["--temperature", "-1"], "temperature must be a number >= 0"),
    (["--top_p", "1.5"], "top_p must be in (0, 1]"),
    (["--repetition_penalty", "0"], "repetition_penalty must be a number > 0 (1 means no penalty)"),
    (["--repetition_penalty", "nan"], "--repetition_penalty: must be a finite number"),
    (["--frequency_penalty", "2.5"], "frequency_penalty must be a number in [-2, 2] (0 means none)"),
    (["--presence_penalty", "-3"], "presence_penalty must be a number in [-2, 2] (0 means none)"),
])
def test_sampling_flags_are_checked_alike_in_sample_and_chat(cli, text_run, chat_run, monkeypatch, command, flags,
                                                             words):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    run = text_run if command == "sample" else chat_run
    code, out, err = cli(command, run, *flags, "--device=cpu")
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err, err


def test_beam_search_refuses_the_penalties(cli, text_run):
    code, _, err = cli("sample", text_run, "--num_beams", "2", "--repetition_penalty", "1.2", "--presence_penalty",
                       "0.5", "--device=cpu")
    assert code == 2 and "does not sample: drop --repetition_penalty, --presence_penalty" in err


def test_penalties_left_at_their_off_values_change_nothing(cli, text_run):
    """1, 0 and 0 are "off": the text is the plain greedy one, and nothing new is asked of the engine."""
    plain = cli("sample", text_run, "--prompt", "the ", "--greedy", "--max_new_tokens=20", "--device=cpu")
    off = cli("sample", text_run, "--prompt", "the ", "--greedy", "--max_new_tokens=20", "--device=cpu",
              "--repetition_penalty", "1", "--frequency_penalty", "0", "--presence_penalty", "0")
    assert plain[0] == off[0] == 0 and plain[1] == off[1]


def _penalized_greedy(model, tok, prompt, n, **penalties):
    """The reference: the whole window through the model each step, the penalties applied by `penalize` to the
    last position's logits, then the most likely token."""
    ids = tok.encode(prompt)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids + new]))[0][:, -1]  # (1, V)
            logits = penalize(logits, [ids + new], [new], **penalties)
            new.append(int(torch.argmax(logits, dim=-1)))
    return tok.decode(new)


def test_sample_with_a_repetition_penalty_matches_the_rule_written_out(cli, text_run):
    model, tok, _ = load_checkpoint(text_run)
    prompt, n = "the cat ", 30
    expected = _penalized_greedy(model, tok, prompt, n, repetition_penalty=1.5)
    assert expected != _penalized_greedy(model, tok, prompt, n)  # the penalty changes this text
    code, out, err = cli("sample", text_run, "--prompt", prompt, "--greedy", "--repetition_penalty", "1.5",
                         "--max_new_tokens", str(n), "--device=cpu")
    assert code == 0, err
    assert out == prompt + expected + "\n"


def test_sample_on_a_calculator_run_takes_the_penalties_as_its_answer_does(cli, tmp_path):
    """A task run answers through the task (its prompt wrapped, its answer cut at <eos>): the penalties reach it
    by name, and the command prints the library's answer."""
    from tinygpt.recipes.demo import train_calculator

    train_calculator(tmp_path / "calc", overrides=dict(max_iters=2, batch_size=8, eval_interval=2, eval_iters=1,
                                                       n_layer=1, n_embd=32, init_std=0.3, device="cpu"),
                     finish_early=False)
    model, _, cfg = load_checkpoint(tmp_path / "calc")
    from tinygpt.training.run import task_of

    task = task_of(cfg)
    question = "seven times eight"
    given = {"repetition_penalty": 2.0, "presence_penalty": 1.5}
    want = task.answer(model, question, 8, **given)
    code, out, err = cli("sample", tmp_path / "calc", "--prompt", question, "--greedy", "--max_new_tokens", "8",
                         "--repetition_penalty", "2", "--presence_penalty", "1.5", "--device=cpu")
    assert code == 0, err
    assert want in out
