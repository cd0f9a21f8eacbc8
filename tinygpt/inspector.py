"""`tinygpt inspect` as a library: open a run, turn a prompt into ids the way the run expects, compute a view
with interpret.py, draw it with viz.py / report.py, and hand back the numbers, the text and the files.

    subject = open_run("runs/calculator")
    view = attention(subject, "seven times eight", "attention.png")
    print(view.text); view.data  # JSON-ready numbers

Task checkpoints (the calculator) wrap the prompt as the task does ("seven times eight" -> "seven times
eight =") and generate greedily until <eos>; text checkpoints keep the last block_size tokens of a long
prompt (with a notice) and sample with temperature 0.8 unless told otherwise.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from . import interpret
from .report import (finite, html_page, image_html, lens_html, lens_table, saliency_html, saliency_terminal,
                     steps_html, steps_table, visible)
from .files import write_text
from .config import DEFAULT_TEMPERATURE
from .sampling import check_settings
from .tokenizers import Tokenizer

ROUND = 4  # decimals kept in the JSON outputs


@dataclass
class Subject:
    """A loaded run: model (eval mode), tokenizer, checkpoint config, and its task when it has one."""
    model: nn.Module
    tokenizer: Tokenizer
    cfg: dict[str, Any]
    task: Any = None

    @property
    def label(self) -> str:
        path = Path(self.cfg["path"]).resolve()
        return f"{path.parent.name}/{path.name} ({self.cfg['model']['model']})"

    def piece(self, i: int) -> str:
        return self.tokenizer.id_to_piece(int(i))

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.piece(i) for i in ids]

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
    from .checkpoint import load_checkpoint
    from .tasks import task_from_dict

    model, tokenizer, cfg = load_checkpoint(run_dir, which, device)
    task = task_from_dict(cfg["task"]) if "task" in cfg else None
    return Subject(model, tokenizer, cfg, task)


def prompt_ids(subject: Subject, prompt: str) -> tuple[list[int], list[str]]:
    """The ids the model reads for a prompt typed by a person, and notices (e.g. a prompt cut to fit)."""
    if subject.task is not None:
        return subject.task.prompt_ids(prompt), []
    if prompt == "":
        raise interpret.InterpretError("the prompt is empty: give some text with --prompt")
    ids = subject.tokenizer.encode(prompt)
    kept, dropped = interpret.window(ids, subject.model.config.block_size)
    notices = [f"the prompt has {len(ids)} tokens; the model sees only the last {len(kept)}"] if dropped else []
    return kept, notices


def _r(x: float) -> float | None:
    return finite(round(float(x), ROUND))


def _nested(t) -> Any:
    return [_nested(s) for s in t] if t.dim() > 0 else _r(t)


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


def _trace(subject: Subject, ids: list[int], max_new_tokens: int | None, k: int, sampling: dict[str, Any]
           ) -> interpret.Trace:
    return interpret.trace_generation(subject.model, ids, _new_tokens(subject, max_new_tokens), k=k,
                                      stop_ids=subject.stop_ids, **sampling)


def _check_layer_head(subject: Subject, layer: int | None, head: int | None) -> None:
    """Refuse a model without attention, and a layer or head it does not have (negative counts from the end)."""
    if not interpret.has_attention(subject.model):
        raise interpret.no_attention_error(subject.model, "attention")
    L = interpret.n_layers(subject.model)
    H = 1 if subject.cfg["model"]["model"] == "single_head" else subject.model.config.n_head
    if layer is not None and not -L <= layer < L:
        raise interpret.InterpretError(f"--layer {layer} is out of range: the model has {L} layer(s), 0..{L - 1} "
                                       f"(or -{L}..-1 from the last)")
    if head is not None and not -H <= head < H:
        raise interpret.InterpretError(f"--head {head} is out of range: the model has {H} head(s), 0..{H - 1} "
                                       f"(or -{H}..-1 from the last)")


# --- the views -----------------------------------------------------------------------------------

def attention(subject: Subject, prompt: str, out: str | Path | None = None, layer: int | None = None,
              head: int | None = None) -> View:
    """Attention weights of every layer and head on the prompt; a PNG grid (or one layer / head) at out."""
    _check_layer_head(subject, layer, head)
    ids, notices = prompt_ids(subject, prompt)
    maps = interpret.attention_maps(subject.model, ids)  # (L, H, T, T)
    labels = [visible(p) for p in subject.pieces(ids)]
    data = {"tokens": subject.pieces(ids), "ids": ids, "shape": list(maps.shape), "attention": _nested(maps),
            "layer": None if layer is None else layer % maps.shape[0],
            "head": None if head is None else head % maps.shape[1]}
    # the summary: where the last position looks, per layer, averaged over heads
    last = maps[:, :, -1, :].mean(dim=1)  # (L, T)
    lines = [f"{maps.shape[0]} layer(s) × {maps.shape[1]} head(s) over {len(ids)} tokens; where the last token "
             f"'{labels[-1]}' looks (mean over heads):"]
    for i, row in enumerate(last):
        top = row.topk(min(3, row.numel()))
        lines.append(f"  layer {i}: " + ", ".join(f"'{labels[int(t)]}'@{int(t)} {float(v):.2f}"
                                                  for v, t in zip(top.values, top.indices)))
    view = View(data, "\n".join(lines), notices=notices)
    if out is not None:
        from .viz import attention_grid
        view.files.append(attention_grid(maps, labels, out, layer=layer, head=head, title=subject.label))
    return view


def animate(subject: Subject, prompt: str, out: str | Path | None, layer: int = -1, head: int | None = None,
            max_new_tokens: int | None = None, temperature: float | None = None, top_k: int | None = None,
            top_p: float | None = None, seed: int | None = None, fps: float = 2.0) -> View:
    """Generate from the prompt and write a GIF of one layer's attention (a head, or the mean of the heads),
    one frame per new token, each computed on exactly the window the model was reading."""
    _check_layer_head(subject, layer, head)
    ids, notices = prompt_ids(subject, prompt)
    trace = _trace(subject, ids, max_new_tokens, 1, _sampling(subject, temperature, top_k, top_p, seed))
    return _animate(subject, ids, trace, out, layer, head, fps, notices)


def _animate(subject: Subject, ids: list[int], trace: interpret.Trace, out: str | Path | None, layer: int,
             head: int | None, fps: float, notices: list[str]) -> View:
    frames = interpret.generation_attention(subject.model, ids, trace.tokens)
    windows = interpret.generation_windows(len(ids), len(trace.tokens), subject.model.config.block_size)
    L = interpret.n_layers(subject.model)
    layer_i = layer % L
    H = frames[0].size(1)
    head_i = None if head is None else head % H
    seq = ids + trace.tokens
    data = {"tokens": subject.pieces(seq), "prompt_len": len(ids), "generated": subject.pieces(trace.tokens),
            "layer": layer_i, "head": head_i, "settings": trace.settings, "windows": windows,
            "frames": [_nested(f[layer_i].mean(0) if head_i is None else f[layer_i, head_i]) for f in frames]}
    text = f"generated {subject.tokenizer.decode(trace.tokens)!r}; {len(frames)} frames of layer {layer_i}"
    view = View(data, text, notices=notices)
    if out is not None:
        from .viz import attention_animation
        view.files.append(attention_animation(frames, [visible(p) for p in subject.pieces(seq)], out, len(ids),
                                              layer=layer_i, head=head_i, fps=fps))
    return view


def _step_dicts(subject: Subject, trace: interpret.Trace) -> list[dict[str, Any]]:
    return [{"position": s.position, "chosen": subject.piece(s.chosen), "chosen_id": s.chosen,
             "chosen_before": _r(s.chosen_before), "chosen_after": _r(s.chosen_after), "kept": s.kept,
             "before": [(subject.piece(i), _r(p)) for i, p in s.before],
             "after": [(subject.piece(i), _r(p)) for i, p in s.after]} for s in trace.steps]


def steps(subject: Subject, prompt: str, out: str | Path | None = None, max_new_tokens: int | None = None,
          k: int = 5, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
          seed: int | None = None) -> View:
    """The step-by-step next-token view: a terminal table, and a PNG (out ending in .png) or HTML page."""
    ids, notices = prompt_ids(subject, prompt)
    trace = _trace(subject, ids, max_new_tokens, k, _sampling(subject, temperature, top_k, top_p, seed))
    return _steps(subject, ids, trace, out, notices)


def _steps(subject: Subject, ids: list[int], trace: interpret.Trace, out: str | Path | None,
           notices: list[str]) -> View:
    rows = _step_dicts(subject, trace)
    data = {"prompt": subject.pieces(ids), "settings": trace.settings, "steps": rows,
            "generated": subject.pieces(trace.tokens)}
    view = View(data, steps_table(rows, trace.settings), notices=notices)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() == ".png":
            from .viz import steps_chart
            view.files.append(steps_chart([{**r, "chosen": visible(r["chosen"]),
                                            "before": [(visible(p), q) for p, q in r["before"]],
                                            "after": [(visible(p), q) for p, q in r["after"]]} for r in rows], out))
        else:
            page = html_page(f"Step by step: {subject.label}",
                             [("Prompt", f"<p><code>{_prompt_html(subject, ids)}</code></p>"),
                              ("Each new token", steps_html(rows, trace.settings))])
            view.files.append(write_text(out, page))
    return view


def logit_lens(subject: Subject, prompt: str, out: str | Path | None = None, k: int = 5) -> View:
    """Each layer's top next-token guess at each position: a terminal table, a PNG grid or an HTML table."""
    ids, notices = prompt_ids(subject, prompt)
    lens = interpret.logit_lens(subject.model, ids, k)
    top = [[[subject.piece(i) for i in pos] for pos in layer] for layer in lens.top_ids.tolist()]
    top1 = [[pos[0] for pos in layer] for layer in top]
    p1 = lens.top_probs[..., 0]
    labels = subject.pieces(ids)
    nxt = labels[1:] + [""]
    data = {"tokens": labels, "layers": lens.layers, "top_tokens": top, "top_probs": _nested(lens.top_probs),
            "next_token_probs": _nested(lens.target_probs)}
    view = View(data, lens_table(lens.layers, top1, p1.tolist(), labels), notices=notices)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() == ".png":
            from .viz import logit_lens_grid
            view.files.append(logit_lens_grid(lens.layers, [[visible(p) for p in row] for row in top1], p1,
                                              [visible(p) for p in labels], out,
                                              [visible(p) if p else "" for p in nxt]))
        else:
            page = html_page(f"Logit lens: {subject.label}", [("Logit lens", lens_html(lens.layers, top1, p1.tolist(),
                                                                                       labels, nxt))])
            view.files.append(write_text(out, page))
    return view


def _target_id(subject: Subject, target: str | None) -> int | None:
    if target is None:
        return None
    ids = subject.tokenizer.encode(target)
    if len(ids) != 1:
        raise interpret.InterpretError(f"--target must be exactly one token; {target!r} is {len(ids)} tokens: "
                                       f"{[visible(subject.piece(i)) for i in ids]}")
    return ids[0]


def saliency(subject: Subject, prompt: str, out: str | Path | None = None, target: str | None = None,
             method: str = "integrated_gradients", steps: int = 32, color: bool = True) -> View:
    """Which prompt tokens made the model predict `target` next (default: its top token): coloured terminal
    text, and an HTML page at out."""
    ids, notices = prompt_ids(subject, prompt)
    s = interpret.saliency(subject.model, ids, _target_id(subject, target), method=method, steps=steps)
    pieces = subject.pieces(ids)
    scores = s.scores.tolist()
    target_piece = subject.piece(s.target)
    data = {"tokens": pieces, "target": target_piece, "target_id": s.target, "target_prob": _r(s.target_prob),
            "method": s.method, "scores": [_r(x) for x in scores],
            "delta": None if s.delta is None else _r(s.delta)}
    head = f"target '{visible(target_piece)}' (probability {s.target_prob:.3f}), {s.method}:"
    view = View(data, head + "\n" + saliency_terminal(pieces, scores, color), notices=notices)
    if out is not None:
        page = html_page(f"Saliency: {subject.label}", [("Saliency", saliency_html(pieces, scores, target_piece,
                                                                                   s.method))])
        view.files.append(write_text(out, page))
    return view


def report(subject: Subject, prompt: str, out: str | Path, max_new_tokens: int | None = None,
           temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, layer: int = -1) -> View:
    """Everything above for one prompt in one self-contained offline HTML file (images embedded). One
    generation feeds both the animation and the step-by-step view; `layer` picks the animated layer."""
    ids, notices = prompt_ids(subject, prompt)
    attends = interpret.has_attention(subject.model)
    if attends:
        _check_layer_head(subject, layer, None)
    trace = _trace(subject, ids, max_new_tokens, 5, _sampling(subject, temperature, top_k, top_p, seed))
    sections: list[tuple[str, str]] = [("Prompt", f"<p><code>{_prompt_html(subject, ids)}</code> "
                                                  f"({len(ids)} tokens)</p>")]
    data: dict[str, Any] = {"prompt": subject.pieces(ids)}
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
        images = True
    except ImportError:
        images = False
        notices.append("images need matplotlib and Pillow: pip install 'tinygpt[viz]'")
    with tempfile.TemporaryDirectory() as tmp:
        if attends:
            att = attention(subject, prompt, Path(tmp) / "attention.png" if images else None)
            data["attention"] = att.data
            body = f"<pre>{_esc(att.text)}</pre>"
            if images:
                anim = _animate(subject, ids, trace, Path(tmp) / "animation.gif", layer, None, 2.0, [])
                data["animation"] = anim.data
                body = (image_html(att.files[0], "attention of every layer and head") + body +
                        f"<h3>While generating (layer {anim.data['layer']}, mean of the heads)</h3>" +
                        image_html(anim.files[0], "attention while generating"))
            sections.append(("Attention", "<p>Row = the position reading, column = the position read; each row "
                                          "sums to 1.</p>" + body))
            lens = logit_lens(subject, prompt)
            data["logit_lens"] = lens.data
            labels = lens.data["tokens"]
            top1 = [[pos[0] for pos in row] for row in lens.data["top_tokens"]]
            p1 = [[pos[0] for pos in row] for row in lens.data["top_probs"]]
            sections.append(("Logit lens", lens_html(lens.data["layers"], top1, p1, labels, labels[1:] + [""])))
        else:
            why = interpret.no_attention_error(subject.model, "attention")
            sections.append(("Attention and logit lens", f"<p>{_esc(str(why))}</p>"))
        st = _steps(subject, ids, trace, None, [])
        data["steps"] = st.data
        sections.append(("Step by step", steps_html(st.data["steps"], st.data["settings"])))
        sal = saliency(subject, prompt)
        data["saliency"] = sal.data
        sections.append(("Saliency", saliency_html(sal.data["tokens"], sal.data["scores"], sal.data["target"],
                                                   sal.data["method"])))
        page = html_page(f"Inside {subject.label}", sections, notices)
    path = write_text(out, page)
    return View(data, f"report for {len(ids)} prompt tokens", [path], notices)


def _esc(text: str) -> str:
    import html
    return html.escape(text)


def _prompt_html(subject: Subject, ids: list[int]) -> str:
    return "".join(f'<span class="tok" style="background:#eef">{_esc(visible(p))}</span>' for p in subject.pieces(ids))


__all__ = ["Subject", "View", "open_run", "prompt_ids", "attention", "animate", "steps", "logit_lens",
           "saliency", "report"]
