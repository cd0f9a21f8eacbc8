"""What the server's page shows beside the text: how a prompt is tokenized, and one generated token looked at.

Both are compositions of the inspect library (interpret.py computes typed results, report.py turns them into
JSON); nothing here computes a view of its own.

`step(served, prompt, tokens, token)` looks at the moment the model chose `token` after prompt + tokens. It
reads exactly the window the Decoder read at that step (decoder.py's policy: the prompt's last block_size
tokens, then the window slides when full), and returns:

    candidates   the top-k before and after the sampling settings (report.steps_json of a one-step trace)
    attention    every layer and head on that window (report.attention_json), the last `max_positions`
                 positions only, so a long window stays a small answer ("offset": the first one shown)
    logit_lens   what each layer would predict at each position (report.lens_json)
    saliency     which context tokens pushed the model towards `token` (report.saliency_json)

A view the model does not have (the bigram has no attention) is None, with the reason in "notes".
"""
from __future__ import annotations

from typing import Any, Sequence

from tinygpt.generation.decoder import prompt_start, slide
from tinygpt.inspect import interpret
from tinygpt.inspect.interpret import AttentionResult
from tinygpt.inspect.report import attention_json, lens_json, pieces, saliency_json, steps_json
from tinygpt.inspect.views import prompt_ids
from tinygpt.serve.completions import ServedModel

MAX_POSITIONS = 64  # positions of attention sent for one step: 64 x 64 per head
CANDIDATES = 10  # candidates shown before and after the sampling settings


def tokenize(served: ServedModel, text: str) -> dict[str, Any]:
    """The ids the model reads for a prompt (a task run: the wrapped question), their pieces, what each decodes
    to, and notices (a prompt cut to the window)."""
    tok = served.subject.tokenizer
    ids, notices = prompt_ids(served.subject, text)
    return {"ids": ids, "tokens": pieces(tok, ids), "texts": [tok.decode([i]) for i in ids], "notices": notices}


def step_window(prompt_len: int, step: int, block_size: int) -> tuple[int, int]:
    """The (start, end) slice of prompt + tokens the Decoder read to choose new token number `step` (0-based):
    step_window(3, 2, 4) == (2, 5), as decoder.py's docstring walks through."""
    start = prompt_start(prompt_len, block_size)
    for end in range(prompt_len + 1, prompt_len + step + 1):  # each appended token may slide the window
        start = slide(start, end, block_size)
    return start, prompt_len + step


def step(served: ServedModel, prompt: Sequence[int], tokens: Sequence[int], token: int | None = None,
         temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
         max_positions: int = MAX_POSITIONS, k: int = CANDIDATES) -> dict[str, Any]:
    """Look at the choice of new token number len(tokens) after `prompt` (ids); `token`: the one chosen there
    (saliency explains it; default: the model's top token). See the module docstring."""
    model, tok = served.subject.model, served.subject.tokenizer
    seq = list(prompt) + list(tokens)
    start, end = step_window(len(prompt), len(tokens), model.config.block_size)
    context = seq[start:end]
    # one step of a trace: the distribution before and after the settings (its own draw is not the point)
    trace = interpret.trace_generation(model, context, 1, temperature, top_k, top_p, seed=0, k=k)
    row = steps_json(trace, tok)["steps"][0]
    candidates = {"settings": trace.settings, "kept": row["kept"], "before": row["before"], "after": row["after"],
                  "before_ids": [i for i, _ in trace.steps[0].before],
                  "after_ids": [i for i, _ in trace.steps[0].after]}
    shown_ids = set(candidates["before_ids"]) | set(candidates["after_ids"]) | ({token} if token is not None else set())
    candidates["texts"] = {str(i): tok.decode([i]) for i in sorted(shown_ids)}  # what each adds to the text
    out: dict[str, Any] = {"window": [start, end], "context": pieces(tok, context), "context_ids": context,
                           "token": None if token is None else tok.id_to_piece(token), "token_id": token,
                           "candidates": candidates, "attention": None, "logit_lens": None, "notes": []}
    if model.attention_layers:
        res = interpret.attention(model, context)
        shown = max(0, len(context) - max_positions)
        out["attention"] = {**attention_json(AttentionResult(context[shown:], res.maps[:, :, shown:, shown:]), tok),
                            "offset": shown}
        out["logit_lens"] = lens_json(interpret.logit_lens(model, context), tok)
    else:
        out["notes"].append(str(interpret.no_attention_error(model, "attention or layers to look through")))
    out["saliency"] = saliency_json(interpret.saliency(model, context, token), tok)
    return out


__all__ = ["MAX_POSITIONS", "CANDIDATES", "tokenize", "step_window", "step"]
