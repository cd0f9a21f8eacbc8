"""Renderers of the inspect results (interpret.py): terminal text and colours, the numbers as JSON, and
self-contained HTML.

Pure string and dict building, no plotting library: every function takes a result (keyed by token ids)
and the tokenizer that names the ids. JSON numbers are rounded to ROUND decimals here and nowhere else;
text and HTML read the full-precision results. viz.py draws the images; the HTML report embeds them as
data URIs so one file works offline.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from tinygpt.inspect.interpret import AnimationResult, AttentionResult, LensResult, SaliencyResult, Trace, TraceStep
from tinygpt.tokenizers import Tokenizer

ROUND = 4  # decimals kept in the JSON outputs

# --- token pieces ----------------------------------------------------------------------------------

_VISIBLE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(piece: str) -> str:
    """A token as it should be printed in a table: whitespace made visible ("␣", "\\n"), never empty."""
    return "".join(_VISIBLE.get(c, c) for c in piece) or "∅"


def pieces(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.id_to_piece(int(i)) for i in ids]


def _bar(p: float, width: int = 20) -> str:
    """A probability as a bar of block characters: _bar(0.5, 4) == '██'."""
    full = p * width
    n = int(full)
    eighths = int((full - n) * 8)
    return "█" * n + ("▏▎▍▌▋▊▉"[eighths - 1] if eighths else "")


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None) or "defaults"


def step_candidates(step: TraceStep) -> list[tuple[int, float, float]]:
    """(id, model probability, sampled probability) of a step's top candidates in the model's order, then
    any the filters promoted into view, then the chosen token if it is in neither list."""
    before, after = dict(step.before), dict(step.after)
    rows = [(i, p, after.get(i, 0.0)) for i, p in step.before]
    rows += [(i, before.get(i, 0.0), q) for i, q in step.after if i not in before]
    if step.chosen not in before and step.chosen not in after:
        rows.append((step.chosen, step.chosen_before, step.chosen_after))
    return rows


# --- JSON ------------------------------------------------------------------------------------------

def finite(x: float) -> float | None:
    """JSON has no NaN or infinity: None instead."""
    return x if math.isfinite(x) else None


def _r(x: float) -> float | None:
    return finite(round(float(x), ROUND))


def _nested(t: torch.Tensor) -> Any:
    return [_nested(s) for s in t] if t.dim() > 0 else _r(t)


def attention_json(res: AttentionResult, tok: Tokenizer, layer: int | None = None, head: int | None = None
                   ) -> dict[str, Any]:
    """layer / head: the one drawn (None: all), normalised to 0-based."""
    L, H = res.maps.shape[:2]
    return {"tokens": pieces(tok, res.ids), "ids": res.ids, "shape": list(res.maps.shape),
            "attention": _nested(res.maps), "layer": None if layer is None else layer % L,
            "head": None if head is None else head % H}


def animation_json(res: AnimationResult, tok: Tokenizer, layer: int, head: int | None) -> dict[str, Any]:
    """The frames of one layer: one head, or the mean of the heads (head None)."""
    t = res.trace
    return {"tokens": pieces(tok, res.sequence), "prompt_len": len(t.prompt), "generated": pieces(tok, t.tokens),
            "layer": layer, "head": head, "settings": t.settings, "windows": [list(w) for w in res.windows],
            "frames": [_nested(f[layer].mean(0) if head is None else f[layer, head]) for f in res.frames]}


def steps_json(trace: Trace, tok: Tokenizer) -> dict[str, Any]:
    piece = tok.id_to_piece
    rows = [{"position": s.position, "chosen": piece(s.chosen), "chosen_id": s.chosen,
             "chosen_before": _r(s.chosen_before), "chosen_after": _r(s.chosen_after), "kept": s.kept,
             "before": [(piece(i), _r(p)) for i, p in s.before],
             "after": [(piece(i), _r(p)) for i, p in s.after]} for s in trace.steps]
    return {"prompt": pieces(tok, trace.prompt), "settings": trace.settings, "steps": rows,
            "generated": pieces(tok, trace.tokens)}


def lens_json(res: LensResult, tok: Tokenizer) -> dict[str, Any]:
    return {"tokens": pieces(tok, res.ids), "layers": res.layers,
            "top_tokens": [[pieces(tok, pos) for pos in layer] for layer in res.top_ids.tolist()],
            "top_probs": _nested(res.top_probs), "next_token_probs": _nested(res.target_probs)}


def saliency_json(res: SaliencyResult, tok: Tokenizer) -> dict[str, Any]:
    return {"tokens": pieces(tok, res.ids), "target": tok.id_to_piece(res.target), "target_id": res.target,
            "target_prob": _r(res.target_prob), "method": res.method, "scores": [_r(x) for x in res.scores.tolist()],
            "delta": None if res.delta is None else _r(res.delta)}


# --- terminal ------------------------------------------------------------------------------------

def attention_text(res: AttentionResult, tok: Tokenizer) -> str:
    """The summary: where the last position looks, per layer, averaged over heads (its top 3 positions)."""
    labels = [visible(p) for p in pieces(tok, res.ids)]
    L, H = res.maps.shape[:2]
    last = res.maps[:, :, -1, :].mean(dim=1)  # (L, T)
    lines = [f"{L} layer(s) × {H} head(s) over {len(res.ids)} tokens; where the last token '{labels[-1]}' looks "
             f"(mean over heads):"]
    for i, row in enumerate(last):
        top = row.topk(min(3, row.numel()))
        lines.append(f"  layer {i}: " + ", ".join(f"'{labels[int(t)]}'@{int(t)} {float(v):.2f}"
                                                  for v, t in zip(top.values, top.indices)))
    return "\n".join(lines)


def animation_text(res: AnimationResult, tok: Tokenizer, layer: int) -> str:
    return f"generated {tok.decode(res.trace.tokens)!r}; {len(res.frames)} frames of layer {layer}"


def steps_table(trace: Trace, tok: Tokenizer) -> str:
    """The step-by-step view: for each generated token, the top candidates with their probability before
    and after the sampling settings, and the one chosen (▶)."""
    lines = [f"sampling: {_settings(trace.settings)}   (model = raw probabilities; sampled = after the settings)"]
    for i, s in enumerate(trace.steps, start=1):
        lines.append(f"\nstep {i}: chose '{visible(tok.id_to_piece(s.chosen))}'  (model {s.chosen_before:.3f} -> "
                     f"sampled {s.chosen_after:.3f}; {s.kept} token{'s' if s.kept != 1 else ''} left to sample from)")
        lines.append(f"  {'token':<12} {'model':>6}  {'':<20} {'sampled':>7}")
        for i_, p, q in step_candidates(s):
            mark = "▶" if i_ == s.chosen else " "
            lines.append(f"{mark} {visible(tok.id_to_piece(i_))[:12]:<12} {p:6.3f}  {_bar(p):<20} {q:7.3f}  {_bar(q)}")
    return "\n".join(lines)


def lens_table(res: LensResult, tok: Tokenizer, max_columns: int = 10) -> str:
    """The logit lens as text: one row per layer, one column per input position (the last max_columns),
    each cell the layer's top next-token guess and its probability in percent."""
    labels = pieces(tok, res.ids)
    T = len(labels)
    cols = list(range(max(0, T - max_columns), T))
    cell = 7  # characters of each guess; a column is "guess  99%  "
    width = cell + 7
    out = []
    if cols[0] > 0:
        out.append(f"(the last {len(cols)} of {T} positions)")
    out.append(f"{'input →':>9} " + "".join(f"{visible(labels[t])[:width - 1]:<{width}}" for t in cols))
    for name, ids, probs in zip(res.layers, res.top_ids[..., 0].tolist(), res.top_probs[..., 0].tolist()):
        cells = "".join(f"{visible(tok.id_to_piece(ids[t]))[:cell]:<{cell}} {probs[t] * 100:3.0f}%  " for t in cols)
        out.append(f"{name:>9} {cells}")
    return "\n".join(out)


def saliency_text(res: SaliencyResult, tok: Tokenizer, color: bool = True) -> str:
    """The target, then the prompt with each token's background coloured by its score (green pushes towards
    the target, red away; stronger colour, larger share), then the five most influential tokens."""
    labels = [visible(p) for p in pieces(tok, res.ids)]
    scores = res.scores.tolist()
    top = max((abs(s) for s in scores), default=0.0) or 1.0
    parts = []
    for text, s in zip(labels, scores):
        if color:
            level = min(5, int(round(abs(s) / top * 5)))
            # 256-colour backgrounds: greens 22,28,34,40,46 / reds 52,88,124,160,196
            bg = (22, 28, 34, 40, 46)[level - 1] if s > 0 else (52, 88, 124, 160, 196)[level - 1]
            parts.append(f"\x1b[48;5;{bg}m\x1b[97m{text}\x1b[0m" if level else text)
        else:
            parts.append(f"[{text} {s:+.2f}]")
    rank = "  ".join(f"'{labels[i]}' {scores[i]:+.3f}" for i in res.ranking[:5])
    head = (f"target '{visible(tok.id_to_piece(res.target))}' (probability {res.target_prob:.3f}), "
            f"{res.method}:")
    return head + "\n" + " ".join(parts) + f"\nmost influential: {rank}"


# --- HTML ----------------------------------------------------------------------------------------

def data_uri(path: str | Path) -> str:
    """An image file as a data: URI, so an HTML page carries it inside."""
    p = Path(path)
    mime = {".png": "image/png", ".gif": "image/gif"}.get(p.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")


def _e(text: str) -> str:
    return html.escape(visible(text))


def _shade(score: float, top: float) -> str:
    """Background colour for a signed score: green for positive, red for negative, alpha by size."""
    a = 0.0 if top == 0 else min(1.0, abs(score) / top)
    rgb = "34,139,34" if score >= 0 else "200,40,40"
    return f"rgba({rgb},{a * 0.85:.2f})"


def prompt_html(tok: Tokenizer, ids: Sequence[int]) -> str:
    return "".join(f'<span class="tok" style="background:#eef">{_e(p)}</span>' for p in pieces(tok, ids))


def saliency_html(res: SaliencyResult, tok: Tokenizer) -> str:
    scores = res.scores.tolist()
    top = max((abs(s) for s in scores), default=0.0)
    spans = "".join(f'<span class="tok" style="background:{_shade(s, top)}" title="{s:+.4f}">{_e(p)}</span>'
                    for p, s in zip(pieces(tok, res.ids), scores))
    return (f"<p>Which prompt tokens pushed the model towards <b>{_e(tok.id_to_piece(res.target))}</b> "
            f"({html.escape(res.method)}; green raised its logit, red lowered it; hover for the score):</p>"
            f"<p class=\"prompt\">{spans}</p>")


def steps_html(trace: Trace, tok: Tokenizer) -> str:
    rows = [f"<p>Sampling settings: <code>{html.escape(_settings(trace.settings))}</code>. Grey bar: the model's "
            f"probability; blue bar: the probability the token was drawn with. ▶ marks the token chosen.</p>"]
    for n, s in enumerate(trace.steps, start=1):
        cells = []
        for i, p, q in step_candidates(s):
            mark = "▶ " if i == s.chosen else ""
            cells.append(f"<tr><td class=\"piece\">{mark}{_e(tok.id_to_piece(i))}</td>"
                         f"<td><div class=\"bar grey\" style=\"width:{p * 200:.1f}px\"></div> {p:.3f}</td>"
                         f"<td><div class=\"bar blue\" style=\"width:{q * 200:.1f}px\"></div> {q:.3f}</td></tr>")
        rows.append(f"<table class=\"step\"><caption>step {n}: <b>{_e(tok.id_to_piece(s.chosen))}</b></caption>"
                    f"<tr><th>token</th><th>model</th><th>sampled</th></tr>{''.join(cells)}</table>")
    return "\n".join(rows)


def lens_html(res: LensResult, tok: Tokenizer) -> str:
    labels = pieces(tok, res.ids)
    head = "".join(f"<th>{_e(t)}</th>" for t in labels)
    body = []
    for name, ids, probs in zip(res.layers, res.top_ids[..., 0].tolist(), res.top_probs[..., 0].tolist()):
        cells = []
        for t, (i, p) in enumerate(zip(ids, probs)):
            hit = t + 1 < len(res.ids) and res.ids[t + 1] == i  # the guess is the token that really comes next
            style = f"background:rgba(30,90,200,{p:.2f});color:{'#fff' if p > 0.55 else '#000'}"
            cells.append(f"<td style=\"{style}\" title=\"{p:.3f}\">{'<b>' if hit else ''}{_e(tok.id_to_piece(i))}"
                         f"{'</b>' if hit else ''}</td>")
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (f"<p>Each row sends the residual stream after that layer through the final LayerNorm and the "
            f"output head: the cell is that layer's top guess for the next token (shade = probability, "
            f"bold = it is the token that really comes next).</p><table class=\"lens\"><tr><th>layer \\ input</th>"
            f"{head}</tr>{''.join(body)}</table>")


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;border:1px solid #eee}code,.prompt,.piece,.lens td{font-family:ui-monospace,monospace}
.tok{padding:2px 1px;margin:0 1px;border-radius:3px;white-space:pre}.prompt{font-size:1.1em;line-height:2}
table{border-collapse:collapse;margin:.5em 0}.lens td,.lens th{border:1px solid #ddd;padding:2px 4px;
font-size:.85em;text-align:center}.step{display:inline-table;margin:0 1.5em 1em 0;font-size:.85em}
.step td{padding:1px 4px}.bar{display:inline-block;height:.8em;vertical-align:middle}.grey{background:#bbb}
.blue{background:#3470c0}.note{color:#777;font-size:.9em}"""


def html_page(title: str, sections: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> str:
    """One self-contained page: a title, optional notes, and (heading, html body) sections."""
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class=\"note\">{html.escape(n)}</p>" for n in notes]
    parts += [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def image_html(path: str | Path, alt: str) -> str:
    return f"<img src=\"{data_uri(path)}\" alt=\"{html.escape(alt)}\">"


__all__ = ["ROUND", "visible", "pieces", "step_candidates", "finite", "attention_json", "animation_json", "steps_json",
           "lens_json", "saliency_json", "attention_text", "animation_text", "steps_table", "lens_table",
           "saliency_text", "data_uri", "prompt_html", "saliency_html", "steps_html", "lens_html", "html_page",
           "image_html"]
