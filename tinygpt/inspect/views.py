"""`tinygpt inspect` as a library: open a run, turn a prompt into ids the way the run expects (once per call),
compute typed results with interpret.py, render them with report.py (text, JSON, HTML) and viz.py (PNG,
GIF), and hand back the numbers, the text and the files.

    subject = open_run("runs/calculator")
    view = attention(subject, "seven times eight", "attention.png")
    print(view.text); view.data  # JSON-ready numbers

Task checkpoints (the calculator) wrap the prompt as the task does ("seven times eight" -> "seven times
eight =") and generate greedily until <eos>; text checkpoints keep the last block_size tokens of a long
prompt (with a notice) and sample with temperature 0.8 unless told otherwise. `report` computes each result
once (one generation feeds the animation and the step-by-step view) and renders them all into one page.
"""
from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.config import DEFAULT_TEMPERATURE, SettingText
from tinygpt.files import write_text
from tinygpt.generation.sampling import check_settings
from tinygpt.inspect import interpret
from tinygpt.inspect.interpret import AnimationResult, AttentionResult, LensResult, Trace
from tinygpt.inspect.report import (animation_json, animation_text, attention_json, attention_text, html_page,
                                    image_html, lens_html, lens_json, lens_table, pieces, prompt_html, saliency_html,
                                    saliency_json, saliency_text, step_candidates, steps_html, steps_json, steps_table,
                                    visible)
from tinygpt.inspect.viz import attention_animation, attention_grid, logit_lens_grid, steps_chart
from tinygpt.models.base import LanguageModel
from tinygpt.tokenizers import Tokenizer
from tinygpt.training.run import load_checkpoint, task_of


@dataclass
class Subject:
    """A loaded run: model (eval mode), tokenizer, checkpoint config, and its task when it has one."""
    model: LanguageModel
    tokenizer: Tokenizer
    cfg: dict[str, Any]
    task: Any = None

    @property
    def label(self) -> str:
        path = Path(self.cfg["path"]).resolve()
        return f"{path.parent.name}/{path.name} ({self.model.name})"

    def labels(self, ids: list[int]) -> list[str]:
        """Token pieces made readable for drawing ("␣", "\\n")."""
        return [visible(p) for p in pieces(self.tokenizer, ids)]

    @property
    def stop_ids(self) -> list[int]:
        return [self.task.eos_id] if self.task is not None else []


@dataclass
class View:
    """What one inspect subcommand produced: JSON-ready numbers, terminal text, files written, notices."""
    data: dict[str, Any]
    text: str = ""
    files: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def open_run(run_dir: str | Path, which: str = "best", device: str = "cpu") -> Subject:
    model, tokenizer, cfg = load_checkpoint(run_dir, which, device)
    task = task_of(cfg)
    return Subject(model, tokenizer, cfg, task)


def prompt_ids(subject: Subject, prompt: str) -> tuple[list[int], list[str]]:
    """The ids the model reads for a prompt typed by a person, and notices (e.g. a prompt cut to fit)."""
    if subject.task is not None:
        return subject.task.prompt_ids(prompt), []
    if prompt == "":
        raise interpret.InterpretError(SettingText("the prompt is empty: give some text with `prompt`", "prompt"))
    ids = subject.tokenizer.encode(prompt)
    kept, dropped = interpret.window(ids, subject.model.config.block_size)
    notices = [f"the prompt has {len(ids)} tokens; the model sees only the last {len(kept)}"] if dropped else []
    return kept, notices


def _sampling(subject: Subject, temperature: float | None, top_k: int | None, top_p: float | None,
              seed: int | None) -> dict[str, Any]:
    if temperature is None:
        temperature = 0.0 if subject.task is not None else DEFAULT_TEMPERATURE
    check_settings(temperature, top_k, top_p)
    if seed is not None and not 0 <= seed < 2 ** 63:
        raise interpret.InterpretError("seed must be between 0 and 2**63 - 1")
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def _new_tokens(subject: Subject, n: int | None) -> int:
    if n is None:  # the calculator's answer fits in max_answer_len words + <eos>; text: a short look
        return subject.task.max_answer_len + 1 if subject.task is not None else 20
    if n < 1:
        raise interpret.InterpretError("max_new_tokens must be >= 1")
    return n


def _trace(subject: Subject, ids: list[int], max_new_tokens: int | None, k: int, sampling: dict[str, Any]) -> Trace:
    return interpret.trace_generation(subject.model, ids, _new_tokens(subject, max_new_tokens), k=k,
                                      stop_ids=subject.stop_ids, **sampling)


def _check_layer_head(subject: Subject, layer: int | None, head: int | None) -> None:
    """Refuse a model without attention, and a layer or head it does not have (negative counts from the end)."""
    L, H = subject.model.attention_layers, subject.model.attention_heads
    if L == 0:
        raise interpret.no_attention_error(subject.model, "attention")
    if layer is not None and not -L <= layer < L:
        raise interpret.InterpretError(SettingText(f"`layer` {layer} is out of range: the model has {L} layer(s), "
                                                   f"0..{L - 1} (or -{L}..-1 from the last)", "layer"))
    if head is not None and not -H <= head < H:
        raise interpret.InterpretError(SettingText(f"`head` {head} is out of range: the model has {H} head(s), "
                                                   f"0..{H - 1} (or -{H}..-1 from the last)", "head"))


# --- drawing results into files (viz.py: optional matplotlib and Pillow) ---------------------------

def _draw_attention(subject: Subject, res: AttentionResult, out: str | Path, layer: int | None = None,
                    head: int | None = None) -> Path:
    return attention_grid(res.maps, subject.labels(res.ids), out, layer=layer, head=head, title=subject.label)


def _draw_animation(subject: Subject, res: AnimationResult, out: str | Path, layer: int, head: int | None,
                    fps: float) -> Path:
    return attention_animation(res.frames, subject.labels(res.sequence), out, res.windows, layer=layer, head=head,
                               fps=fps)


def _draw_steps(subject: Subject, trace: Trace, out: str | Path) -> Path:
    def label(i: int) -> str:
        return visible(subject.tokenizer.id_to_piece(i))

    return steps_chart([{"chosen": label(s.chosen),
                         "candidates": [(label(i), p, q, i == s.chosen) for i, p, q in step_candidates(s)]}
                        for s in trace.steps], out)


def _draw_lens(subject: Subject, res: LensResult, out: str | Path) -> Path:
    top1 = [subject.labels(row) for row in res.top_ids[..., 0].tolist()]
    labels = subject.labels(res.ids)
    return logit_lens_grid(res.layers, top1, res.top_probs[..., 0], labels, out, labels[1:] + [""])


def _page(out: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    return write_text(out, html_page(title, sections))


def _is_png(out: str | Path) -> bool:
    return Path(out).suffix.lower() == ".png"


# --- the views: compute a result once, then render it ----------------------------------------------

def attention(subject: Subject, prompt: str, out: str | Path | None = None, layer: int | None = None,
              head: int | None = None) -> View:
    """Attention weights of every layer and head on the prompt; a PNG grid (or one layer / head) at out."""
    _check_layer_head(subject, layer, head)
    ids, notices = prompt_ids(subject, prompt)
    res = interpret.attention(subject.model, ids)
    view = View(attention_json(res, subject.tokenizer, layer, head), attention_text(res, subject.tokenizer),
                notices=notices)
    if out is not None:
        view.files.append(_draw_attention(subject, res, out, layer, head))
    return view


def animate(subject: Subject, prompt: str, out: str | Path | None, layer: int = -1, head: int | None = None,
            max_new_tokens: int | None = None, temperature: float | None = None, top_k: int | None = None,
            top_p: float | None = None, seed: int | None = None, fps: float = 2.0) -> View:
    """Generate from the prompt and write a GIF of one layer's attention (a head, or the mean of the heads),
    one frame per new token, each computed on exactly the window the model was reading."""
    _check_layer_head(subject, layer, head)
    ids, notices = prompt_ids(subject, prompt)
    trace = _trace(subject, ids, max_new_tokens, 1, _sampling(subject, temperature, top_k, top_p, seed))
    res = interpret.generation_attention(subject.model, trace)
    layer_i = layer % subject.model.attention_layers
    head_i = None if head is None else head % subject.model.attention_heads
    view = View(animation_json(res, subject.tokenizer, layer_i, head_i),
                animation_text(res, subject.tokenizer, layer_i), notices=notices)
    if out is not None:
        view.files.append(_draw_animation(subject, res, out, layer_i, head_i, fps))
    return view


def steps(subject: Subject, prompt: str, out: str | Path | None = None, max_new_tokens: int | None = None,
          k: int = 5, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
          seed: int | None = None) -> View:
    """The step-by-step next-token view: a terminal table, and a PNG (out ending in .png) or HTML page."""
    ids, notices = prompt_ids(subject, prompt)
    trace = _trace(subject, ids, max_new_tokens, k, _sampling(subject, temperature, top_k, top_p, seed))
    view = View(steps_json(trace, subject.tokenizer), steps_table(trace, subject.tokenizer), notices=notices)
    if out is not None:
        view.files.append(_draw_steps(subject, trace, out) if _is_png(out) else _page(
            out, f"Step by step: {subject.label}",
            [("Prompt", f"<p><code>{prompt_html(subject.tokenizer, ids)}</code></p>"),
             ("Each new token", steps_html(trace, subject.tokenizer))]))
    return view


def logit_lens(subject: Subject, prompt: str, out: str | Path | None = None, k: int = 5) -> View:
    """Each layer's top next-token guess at each position: a terminal table, a PNG grid or an HTML table."""
    ids, notices = prompt_ids(subject, prompt)
    res = interpret.logit_lens(subject.model, ids, k)
    view = View(lens_json(res, subject.tokenizer), lens_table(res, subject.tokenizer), notices=notices)
    if out is not None:
        view.files.append(_draw_lens(subject, res, out) if _is_png(out) else _page(
            out, f"Logit lens: {subject.label}", [("Logit lens", lens_html(res, subject.tokenizer))]))
    return view


def _target_id(subject: Subject, target: str | None) -> int | None:
    if target is None:
        return None
    ids = subject.tokenizer.encode(target)
    if len(ids) != 1:
        raise interpret.InterpretError(SettingText(f"`target` must be exactly one token; {target!r} is {len(ids)} "
                                                   f"tokens: {subject.labels(ids)}", "target"))
    return ids[0]


def saliency(subject: Subject, prompt: str, out: str | Path | None = None, target: str | None = None,
             method: str = "integrated_gradients", steps: int = 32, color: bool = True) -> View:
    """Which prompt tokens made the model predict `target` next (default: its top token): coloured terminal
    text, and an HTML page at out."""
    ids, notices = prompt_ids(subject, prompt)
    res = interpret.saliency(subject.model, ids, _target_id(subject, target), method=method, steps=steps)
    view = View(saliency_json(res, subject.tokenizer), saliency_text(res, subject.tokenizer, color), notices=notices)
    if out is not None:
        view.files.append(_page(out, f"Saliency: {subject.label}",
                                [("Saliency", saliency_html(res, subject.tokenizer))]))
    return view


def _can_draw() -> bool:
    try:  # the viz extra, looked for without drawing anything
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def report(subject: Subject, prompt: str, out: str | Path, max_new_tokens: int | None = None,
           temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, layer: int = -1) -> View:
    """Everything above for one prompt in one self-contained offline HTML file (images embedded). The prompt
    is encoded once and every result computed once: one generation feeds both the animation and the
    step-by-step view; `layer` picks the animated layer. data holds each view's JSON."""
    model, tok = subject.model, subject.tokenizer
    ids, notices = prompt_ids(subject, prompt)
    attends = model.attention_layers > 0
    if attends:
        _check_layer_head(subject, layer, None)
    trace = _trace(subject, ids, max_new_tokens, 5, _sampling(subject, temperature, top_k, top_p, seed))
    sal = interpret.saliency(model, ids)
    images = _can_draw()
    if not images:
        notices.append("images need matplotlib and Pillow: pip install 'tinygpt[viz]'")
    data: dict[str, Any] = {"prompt": pieces(tok, ids)}
    sections = [("Prompt", f"<p><code>{prompt_html(tok, ids)}</code> ({len(ids)} tokens)</p>")]
    with tempfile.TemporaryDirectory() as tmp:
        if attends:
            att = interpret.attention(model, ids)
            anim = interpret.generation_attention(model, trace)
            lens = interpret.logit_lens(model, ids)
            layer_i = layer % model.attention_layers
            data["attention"] = attention_json(att, tok)
            data["animation"] = animation_json(anim, tok, layer_i, None)
            body = f"<pre>{html.escape(attention_text(att, tok))}</pre>"
            if images:
                body = (image_html(_draw_attention(subject, att, Path(tmp) / "attention.png"),
                                   "attention of every layer and head") + body +
                        f"<h3>While generating (layer {layer_i}, mean of the heads)</h3>" +
                        image_html(_draw_animation(subject, anim, Path(tmp) / "animation.gif", layer_i, None, 2.0),
                                   "attention while generating"))
            sections.append(("Attention", "<p>Row = the position reading, column = the position read; each row "
                                          "sums to 1.</p>" + body))
            data["logit_lens"] = lens_json(lens, tok)
            sections.append(("Logit lens", lens_html(lens, tok)))
        else:
            why = interpret.no_attention_error(model, "attention")
            sections.append(("Attention and logit lens", f"<p>{html.escape(str(why))}</p>"))
        data["steps"] = steps_json(trace, tok)
        sections.append(("Step by step", steps_html(trace, tok)))
        data["saliency"] = saliency_json(sal, tok)
        sections.append(("Saliency", saliency_html(sal, tok)))
        page = html_page(f"Inside {subject.label}", sections, notices)
    path = write_text(out, page)
    return View(data, f"report for {len(ids)} prompt tokens", [path], notices)


__all__ = ["Subject", "View", "open_run", "prompt_ids", "attention", "animate", "steps", "logit_lens",
           "saliency", "report"]
