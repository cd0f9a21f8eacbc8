"""Chat: the template's tokens on every tokenizer, the loss mask, packing, scoring, fine-tuning through the one
loop (from our own run and from an imported GPT-2), and `tinygpt chat` from a pipe."""
from __future__ import annotations

import io
import json
import sys

import pytest
import torch

from conftest import DIALOGUE, TINY_FLAGS, train_tiny
from tinygpt import GPT, ModelConfig
from tinygpt.tasks.chat import ChatData
from tinygpt.data.conversations import (ChatError, Conversation, Message, fit_conversations, read_conversations, render,
                                        split_conversations)
from tinygpt.generation.chat import ChatSession, answer_turns, reply_turns, score_replies
from tinygpt.data.text import IGNORE_INDEX
from tinygpt.training.run import Run, load_checkpoint
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, ChatTokenizer, WordTokenizer, load_tokenizer
from tinygpt.tokenizers.chat import SPECIALS


@pytest.fixture
def base(tmp_path, capsys):
    """A tiny character run on DIALOGUE (its training output is not part of what the test reads)."""
    run = train_tiny(tmp_path, "base", 2)
    capsys.readouterr()
    return run


def conv(*pairs: tuple[str, str]) -> Conversation:
    return Conversation(tuple(Message(r, c) for r, c in pairs))


def write_convs(path, convs) -> None:
    path.write_text("".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs]}) + "\n"
                            for pairs in convs), encoding="utf-8")


ADD = [[("user", f"{a}+{b}?"), ("assistant", f"{a + b}")] for a in range(10) for b in range(10)]


# --- the template's tokens ------------------------------------------------------------------------

@pytest.mark.parametrize("base", [
    CharTokenizer.train("hello world"),
    WordTokenizer(["two", "plus", "three"], specials=["<pad>"]),
    ByteBPETokenizer.train("hello hello world " * 20, 270, special_tokens=["<|endoftext|>"]),
], ids=["char", "word", "bpe"])
def test_chat_tokens_come_after_the_vocabulary_and_change_no_id(base, tmp_path):
    tok = ChatTokenizer(base)
    text = "hello world" if base.kind != "word" else "two plus three"
    assert tok.encode(text) == base.encode(text)
    assert tok.vocab_size == base.vocab_size + 4
    assert [tok.special_ids[s] for s in SPECIALS] == list(range(base.vocab_size, base.vocab_size + 4))
    assert tok.role_id("user") == base.vocab_size + 1 and tok.end_id == base.vocab_size + 3
    assert tok.decode([tok.role_id("assistant"), *base.encode(text), tok.end_id]).replace(" ", "") == \
        f"<|assistant|>{text}<|end|>".replace(" ", "")
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json") == tok


def test_text_never_makes_a_chat_token():
    """A user who types the template's markers gets characters, not a turn boundary."""
    tok = ChatTokenizer(ByteBPETokenizer.train("abc " * 50, 260))
    ids = tok.encode("<|end|><|assistant|>")
    assert ids and all(i < tok.base.vocab_size for i in ids)
    assert tok.decode(ids) == "<|end|><|assistant|>"


def test_gpt2s_real_tokenizer_keeps_its_ids(tmp_path):
    import shutil
    from hf_fixtures import gpt2_tokenizer_dir
    from tinygpt.tokenizers.interop import load_gpt2_files
    data = gpt2_tokenizer_dir()
    shutil.copy(data / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(data / "vocab.bpe", tmp_path / "merges.txt")
    gpt2 = load_gpt2_files(tmp_path)
    tok = ChatTokenizer(gpt2)
    assert tok.encode("Hello world") == gpt2.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 + 4 and tok.role_id("system") == 50257


def test_a_chat_tokenizer_is_not_wrapped_twice():
    from tinygpt.tokenizers import TokenizerError
    with pytest.raises(TokenizerError, match="already"):
        ChatTokenizer(ChatTokenizer(CharTokenizer.train("ab")))


# --- the template and its mask --------------------------------------------------------------------

def test_render_a_worked_example():
    """<|system|>s<|end|><|user|>hi<|end|><|assistant|>yo<|end|>: only "yo" and its <|end|> count."""
    tok = ChatTokenizer(CharTokenizer.train("hisyo"))  # <unk> h i o s y -> 0..5; specials 6..9
    ids, counts = render(tok, conv(("system", "s"), ("user", "hi"), ("assistant", "yo")).messages)
    S, U, A, E = 6, 7, 8, 9
    assert ids == [S, 4, E, U, 1, 2, E, A, 5, 3, E]
    assert counts == [False, False, False, False, False, False, False, False, True, True, True]
    prompt, _ = render(tok, conv(("user", "hi")).messages, reply=True)
    assert prompt == [U, 1, 2, E, A]


def test_masked_positions_receive_zero_gradient():
    tok = ChatTokenizer(CharTokenizer.train("0123456789+?"))
    convs = [conv(*pairs) for pairs in ADD]
    data = ChatData(convs[:90], convs[90:], tok, block_size=32)
    x, y = data.rows("train")
    x, y = x[:4], y[:4]
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    logits, _ = model(x)
    logits.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(loss, model(x, y)[1])  # the model's own loss is this masked one
    loss.backward()
    per_position = logits.grad.abs().sum(-1)  # (B, T)
    masked = y == IGNORE_INDEX
    assert masked.any() and (~masked).any()
    assert torch.all(per_position[masked] == 0) and torch.all(per_position[~masked] > 0)
    # what counts is exactly the assistant's digits and their <|end|>, each predicted from the token before it
    row = x[0].tolist() + [None]
    for t in range(32):
        if y[0, t] != IGNORE_INDEX:
            assert row[t + 1] == int(y[0, t])
            assert int(y[0, t]) == tok.end_id or tok.id_to_piece(int(y[0, t])).isdigit()


def test_packing_keeps_every_conversation_whole_once():
    tok = ChatTokenizer(CharTokenizer.train("0123456789+?"))
    convs = [conv(*pairs) for pairs in ADD]
    data = ChatData(convs, convs[:3], tok, block_size=40, seed=3)
    x, y = data.rows("train")
    rows = [tok.decode(r.tolist()) for r in x]
    text = "".join(rows)
    for pairs in ADD:  # each conversation appears exactly once, never cut across rows
        one = f"<|user|>{pairs[0][1]}<|end|><|assistant|>{pairs[1][1]}<|end|>"
        assert sum(r.count(one) for r in rows) == 1, one
    assert text.count("<|user|>") == 100
    everything = ChatData(convs, convs[:3], tok, block_size=40, seed=3, loss_on="all")
    _, y_all = everything.rows("train")
    assert torch.equal(x, everything.rows("train")[0])  # the same packing, only the mask differs
    assert (y_all != IGNORE_INDEX).sum() > 2 * (y != IGNORE_INDEX).sum()


def test_a_conversation_longer_than_the_window_is_refused():
    tok = ChatTokenizer(CharTokenizer.train("ab"))
    with pytest.raises(ChatError, match=r"line 7 is 24 tokens long, more than the model's window \(block_size 16"):
        ChatData([Conversation((Message("user", "a" * 10), Message("assistant", "b" * 10)), line=7)],
                 [conv(("user", "a"), ("assistant", "b"))], tok, block_size=16)


def test_fitting_conversations_to_the_window_cuts_at_a_turn_or_leaves_out():
    """A window of 16 + 1 tokens: <|user|>aa<|end|> is 4 tokens, <|assistant|>bbb<|end|> 5, so one exchange takes 9
    and two take 18, one too many: "cut" keeps the first exchange whole, "skip" leaves the conversation out,
    "refuse" keeps it for the caller to refuse; a system message stays with what is kept."""
    tok = ChatTokenizer(CharTokenizer.train("ab s"))
    fits = conv(("user", "a"), ("assistant", "b"))
    two = Conversation(tuple(conv(("user", "aa"), ("assistant", "bbb"), ("user", "aa"), ("assistant", "bbb"))
                             .messages), line=5)
    system = conv(("system", "s s"), ("user", "aa"), ("assistant", "bbb"), ("user", "a"), ("assistant", "b"))
    none_fits = Conversation((Message("user", "a" * 20), Message("assistant", "b")), line=9)
    convs = [fits, two, system, none_fits]
    assert [len(render(tok, c.messages)[0]) for c in convs] == [6, 18, 20, 25]
    kept, fit = fit_conversations(tok, convs, 16, "cut")
    assert kept == [fits, Conversation(two.messages[:2], line=5), Conversation(system.messages[:3])]
    assert (fit.total, fit.too_long, fit.cut, fit.left_out, fit.longest, fit.longest_line) == (4, 3, 2, 1, 25, 9)
    assert all(len(render(tok, c.messages)[0]) <= 17 for c in kept)
    kept, fit = fit_conversations(tok, convs, 16, "skip")
    assert kept == [fits] and (fit.cut, fit.left_out) == (0, 3)
    kept, fit = fit_conversations(tok, convs, 16, "refuse")
    assert kept == convs and (fit.too_long, fit.cut, fit.left_out) == (3, 0, 0)
    assert fit_conversations(tok, convs, 24, "cut")[1].too_long == 0  # 25 tokens: inputs 24, targets shifted by 1
    assert fit_conversations(tok, convs, 23, "cut")[1].too_long == 1
    with pytest.raises(ChatError, match="long_conversations must be one of cut, skip, refuse"):
        fit_conversations(tok, convs, 16, "trim")


def test_split_conversations_follows_the_text_rule():
    convs = [conv(("user", str(i)), ("assistant", "x")) for i in range(10)]
    train, val = split_conversations(convs, 0.2)
    assert [c.messages[0].content for c in val] == ["8", "9"] and len(train) == 8
    assert [len(p) for p in split_conversations(convs[:2], 0.01)] == [1, 1]


# --- reading conversations ------------------------------------------------------------------------

@pytest.mark.parametrize("line, match", [
    ('{"messages": [{"role": "user", "content": "hi"}', "line 2: not valid JSON"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "line 2: message 1 has unknown role 'robot'"),
    ('{"messages": [{"role": "user", "content": 3}]}', 'line 2: message 1 must be an object with a string'),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: no assistant message"),
    ('{"messages": []}', 'line 2: "messages" is empty'),
    ('[1, 2]', 'line 2: expected an object with a "messages" list'),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}',
     "line 2: a system message may only come first"),
])
def test_bad_lines_are_named(tmp_path, line, match):
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    path = tmp_path / "c.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(ChatError, match=match):
        read_conversations(path)
    convs, skipped = read_conversations(path, skip_bad_lines=True)
    assert len(convs) == 2 and [c.line for c in convs] == [1, 3] and len(skipped) == 1 and match in skipped[0]


# --- scoring and conversing -----------------------------------------------------------------------

def _tiny_chat_model(tok: ChatTokenizer, block_size: int = 24, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)).eval()


def test_batched_answers_equal_one_at_a_time():
    tok = ChatTokenizer(CharTokenizer.train("0123456789+?"))
    convs = [conv(*ADD[i], ("user", "1+1?"), ("assistant", "2")) for i in range(0, 100, 17)]
    for seed in range(2):
        model = _tiny_chat_model(tok, seed=seed)
        turns = reply_turns(convs)
        assert len(turns) == 2 * len(convs)
        assert answer_turns(model, tok, turns) == answer_turns(model, tok, turns, slow=True)
        assert score_replies(model, tok, convs) == score_replies(model, tok, convs, slow=True)


def test_score_replies_counts_first_turns_and_follow_ups():
    """A 'model' that always answers "2": right on 1+1 wherever it is asked."""
    tok = ChatTokenizer(CharTokenizer.train("0123456789+?"))
    two = tok.encode("2")[0]

    class Says2(GPT):
        def forward(self, idx, targets=None, **kw):
            logits = torch.full((*idx.shape, tok.vocab_size), -10.0)
            last = idx[:, -1:]
            logits[..., two] = 0.0
            logits[..., tok.end_id] = torch.where(last == two, 10.0, -20.0).float()
            return logits, None
    model = Says2(ModelConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=1, n_head=1, n_embd=8))
    convs = [conv(("user", "1+1?"), ("assistant", "2"), ("user", "0+2?"), ("assistant", "2"),
                  ("user", "1+2?"), ("assistant", "3"))]
    assert score_replies(model, tok, convs) == {"first": {"correct": 1, "total": 1, "accuracy": 1.0},
                                                "followup": {"correct": 1, "total": 2, "accuracy": 0.5}}


def test_a_session_drops_the_oldest_exchanges_to_fit():
    tok = ChatTokenizer(CharTokenizer.train("abcdefghij"))
    model = _tiny_chat_model(tok, block_size=24)
    session = ChatSession(model, tok, system="ab", max_new_tokens=4)
    for text in ("abc", "def", "ghi"):
        "".join(session.reply(text))
    ids = session.prompt("j")
    assert len(ids) + 4 <= 24  # room for the reply
    assert session.history[0].role == "user" and session.dropped >= 2
    assert ids[:4] == [tok.role_id("system"), *tok.encode("ab"), tok.end_id]  # the system message stays
    with pytest.raises(ChatError, match="too long"):
        session.prompt("a" * 40)
    session.reset()
    assert session.history == []


def test_a_base_model_is_not_a_chat_model():
    tok = CharTokenizer.train("ab")
    with pytest.raises(ChatError, match="no chat template"):
        ChatSession(_tiny_chat_model(ChatTokenizer(tok)), tok)


# --- through the CLI --------------------------------------------------------------------------------

def _convs_file(tmp_path):
    path = tmp_path / "convs.jsonl"
    write_convs(path, [[("user", "What say you?"), ("assistant", "Nothing.")]] * 30
                + [[("user", "my lord?"), ("assistant", "good"), ("user", "ROMEO:"), ("assistant", "night.")]] * 10)
    return path


@pytest.mark.slow
def test_fine_tuning_our_run_into_a_chat_model(cli, tmp_path):
    base = train_tiny(tmp_path, "base", 4)
    data = _convs_file(tmp_path)
    code, _, err = cli("train", "--init_from", base, "--data", data, "--out", tmp_path / "chat", "--max_iters=3",
                       *[f for f in TINY_FLAGS if not f.startswith("--block_size")])
    assert code == 0, err
    assert "added the chat template's 4 tokens" in err and "held-out replies exactly right" in err
    before, base_tok, _ = load_checkpoint(base)
    run = Run(tmp_path / "chat")
    tok = run.tokenizer()
    assert isinstance(tok, ChatTokenizer) and tok.base == base_tok
    assert run.config()["chat"] == {"loss_on": "assistant", "long_conversations": "cut"}
    assert "val_exact_first" in run.metrics()[0] and "val_exact_followup" in run.metrics()[0]
    # step 0 evaluated the base weights, with the new rows at the mean of the old ones
    from tinygpt.data.conversations import is_chat_file
    assert is_chat_file(data)
    model, _, _ = load_checkpoint(tmp_path / "chat", "latest")
    assert model.config.vocab_size == base_tok.vocab_size + 4
    # the resumed run stays a chat run, and refuses text data
    code, _, err = cli("train", "--out", tmp_path / "chat", "--resume", "--max_iters=4", "--quiet")
    assert code == 0, err
    code, _, err = cli("train", "--out", tmp_path / "chat", "--resume", "--data", tmp_path / "input.txt",
                       "--max_iters=5", "--quiet")
    assert code == 2 and "is a chat run; resume it on conversations" in err


def test_initial_weights_gain_mean_rows(tmp_path, base):
    import importlib
    train_mod = importlib.import_module("tinygpt.training.loop")
    source, _, _ = load_checkpoint(base)
    cfg = source.config.with_vocab(source.config.vocab_size + 4)
    model = GPT(cfg)
    train_mod._load_initial_weights(model, base / "best")
    V = source.config.vocab_size
    wte = model.transformer.wte.weight
    assert torch.equal(wte[:V], source.transformer.wte.weight)
    assert torch.allclose(wte[V:], source.transformer.wte.weight.mean(0).expand(4, -1))


def test_chat_from_a_pipe_prints_one_reply_per_line(cli, tmp_path, monkeypatch, base):
    code, _, err = cli("train", "--init_from", base, "--data", _convs_file(tmp_path), "--out", tmp_path / "chat",
                       "--max_iters=2", "--device=cpu", "--quiet", "--eval_iters=1", "--batch_size=2")
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.StringIO("What say you?\n\n/reset\nmy lord?\n"))
    code, out, err = cli("chat", tmp_path / "chat", "--max_new_tokens=5", "--device=cpu")
    assert code == 0, err
    replies = out.split("\n")
    assert len(replies) == 3 and replies[2] == ""  # two turns (blank lines and /reset are not turns)
    model, tok, _ = load_checkpoint(tmp_path / "chat")
    expected = "".join(ChatSession(model, tok, max_new_tokens=5).reply("What say you?"))
    assert replies[0] == " ".join(expected.splitlines())
    assert "starts over" in err


def test_chat_refuses_a_base_run_and_sample_points_to_chat(cli, tmp_path, monkeypatch, base):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    code, out, err = cli("chat", base, "--device=cpu")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "is not a chat model" in err and "--init_from" in err
    code, _, err = cli("train", "--init_from", base, "--data", _convs_file(tmp_path), "--out", tmp_path / "chat",
                       "--max_iters=1", "--device=cpu", "--quiet", "--eval_iters=1", "--batch_size=2")
    assert code == 0, err
    code, out, err = cli("sample", tmp_path / "chat", "--max_new_tokens=3", "--device=cpu")
    assert code == 0 and f"tinygpt chat {tmp_path / 'chat'}" in err


@pytest.mark.parametrize("content, match", [
    ('{"messages": [{"role": "wizard", "content": "x"}]}\n', "line 1: message 1 has unknown role 'wizard'"),
    ("not json\n", "line 1: not valid JSON"),
])
def test_train_on_bad_conversations_is_one_line(cli, tmp_path, content, match, base):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content, encoding="utf-8")
    code, out, err = cli("train", "--init_from", base, "--data", bad, "--out", tmp_path / "chat", "--device=cpu")
    assert code == 2 and err.count("\n") == 1 and match in err and "--skip_bad_lines" in err
    assert not (tmp_path / "chat").exists()


def test_a_conversation_too_long_for_the_window_is_one_line(cli, tmp_path, base):
    """Conversations none of which has a first exchange that fits the base's 32 positions: one line that says
    so and names what works (a base with a longer window), never a --block_size this base cannot have."""
    long = tmp_path / "long.jsonl"
    write_convs(long, [[("user", "What say you?"), ("assistant", "Nothing, good night. " * 5)]] * 3)
    code, _, err = cli("train", "--init_from", base, "--data", long, "--out", tmp_path / "chat", "--device=cpu")
    assert code == 2 and err.count("\n") == 1, err
    assert "3 of 3 conversations do not fit the model's window (--block_size 32: 33 tokens at most" in err
    assert "not one training conversation has a first exchange that fits" in err
    assert "reads at most 32 tokens, so to train them whole start from a base model trained with --block_size 121" \
           in err
    assert not (tmp_path / "chat").exists()


def test_chat_flags_need_chat_data(cli, tmp_path):
    (tmp_path / "t.txt").write_text(DIALOGUE, encoding="utf-8")
    code, _, err = cli("train", "--data", tmp_path / "t.txt", "--out", tmp_path / "r", "--chat_loss=all")
    assert code == 2 and "--chat_loss applies to chat data" in err


def test_fine_tuning_an_imported_gpt2_into_a_chat_model(cli, tmp_path):
    from hf_fixtures import hf_folder, small_bpe, tiny_hf_model
    from tinygpt.interop.gpt2 import import_gpt2
    tok = small_bpe()
    import_gpt2(hf_folder(tmp_path / "hf", tiny_hf_model(tok.vocab_size, seed=3), tok), tmp_path / "gpt2")
    data = tmp_path / "short.jsonl"
    write_convs(data, [[("user", "fox?"), ("assistant", "dog.")], [("user", "Tabs"), ("assistant", "spaces")]] * 10)
    code, _, err = cli("train", "--init_from", tmp_path / "gpt2", "--data", data, "--out",
                       tmp_path / "chat", "--max_iters=2", "--device=cpu", "--quiet", "--eval_iters=1",
                       "--batch_size=2", "--block_size=16", "--dtype=float32")
    assert code == 0, err
    chat_tok = Run(tmp_path / "chat").tokenizer()
    assert chat_tok.base == tok and chat_tok.vocab_size == tok.vocab_size + 4
    assert load_checkpoint(tmp_path / "chat")[0].lm_head.weight.shape[0] == tok.vocab_size + 4


def test_eval_of_a_chat_run_scores_its_held_out_conversations(cli, tmp_path, base):
    data = _convs_file(tmp_path)
    code, _, err = cli("train", "--init_from", base, "--data", data, "--out", tmp_path / "chat", "--max_iters=2",
                       "--device=cpu", "--quiet", "--eval_iters=1", "--batch_size=2")
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "chat", "--json", "--device=cpu")
    assert code == 0, err
    res = json.loads(out)
    model, tok, _ = load_checkpoint(tmp_path / "chat")
    convs, _ = read_conversations(data)
    val = split_conversations(convs, 0.1)[1]
    assert res["split"] == "val" and res["conversations"] == len(val) == 4
    assert {k: res[k] for k in ("first", "followup")} == score_replies(model, tok, val)
    from tinygpt.data.conversations import pack
    x, y = pack(tok, val, model.config.block_size)
    with torch.no_grad():
        logits, _ = model(x)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX,
                                           reduction="sum")
    assert res["tokens"] == int((y != IGNORE_INDEX).sum()) and res["loss"] == pytest.approx(ce.item() / res["tokens"],
                                                                                            rel=1e-5)
    code, out, _ = cli("eval", tmp_path / "chat", "--device=cpu", "--split=all")
    assert code == 0 and "40 conversations" in out and "follow-ups" in out


@pytest.mark.slow
def test_chat_in_a_terminal_streams_replies_and_takes_commands(cli, tmp_path, base):
    """Through a pseudo-terminal, as a person would: a prompt, a streamed reply, /reset, then Ctrl-D."""
    import os
    import pty
    import select
    import subprocess
    code, _, err = cli("train", "--init_from", base, "--data", _convs_file(tmp_path), "--out", tmp_path / "chat",
                       "--max_iters=2", "--device=cpu", "--quiet", "--eval_iters=1", "--batch_size=2")
    assert code == 0, err
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "chat", str(tmp_path / "chat"), "--device=cpu",
                             "--max_new_tokens=4"], stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60, times: int = 1) -> None:
        nonlocal seen
        import time
        end = time.monotonic() + timeout
        while seen.count(marker) < times and time.monotonic() < end:
            if select.select([main], [], [], 0.5)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert seen.count(marker) >= times, seen.decode(errors="replace")[-500:]

    try:
        read_until(b"you> ")
        os.write(main, b"What say you?\n")
        read_until(b"assistant> ")
        read_until(b"you> ", times=2)
        os.write(main, b"\x1b[A\n")  # Up: the last turn again, edited in place (not echoed as ^[[A)
        read_until(b"assistant> ", times=2)
        read_until(b"you> ", times=3)
        assert b"^[[A" not in seen and seen.count(b"What say you?") >= 2
        os.write(main, b"/reset\n")
        read_until(b"starts over")
        read_until(b"you> ", times=4)  # the terminal is the line editor's from its prompt on
        os.write(main, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main)
    assert b"chatting with" in seen and b"/reset starts the conversation over" in seen


def test_a_chat_model_can_start_from_nothing(cli, tmp_path):
    """Conversations without --init_from: a character vocabulary from the training conversations' words, plus the
    chat tokens; --chat reads a file whatever its name."""
    data = tmp_path / "convs.txt"
    write_convs(data, [[("user", "hi?"), ("assistant", "yo.")]] * 20)
    code, _, err = cli("train", "--data", data, "--chat", "--out", tmp_path / "c", "--max_iters=2", *TINY_FLAGS)
    assert code == 0, err
    tok = Run(tmp_path / "c").tokenizer()
    assert isinstance(tok, ChatTokenizer) and tok.base == CharTokenizer.train("hi?yo.\n")
