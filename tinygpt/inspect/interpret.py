"""Look inside a trained model: captured internals, attention maps, logit lens, saliency, generation traces.

Tensors and numbers only, keyed by token ids: each view returns a typed result (AttentionResult, LensResult,
SaliencyResult, Trace, AnimationResult) that report.py renders as text, JSON and HTML and viz.py draws. Every
function takes a model built by tinygpt (a LanguageModel: GPT and its ablations, single_head, multi_head,
bigram) and a prompt as token ids, and asks the model what it has (attention_layers, readout, ...).

Captured names (stable; `capture` returns them, the JSON outputs use them):
    "embed"      (T, C)       what the first block reads: token (+ position) embedding
    "attn.{i}"   (nh, T, T)   attention weights of layer i: row t = how much position t reads each s <= t
    "resid.{i}"  (T, C)       the residual stream after block i
    "ln_f"       (T, C)       the final LayerNorm's output (what the output head reads)
    "logits"     (T, V)       the model's next-token logits at every position

Capturing runs the manual attention path (the weights are needed); the normal forward pass is untouched
when nothing is captured (`capture=None` is the default of every model's forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from tinygpt.generation.decoder import Decoder, prompt_start
from tinygpt.generation.sampling import filter_logits
from tinygpt.models.base import LanguageModel


class InterpretError(ValueError):
    """A view that does not apply to this model or prompt; the message is one line, fit for the CLI."""


def _ids(model: LanguageModel, prompt: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """A prompt as a (1, T) tensor on the model's device; at most block_size tokens."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(list(prompt) if not isinstance(prompt, torch.Tensor) else prompt,
                          dtype=torch.long, device=device).reshape(1, -1)
    if ids.size(1) == 0:
        raise InterpretError("the prompt is empty: give at least one token")
    block = model.config.block_size
    if ids.size(1) > block:
        raise InterpretError(f"the prompt has {ids.size(1)} tokens but the model sees at most {block}; "
                             f"keep the last {block} (see window())")
    return ids


def window(prompt: Sequence[int], block_size: int) -> tuple[list[int], int]:
    """The part of a prompt the model can see (the Decoder's policy): (its last block_size ids, how many were
    dropped)."""
    ids = list(prompt)
    dropped = prompt_start(len(ids), block_size)
    return ids[dropped:], dropped


def no_attention_error(model: LanguageModel, what: str) -> InterpretError:
    return InterpretError(f"the {model.name} model has no {what}: each prediction is a table lookup of the current "
                          f"token alone, so no other position can influence it (try a single_head, "
                          f"multi_head or gpt checkpoint)")


def _need_attention(model: LanguageModel, what: str) -> None:
    if model.attention_layers == 0:
        raise no_attention_error(model, what)


@torch.no_grad()
def capture(model: LanguageModel, prompt: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the model once on a prompt and return its internals by name (see the module docstring), batch
    dimension removed, on the CPU, as float32."""
    ids = _ids(model, prompt)
    was_training = model.training
    model.eval()
    try:
        got: dict[str, torch.Tensor] = {}
        logits, _ = model(ids, capture=got)
    finally:
        model.train(was_training)
    got["logits"] = logits
    return {name: t[0].detach().float().cpu() for name, t in got.items() if t is not None}


def attention_maps(model: LanguageModel, prompt: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head: (n_layer, n_head, T, T). Row t sums to 1 and is zero
    after column t (causal). Raises InterpretError for a model without attention (the bigram)."""
    _need_attention(model, "attention")
    got = capture(model, prompt)
    return torch.stack([got[f"attn.{i}"] for i in range(model.attention_layers)])


@dataclass
class AttentionResult:
    """The attention view: ids (T,) and maps (n_layer, n_head, T, T) (see attention_maps)."""
    ids: list[int]
    maps: torch.Tensor


def attention(model: LanguageModel, prompt: Sequence[int]) -> AttentionResult:
    return AttentionResult(list(prompt), attention_maps(model, prompt))


@dataclass
class LensResult:
    """What each layer would predict if the model stopped there, for the prompt `ids`.

    layers: names of the rows, "embed" then "resid.0" .. "resid.{L-1}" (the last row is the model's output).
    top_ids, top_probs: (L + 1, T, k) the k most likely next tokens at each layer and position.
    target_probs: (L + 1, T - 1) probability each layer gives the token that actually comes next in the prompt.
    """
    ids: list[int]
    layers: list[str]
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    target_probs: torch.Tensor


def logit_lens(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, k: int = 5) -> LensResult:
    """Send the residual stream after each layer (and the embedding) through the model's readout (final
    LayerNorm, then the output head): each row is that layer's next-token guess. The last row equals the
    model's own output."""
    _need_attention(model, "layers to look through")
    ids = _ids(model, prompt)
    got = capture(model, ids)
    names = ["embed"] + [f"resid.{i}" for i in range(model.attention_layers)]
    param = next(model.parameters())
    with torch.no_grad():
        stream = torch.stack([got[n] for n in names]).to(param.device, param.dtype)  # (L+1, T, C)
        probs = torch.softmax(model.readout(stream).float(), dim=-1).cpu()  # (L+1, T, V)
    k = min(k, probs.size(-1))
    top_probs, top_ids = probs.topk(k, dim=-1)
    nxt = ids[0, 1:].cpu()
    target = probs[:, :-1, :].gather(-1, nxt.expand(probs.size(0), -1)[..., None])[..., 0]
    return LensResult(ids[0].tolist(), names, top_ids, top_probs, target)


@dataclass
class SaliencyResult:
    """How much each prompt token (ids) pushed the model towards `target` at the last position.

    scores: (T,) signed attribution per prompt token, in units of the target's logit (positive = made the
    target more likely); method: "integrated_gradients" or "gradient_x_input"; target_prob: the target's
    probability after the prompt. For integrated gradients the scores add up to about
    logit(target | prompt) - logit(target | baseline), the baseline being all-zero token embeddings (positions
    kept); `delta` is that difference, to check how close the sum is.
    """
    ids: list[int]
    target: int
    target_prob: float
    method: str
    scores: torch.Tensor
    delta: float | None = None

    @property
    def ranking(self) -> list[int]:
        """Prompt positions, most influential (largest |score|) first."""
        return torch.argsort(self.scores.abs(), descending=True, stable=True).tolist()


SALIENCY_METHODS = ("integrated_gradients", "gradient_x_input")
MAX_IG_STEPS = 4096  # far past where the sum stops changing; 32 is plenty for these models
IG_CHUNK = 64  # path points per forward/backward pass


def _logit_from(model: LanguageModel, ids: torch.Tensor, embeds: torch.Tensor, target: int) -> torch.Tensor:
    """The target's logit at the last position when the token embeddings are replaced by `embeds` (n, T, C):
    a forward hook swaps the embedding layer's output, so the model code itself is not touched."""
    handle = model.token_embedding.register_forward_hook(lambda mod, inp, out: embeds)
    try:
        logits, _ = model(ids.expand(embeds.size(0), -1))
    finally:
        handle.remove()
    return logits[:, -1, target].float()  # (n,)


def saliency(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, target: int | None = None,
             method: str = "integrated_gradients", steps: int = 32) -> SaliencyResult:
    """Attribute the logit of `target` after the prompt (default: the model's top token) to the prompt tokens.

    gradient_x_input: (d logit / d token embedding) · token embedding, summed over the embedding dimensions:
    one backward pass, but local. In a GPT, each block reads a LayerNorm'd copy of the stream, which
    removes the scale of the embedding, so this local view can miss the token that decides the output
    (tests/test_interpret.py builds such a case).
    integrated_gradients (the default): the same gradient averaged along the straight path from a zero
    embedding to the real one (`steps` points, midpoint rule, one batched pass), times the embedding. Its
    scores add up to the change in the logit along the path (completeness), and it finds the deciding token.
    """
    if method not in SALIENCY_METHODS:
        raise InterpretError(f"unknown saliency method {method!r} (integrated_gradients or gradient_x_input)")
    if not 1 <= steps <= MAX_IG_STEPS:
        raise InterpretError(f"integrated-gradients steps must be between 1 and {MAX_IG_STEPS}, got {steps}")
    ids = _ids(model, prompt)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, _ = model(ids)
            probs = torch.softmax(logits[0, -1].float(), dim=-1)
        if target is None:
            target = int(probs.argmax())
        if not 0 <= target < probs.numel():
            raise InterpretError(f"target token {target} is outside the vocabulary (0..{probs.numel() - 1})")
        emb = model.token_embedding(ids).detach()  # (1, T, C)
        delta = None
        if method == "gradient_x_input":
            x = emb.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(_logit_from(model, ids, x, target).sum(), x)
        else:
            alphas = (torch.arange(steps, device=emb.device, dtype=emb.dtype) + 0.5) / steps
            grad = torch.zeros_like(emb)
            for chunk in alphas.split(IG_CHUNK):  # a bounded batch of path points at a time
                path = (chunk[:, None, None] * emb).requires_grad_(True)  # (chunk, T, C)
                (grads,) = torch.autograd.grad(_logit_from(model, ids, path, target).sum(), path)
                grad += grads.sum(dim=0, keepdim=True)
            grad /= steps
            with torch.no_grad():
                ends = _logit_from(model, ids, torch.cat([emb, torch.zeros_like(emb)]), target)
            delta = float(ends[0] - ends[1])
    finally:
        model.train(was_training)
    scores = (grad * emb).sum(dim=-1)[0].float().cpu()  # (T,)
    return SaliencyResult(ids[0].tolist(), target, float(probs[target]), method, scores, delta)


@dataclass
class TraceStep:
    """One generated token. `before`: the model's top-k (id, probability) from the raw logits; `after`: the
    top-k once temperature / top-k / top-p reshaped them (what the token was drawn from); `chosen`: the
    token taken, with its probability before and after. kept: how many tokens survived the filters."""
    position: int
    before: list[tuple[int, float]]
    after: list[tuple[int, float]]
    chosen: int
    chosen_before: float
    chosen_after: float
    kept: int


@dataclass
class Trace:
    """A generation, step by step (the steps view). windows[i]: the (start, end) slice of prompt + tokens
    the model read to choose step i (the Decoder's record); last_window: the one it holds after the last
    token (what it would read next)."""
    prompt: list[int]
    steps: list[TraceStep] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    windows: list[tuple[int, int]] = field(default_factory=list)
    last_window: tuple[int, int] | None = None

    @property
    def tokens(self) -> list[int]:
        return [s.chosen for s in self.steps]


def trace_generation(model: LanguageModel, prompt: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                     k: int = 5, stop_ids: Sequence[int] = (), use_cache: bool = True) -> Trace:
    """Generate like `generate` (same arguments, same tokens for the same seed: both run a Decoder) and record,
    for every new token, the distribution before and after the sampling settings reshaped it, and the window
    the model read. Stops early after a token in stop_ids (e.g. the calculator's <eos>). temperature=0 is
    greedy: "after" is then all on the argmax."""
    prompt = list(prompt)
    if not prompt:
        raise InterpretError("the prompt is empty: give at least one token")
    trace = Trace(prompt, settings=dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed))
    was_training = model.training
    model.eval()
    try:
        dec = Decoder(model, prompt, use_cache=use_cache, eos_ids=stop_ids)
        for i, (logits, nxt) in enumerate(dec.generate(max_new_tokens, temperature, top_k, top_p, seed)):
            raw = torch.softmax(logits[0].float(), dim=-1).cpu()
            if temperature == 0:
                shaped = torch.zeros_like(raw)
                shaped[int(nxt[0])] = 1.0
            else:
                shaped = torch.softmax(filter_logits(logits[0], temperature, top_k, top_p), dim=-1).cpu()
            chosen = int(nxt[0])
            kk = min(k, raw.numel())
            trace.steps.append(TraceStep(
                position=len(prompt) + i,
                before=_top(raw, kk), after=_top(shaped, kk), chosen=chosen,
                chosen_before=float(raw[chosen]), chosen_after=float(shaped[chosen]),
                kept=int((shaped > 0).sum())))
    finally:
        model.train(was_training)
    trace.windows, trace.last_window = list(dec.windows), dec.window
    return trace


def _top(probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    p, i = probs.topk(k)
    return [(int(a), float(b)) for a, b in zip(i, p) if b > 0]


@dataclass
class AnimationResult:
    """Attention while generating: frames[i] (n_layer, n_head, t, t) computed on windows[i] of prompt + tokens.
    Frame 0 is the prompt (the window read for the first token), frame i the window after the i-th new token
    (the one read for the next token; the last is the Decoder's final window)."""
    trace: Trace
    frames: list[torch.Tensor]
    windows: list[tuple[int, int]]

    @property
    def sequence(self) -> list[int]:
        return self.trace.prompt + self.trace.tokens


def generation_attention(model: LanguageModel, trace: Trace) -> AnimationResult:
    """The attention maps of every window a traced generation read, in order (see AnimationResult): exactly
    the windows the Decoder recorded, so t grows by one per frame until the window slides."""
    _need_attention(model, "attention")
    windows = trace.windows + [trace.last_window]
    seq = trace.prompt + trace.tokens
    return AnimationResult(trace, [attention_maps(model, seq[a:b]) for a, b in windows], windows)


__all__ = ["InterpretError", "no_attention_error", "window", "capture", "attention_maps", "AttentionResult",
           "attention", "LensResult", "logit_lens", "SALIENCY_METHODS", "SaliencyResult", "saliency", "TraceStep",
           "Trace", "trace_generation", "AnimationResult", "generation_attention"]
