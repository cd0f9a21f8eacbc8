"""The assistant demo: from nothing to a model that chats about arithmetic, in two trainings.

1. Pretraining on plain text about arithmetic in words ("seven times eight is fifty six.", counting, the
   number after or before another): a base model that only continues text.
2. Supervised fine-tuning (SFT) of that model on conversations with varied phrasing ("what is A plus B?",
   "what's A minus B?", "A times B?", "how much is A plus B"), follow-ups that use the previous answer
   ("and plus C?", "what about minus C?"), and polite refusals of questions outside arithmetic. The loss
   counts only the assistant's words (chat.py's mask).

Some plus and minus problems are held out of both trainings (`heldout`, a fixed tenth of all operand pairs),
and some refusal topics too, so the assistant's accuracy on them measures what it generalised; the times
table (169 facts) is learned by heart, as the calculator demo does. Library only: nothing here prints.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tinygpt.config import MODEL_KEYS, ConfigError, SettingText, build_configs
from tinygpt.data.conversations import Conversation, Message
from tinygpt.data.text import TextData
from tinygpt.files import write_text
from tinygpt.generation.chat import ChatSession, answer_turns, reply_turns
from tinygpt.generation.generate import generate_text
from tinygpt.recipes.budget import scaled, split_steps
from tinygpt.tasks.calculator import OPS, number_to_words
from tinygpt.tasks.chat import ChatData
from tinygpt.tokenizers import ByteBPETokenizer, ChatTokenizer
from tinygpt.training.checkpoint import load_model
from tinygpt.training.loop import Hooks, train
from tinygpt.training.run import Run, read_metrics

# --- the numbers -----------------------------------------------------------------------------------

RANGES = {"plus": (0, 99), "minus": (0, 99), "times": (0, 12)}  # first-turn operands
FOLLOW_MAX = 99  # the number a follow-up adds or subtracts; times follow-ups stay in the times table
HELDOUT_OPS = ("plus", "minus")


def heldout(op: str, a: int, b: int) -> bool:
    """Is `a op b` one of the problems no training text or conversation contains? A fixed tenth of the plus and
    minus pairs, chosen by a hash, so every machine and every seed holds out the same ones."""
    if op not in HELDOUT_OPS:
        return False
    digest = hashlib.sha256(f"{op} {a} {b}".encode()).digest()
    return digest[0] % 10 == 0


def problems(op: str, trained: bool) -> list[tuple[int, int]]:
    """Every first-turn problem of an operation that is (trained=True) or is not in training."""
    lo, hi = RANGES[op]
    return [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)
            if OPS[op](a, b) >= 0 and heldout(op, a, b) != trained]


def words(n: int) -> str:
    return number_to_words(n)


def fact(op: str, a: int, b: int) -> str:
    """The sentence both trainings use: fact("times", 7, 8) == "seven times eight is fifty six." """
    return f"{words(a)} {op} {words(b)} is {words(OPS[op](a, b))}."


# --- 1. pretraining text ---------------------------------------------------------------------------

def pretraining_text(seed: int = 0, counting: int = 100, neighbours: int = 150) -> str:
    """Plain text about numbers, one sentence or count per line, in a seeded order: every trained fact once,
    `counting` runs of counting, and "the number after/before" sentences for the first `neighbours` numbers.
    No questions, no dialogue."""
    rng = random.Random(seed)
    lines = [fact(op, a, b) for op in OPS for a, b in problems(op, trained=True)]
    for _ in range(counting):
        start = rng.randint(0, 290)
        lines.append(", ".join(words(n) for n in range(start, start + rng.randint(3, 8))) + ".")
    for n in range(0, neighbours):
        lines.append(f"the number after {words(n)} is {words(n + 1)}.")
        if n > 0:
            lines.append(f"the number before {words(n)} is {words(n - 1)}.")
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


# --- 2. conversations ------------------------------------------------------------------------------

FIRST_FORMS = {  # how a first question is put
    "what is": "what is {a} {op} {b}?",
    "what's": "what's {a} {op} {b}?",
    "bare": "{a} {op} {b}?",
    "how much": "how much is {a} {op} {b}",
}
FOLLOW_FORMS = {  # a follow-up, on the previous answer
    "and": "and {op} {c}?",
    "what about": "what about {op} {c}?",
}
REFUSAL = "sorry, i can only help with arithmetic."
OFF_TOPIC = ["what is the capital of {t}?", "tell me about {t}.", "can you write a poem about {t}?",
             "who invented {t}?", "what do you think of {t}?", "how do i get to {t}?"]
TOPICS_TRAIN = ["france", "the moon", "cats", "music", "the ocean", "football", "pizza", "rain", "trains",
                "history", "the sun", "books", "winter", "coffee", "dogs", "spain", "birds", "paris"]
TOPICS_HELDOUT = ["japan", "chess", "volcanoes", "tea"]
SYSTEM = "you are a calculator that answers in words."


@dataclass
class Turn:
    """One scored question: its form ("what is", "and", "refusal", ...) and kind ("first" or "followup")."""
    form: str
    kind: str
    op: str | None = None


@dataclass
class DemoConversation:
    conversation: Conversation
    turns: list[Turn] = field(default_factory=list)  # one per assistant message, in order


def _ask(rng: random.Random, text: str) -> str:
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def conversation(rng: random.Random, held: bool) -> DemoConversation:
    """A random conversation: a first arithmetic question (or an off-topic one), then up to two follow-ups on the
    answer. held=True draws only held-out problems and topics (plus and minus; times is learned by heart)."""
    msgs: list[Message] = []
    turns: list[Turn] = []
    if rng.random() < 0.2:
        msgs.append(Message("system", SYSTEM))
    if rng.random() < 0.12:
        topic = rng.choice(TOPICS_HELDOUT if held else TOPICS_TRAIN)
        msgs += [Message("user", _ask(rng, rng.choice(OFF_TOPIC).format(t=topic))), Message("assistant", REFUSAL)]
        turns.append(Turn("refusal", "first"))
        if rng.random() < 0.5:
            return DemoConversation(Conversation(tuple(msgs)), turns)
    op = rng.choice(list(RANGES)) if not held else rng.choice(HELDOUT_OPS + ("times",) * (rng.random() < 0.2))
    a, b = rng.choice(PROBLEMS[op][held and op in HELDOUT_OPS])
    form = rng.choice(list(FIRST_FORMS))
    msgs += [Message("user", _ask(rng, FIRST_FORMS[form].format(a=words(a), op=op, b=words(b)))),
             Message("assistant", fact(op, a, b))]
    turns.append(Turn(form, "first", op) if not turns else Turn(f"{form} (after a refusal)", "followup", op))
    value = OPS[op](a, b)
    for _ in range(rng.choice((0, 1, 1, 2))):
        nxt = _follow_up(rng, value, held)
        if nxt is None:
            break
        fop, c = nxt
        fform = rng.choice(list(FOLLOW_FORMS))
        msgs += [Message("user", _ask(rng, FOLLOW_FORMS[fform].format(op=fop, c=words(c)))),
                 Message("assistant", fact(fop, value, c))]
        turns.append(Turn(fform, "followup", fop))
        value = OPS[fop](value, c)
    return DemoConversation(Conversation(tuple(msgs)), turns)


def _follow_up(rng: random.Random, value: int, held: bool) -> tuple[str, int] | None:
    """An operation and number to apply to `value`, held out or trained as asked, keeping the result in 0-999."""
    for _ in range(50):
        op = rng.choice(("plus", "minus", "times") if value <= 12 else ("plus", "minus"))
        c = rng.randint(0, 12 if op == "times" else min(FOLLOW_MAX, value if op == "minus" else FOLLOW_MAX))
        if 0 <= OPS[op](value, c) <= 999 and heldout(op, value, c) == (held and op in HELDOUT_OPS):
            return op, c
    return None


PROBLEMS = {op: {trained_is_false: problems(op, trained=not trained_is_false) for trained_is_false in (False, True)}
            for op in RANGES}  # PROBLEMS[op][held] -> operand pairs


def conversations(n: int, held: bool, seed: int) -> list[DemoConversation]:
    rng = random.Random(seed)
    return [conversation(rng, held) for _ in range(n)]


def write_jsonl(path: Path, convs: list[DemoConversation]) -> None:
    """The conversations in the JSONL chat format `tinygpt train` reads."""
    lines = [json.dumps({"messages": [{"role": m.role, "content": m.content} for m in c.conversation.messages]})
             for c in convs]
    write_text(path, "\n".join(lines) + "\n")


# --- the recipe ------------------------------------------------------------------------------------

VOCAB_SIZE = 512  # BPE merges enough for every word of the demo to be one token (numbers: one per word)
# Tuned so that a laptop CPU trains it in minutes: 800 pretraining and 1200 fine-tuning steps of 32 x 128 tokens;
# every seed tried answered nearly all held-out first turns and most held-out follow-ups (longer training reaches
# all of them). Rotary positions matter most: with learned position embeddings the model must learn to add at
# every offset a fact can sit at in a packed block, and learns far fewer facts in the same steps. init_std 0.1 as
# the calculator demo (small initial weights sit on a plateau before carrying is learned).
BASE_DEFAULTS: dict[str, Any] = dict(
    model="gpt", n_layer=4, n_head=4, n_embd=64, block_size=128, dropout=0.0, bias=True, init_std=0.1,
    position="rotary", learning_rate=2e-3, min_lr=2e-4, warmup_iters=100, max_iters=800, batch_size=32,
    weight_decay=0.1, grad_clip=1.0, eval_interval=500, eval_iters=10, log_interval=10, device="auto",
    dtype="float32",
)
SFT_DEFAULTS: dict[str, Any] = dict(
    learning_rate=2e-3, min_lr=2e-4, warmup_iters=50, max_iters=1200, batch_size=32, weight_decay=0.1,
    grad_clip=1.0, eval_interval=400, eval_iters=10, log_interval=10, device="auto", dtype="float32",
)
N_TRAIN, N_HELDOUT = 60_000, 600


@dataclass
class DemoData:
    text: str
    train: list[DemoConversation]
    heldout: list[DemoConversation]
    tokenizer: ByteBPETokenizer


def make_data(seed: int = 0, n_train: int = N_TRAIN, n_heldout: int = N_HELDOUT) -> DemoData:
    """The pretraining text, the training and held-out conversations, and the BPE tokenizer learned from the
    text and the training conversations' words."""
    text = pretraining_text(seed)
    train = conversations(n_train, held=False, seed=seed + 1)
    held = conversations(n_heldout, held=True, seed=seed + 2)
    corpus = text + "\n".join(m.content for c in train[:5000] for m in c.conversation.messages)
    tok = ByteBPETokenizer.train(corpus, VOCAB_SIZE)
    return DemoData(text, train, held, tok)


def sft_source(data: DemoData, block_size: int, loss_on: str = "assistant", seed: int = 0) -> ChatData:
    tok = ChatTokenizer(data.tokenizer)
    return ChatData([c.conversation for c in data.train], [c.conversation for c in data.heldout], tok, block_size,
                    loss_on, seed=seed, score_turns=300)


def stage_steps(max_iters: int | None = None) -> tuple[int, int]:
    """(pretraining steps, fine-tuning steps) of a demo of max_iters steps in all, in the recipe's proportion
    (None: the recipe's own): stage_steps(100) == (40, 60)."""
    if max_iters is None:
        return BASE_DEFAULTS["max_iters"], SFT_DEFAULTS["max_iters"]
    if max_iters < 2:
        raise ConfigError(SettingText(f"`max_iters` {max_iters}: the chat demo needs at least 2 steps (one for each "
                                      f"of its two trainings)", "max_iters"))
    base, sft = split_steps(max_iters, (BASE_DEFAULTS["max_iters"], SFT_DEFAULTS["max_iters"]))
    return base, sft


def base_configs(overrides: dict[str, Any] | None = None):
    overrides = overrides or {}
    recipe = scaled(BASE_DEFAULTS, overrides.get("max_iters"))  # a shorter stage keeps the recipe's shape
    return build_configs({**recipe, **overrides}, vocab_size=VOCAB_SIZE)


def sft_configs(base_cfg, overrides: dict[str, Any] | None = None):
    overrides = overrides or {}
    recipe = scaled(SFT_DEFAULTS, overrides.get("max_iters"))
    train_keys = {k: v for k, v in {**recipe, **overrides}.items() if k not in MODEL_KEYS}
    _, train_cfg = build_configs(train_keys)
    return base_cfg.with_vocab(VOCAB_SIZE + 4), train_cfg


def heldout_report(model, tok: ChatTokenizer, convs: list[DemoConversation]) -> dict[str, Any]:
    """Exact match of greedy replies on every held-out assistant turn, by kind (first, followup) and by form."""
    pairs = reply_turns([c.conversation for c in convs])
    labels = [t for c in convs for t in c.turns]
    got = answer_turns(model, tok, pairs)
    by: dict[str, dict[str, dict[str, int]]] = {"kind": {}, "form": {}}
    for (conv, k), label, g in zip(pairs, labels, got):
        ok = g is not None and g == conv.messages[k].content
        for axis, key in (("kind", label.kind), ("form", f"{label.kind}: {label.form}")):
            cell = by[axis].setdefault(key, {"correct": 0, "total": 0})
            cell["correct"] += ok
            cell["total"] += 1
    for axis in by.values():
        for cell in axis.values():
            cell["accuracy"] = cell["correct"] / cell["total"]
    return by


def train_demo(out: str | Path, seed: int = 0, base_overrides: dict[str, Any] | None = None,
               sft_overrides: dict[str, Any] | None = None, loss_on: str = "assistant",
               hooks: Callable[[str], Any] | None = None, overwrite: bool = False, max_iters: int | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Pretrain a base model into OUT/base, fine-tune it into OUT/assistant; write the data beside them.
    hooks(stage) -> a train.Hooks for that stage ("base" or "assistant"). max_iters: the steps of both stages
    together, shared as the recipe shares them (stage_steps), each stage's warm-up and evaluations scaled with
    it (None: the recipe's 800 + 1200). progress(stage, done, total) follows the scoring after training.
    Returns the held-out report."""
    out = Path(out)
    data = make_data(seed, N_TRAIN, N_HELDOUT)
    budget = dict(zip(("base", "sft"), stage_steps(max_iters))) if max_iters is not None else {}
    base_cfg, base_train = base_configs({"seed": seed, **({"max_iters": budget["base"]} if budget else {}),
                                         **(base_overrides or {})})
    text_source = TextData.from_text(data.text, data.tokenizer, base_cfg.block_size, base_train.val_fraction)
    make_hooks = hooks or (lambda stage: Hooks())
    base = train(base_cfg, base_train, text_source, data.tokenizer, out / "base", overwrite=overwrite,
                 meta={"demo": "chat", "stage": "base"}, hooks=make_hooks("base"))
    if base.stopped_by:
        return {"base": base, "stopped_by": base.stopped_by}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pretraining.txt", data.text)
    write_jsonl(out / "train.jsonl", data.train)
    write_jsonl(out / "heldout.jsonl", data.heldout)
    model_cfg, sft_train = sft_configs(base_cfg, {"seed": seed, **({"max_iters": budget["sft"]} if budget else {}),
                                                  **(sft_overrides or {})})
    source = sft_source(data, model_cfg.block_size, loss_on, seed)
    result = train(model_cfg, sft_train, source, source.tokenizer, out / "assistant", overwrite=overwrite,
                   meta={"demo": "chat", "stage": "assistant", "data": str((out / "train.jsonl").resolve()),
                         "chat": {"loss_on": loss_on, "heldout": str((out / "heldout.jsonl").resolve())}},
                   hooks=make_hooks("assistant"), init_from=base.out_dir / "best")
    if result.stopped_by:
        return {"base": base, "assistant": result, "stopped_by": result.stopped_by}
    model, tok, _ = load_model(result.out_dir / "best")
    seconds = {stage: max((m.get("elapsed_s", 0.0) for m in read_metrics(out / stage)), default=0.0)
               for stage in ("base", "assistant")}
    say = progress or _silent
    n_turns = sum(len(c.turns) for c in data.heldout)
    say(SCORING, 0, n_turns)
    report = heldout_report(model, tok, data.heldout)
    say(SCORING, n_turns, n_turns)
    return {"base": base, "assistant": result, "heldout": report, "train_seconds": seconds}


SCORING = "scoring the assistant's held-out replies"
COMPARING = "asking both models the same questions"
Progress = Callable[[str, int, int], None]  # progress(stage, done, total)


def _silent(stage: str, done: int, total: int) -> None:
    pass


def _first_heldout(op: str) -> str:
    a, b = PROBLEMS[op][True][len(PROBLEMS[op][True]) // 3]
    return f"{words(a)} {op} {words(b)}"


# What the demo asks both models: two held-out problems (never seen in any training), a fact learned by heart,
# a follow-up conversation and an off-topic question on a held-out topic.
COMPARE_QUESTIONS: list[list[str]] = [
    [f"what is {_first_heldout('plus')}?"],
    [f"how much is {_first_heldout('minus')}"],
    ["six times nine?"],
    [f"what's {_first_heldout('plus')}?", "and minus seven?"],
    ["what is the capital of japan?"],
]


def compare(out: str | Path, questions: list[list[str]], max_new_tokens: int = 24,
            progress: Progress | None = None) -> list[tuple[str, str, str]]:
    """(question, the base model's continuation, the assistant's reply) for each list of user turns. The base
    model reads the turns as plain text, one per line, and writes what follows (one line at most); the
    assistant answers them as a conversation, and its last reply is shown. progress(stage, done, total) hears
    of each question answered."""
    say = progress or _silent
    say(COMPARING, 0, len(questions))
    base, base_tok, _ = Run(Path(out) / "base").load("best")
    assistant, tok, _ = Run(Path(out) / "assistant").load("best")
    rows = []
    for i, turns in enumerate(questions):
        prompt = "\n".join(turns) + "\n"
        text = "".join(generate_text(base, base_tok, prompt, max_new_tokens, temperature=0))
        session = ChatSession(assistant, tok, max_new_tokens=max_new_tokens)
        replies = ["".join(session.reply(t)) for t in turns]
        rows.append((" / ".join(turns), text.split("\n")[0], replies[-1]))
        say(COMPARING, i + 1, len(questions))
    return rows


__all__ = ["COMPARE_QUESTIONS", "compare", "stage_steps", "heldout", "pretraining_text", "conversation", "conversations", "make_data", "train_demo",
           "heldout_report", "fact", "REFUSAL"]
