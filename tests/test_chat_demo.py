"""The assistant demo's data (what is held out stays out, every reply is right) and its command end to end with
a tiny recipe (the real one is measured by bench/chat_demo.py)."""
from __future__ import annotations

import re

import pytest

import tinygpt.recipes.assistant as chat_demo
from tinygpt.data.conversations import parse_conversation
from tinygpt.tasks.calculator import OPS, words_to_number

FACT = re.compile(r"^(.+) (plus|minus|times) (.+) is (.+)\.$")


def _facts(text: str):
    for line in text.splitlines():
        m = FACT.match(line)
        if m:
            a, op, b, r = m.groups()
            yield op, words_to_number(a), words_to_number(b), words_to_number(r)


def test_pretraining_text_is_right_and_holds_nothing_back_that_is_held_out():
    text = chat_demo.pretraining_text(seed=3)
    facts = list(_facts(text))
    assert len(facts) == sum(len(chat_demo.problems(op, trained=True)) for op in OPS)
    assert all(OPS[op](a, b) == r for op, a, b, r in facts)
    assert not any(chat_demo.heldout(op, a, b) for op, a, b, _ in facts)
    assert "?" not in text and "<|" not in text  # plain text: no questions, no dialogue


def test_held_out_problems_are_a_tenth_of_plus_and_minus():
    for op in ("plus", "minus"):
        held, trained = chat_demo.problems(op, trained=False), chat_demo.problems(op, trained=True)
        assert 0.08 < len(held) / (len(held) + len(trained)) < 0.12
    assert chat_demo.problems("times", trained=False) == []


@pytest.mark.parametrize("held", [False, True])
def test_conversations_are_valid_right_and_on_the_right_side_of_the_split(held):
    for c in chat_demo.conversations(400, held=held, seed=5):
        conv = parse_conversation({"messages": [{"role": m.role, "content": m.content}
                                                for m in c.conversation.messages]})
        replies = [m.content for m in conv.messages if m.role == "assistant"]
        assert len(replies) == len(c.turns)
        previous = None
        for reply, turn in zip(replies, c.turns):
            if turn.form == "refusal":
                assert reply == chat_demo.REFUSAL
                continue
            ((op, a, b, r),) = _facts(reply)
            assert OPS[op](a, b) == r and op == turn.op
            if turn.kind == "followup" and previous is not None:
                assert a == previous  # a follow-up works on the previous answer
            if op in chat_demo.HELDOUT_OPS:
                assert chat_demo.heldout(op, a, b) == held
            previous = r
        users = [m.content for m in conv.messages if m.role == "user"]
        if any(t.form == "refusal" for t in c.turns):
            topics = chat_demo.TOPICS_HELDOUT if held else chat_demo.TOPICS_TRAIN
            assert any(t in users[0].lower() for t in topics)


def test_demo_chat_end_to_end_with_a_tiny_recipe(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(chat_demo, "N_TRAIN", 300)
    monkeypatch.setattr(chat_demo, "N_HELDOUT", 20)
    tiny = dict(n_layer=1, n_head=2, n_embd=16, max_iters=3, eval_interval=3, eval_iters=1, batch_size=4,
                device="cpu")
    monkeypatch.setattr(chat_demo, "BASE_DEFAULTS", {**chat_demo.BASE_DEFAULTS, **tiny})
    monkeypatch.setattr(chat_demo, "SFT_DEFAULTS", {**chat_demo.SFT_DEFAULTS,
                                                    **{k: v for k, v in tiny.items() if not k.startswith("n_")}})
    code, out, err = cli("demo", "chat", "--out", tmp_path / "chat", "--max_iters=4")
    assert code == 0, err
    assert out.count("question:") == len(chat_demo.COMPARE_QUESTIONS) and "all first turns" in out
    assert "1. pretraining" in err and "2. fine-tuning on conversations" in err
    from tinygpt.training.run import read_metrics
    # a budget of 4 steps, shared 3:3 as the (tiny) recipe shares its stages
    assert [max(m["step"] for m in read_metrics(tmp_path / "chat" / s)) for s in ("base", "assistant")] == [2, 2]
    n = len(chat_demo.COMPARE_QUESTIONS)  # the scoring and the comparison say they are under way (stderr, no bar)
    assert f"asking both models the same questions: 0 of {n}" in err and f"same questions: {n} of {n}" in err
    assert "scoring the assistant's held-out replies: 0 of" in err
    from test_demo_suggestions import assert_parses, suggested
    commands = suggested(out)
    assert len(commands) == 4 and all(assert_parses(c) is None for c in commands)
    for name in ("pretraining.txt", "train.jsonl", "heldout.jsonl", "base/best", "assistant/best"):
        assert (tmp_path / "chat" / name).exists()
    from tinygpt.training.run import Run
    from tinygpt.tokenizers import ChatTokenizer
    assert not isinstance(Run(tmp_path / "chat/base").tokenizer(), ChatTokenizer)
    assert isinstance(Run(tmp_path / "chat/assistant").tokenizer(), ChatTokenizer)
    code, out, _ = cli("eval", tmp_path / "chat/assistant", "--device=cpu")  # scores the held-out file
    assert code == 0 and "all: 20 conversations" in out
    code, _, err = cli("demo", "chat", "--out", tmp_path / "chat")  # never clobbers a run silently
    assert code == 2 and "--overwrite" in err


def test_demo_chat_refuses_the_calculators_settings(cli, tmp_path):
    code, _, err = cli("demo", "chat", "--out", tmp_path / "c", "--learning_rate=0.1", "--max_iters=100")
    assert code == 2 and "demo chat has its own recipe; drop --learning_rate (it takes" in err
    assert "--max_iters" not in err.split("(")[0]  # a budget is accepted
    code, _, err = cli("demo", "--out", tmp_path / "c", "--chat_loss=all")
    assert code == 2 and "--chat_loss applies to tinygpt demo chat" in err
