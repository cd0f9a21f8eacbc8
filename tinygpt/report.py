"""Text views of what interpret.py computes: terminal tables and colours, and self-contained HTML.

Pure string building, no plotting library: every function takes readable token pieces and plain numbers
and returns a string. viz.py draws the images; the HTML report embeds them as data URIs so one file works
offline.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

# --- token pieces ----------------------------------------------------------------------------------

_VISIBLE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(piece: str) -> str:
    """A token as it should be printed in a table: whitespace made visible ("␣", "\\n"), never empty."""
    return "".join(_VISIBLE.get(c, c) for c in piece) or "∅"


def _bar(p: float, width: int = 20) -> str:
    """A probability as a bar of block characters: _bar(0.5, 4) == '██'."""
    full = p * width
    n = int(full)
    eighths = int((full - n) * 8)
    return "█" * n + ("▏▎▍▌▋▊▉"[eighths - 1] if eighths else "")


# --- terminal ------------------------------------------------------------------------------------

def step_candidates(s: dict) -> list[tuple[str, float, float]]:
    """(piece, model probability, sampled probability) of a step's top candidates in the model's order, then
    any the filters promoted into view, then the chosen token if it is in neither list."""
    before, after = dict(s["before"]), dict(s["after"])
    rows = [(p, q, after.get(p, 0.0)) for p, q in s["before"]]
    rows += [(p, before.get(p, 0.0), q) for p, q in s["after"] if p not in before]
    if s["chosen"] not in before and s["chosen"] not in after:
        rows.append((s["chosen"], s.get("chosen_before", 0.0), s.get("chosen_after", 0.0)))
    return rows


def steps_table(steps: Sequence[dict], settings: dict) -> str:
    """The step-by-step view: for each generated token, the top candidates with their probability before
    and after the sampling settings, and the one chosen (▶). steps: dicts with "chosen", "before", "after"
    (lists of (piece, prob)), "chosen_before", "chosen_after", "kept"."""
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None) or "defaults"
    lines = [f"sampling: {shown}   (model = raw probabilities; sampled = after the settings)"]
    for i, s in enumerate(steps, start=1):
        lines.append(f"\nstep {i}: chose '{visible(s['chosen'])}'  (model {s['chosen_before']:.3f} -> sampled "
                     f"{s['chosen_after']:.3f}; {s['kept']} token{'s' if s['kept'] != 1 else ''} left to sample from)")
        lines.append(f"  {'token':<12} {'model':>6}  {'':<20} {'sampled':>7}")
        for piece, p, q in step_candidates(s):
            mark = "▶" if piece == s["chosen"] else " "
            lines.append(f"{mark} {visible(piece)[:12]:<12} {p:6.3f}  {_bar(p):<20} {q:7.3f}  {_bar(q)}")
    return "\n".join(lines)


def lens_table(layers: Sequence[str], top_pieces: Sequence[Sequence[str]], top_probs: Sequence[Sequence[float]],
               labels: Sequence[str], max_columns: int = 10) -> str:
    """The logit lens as text: one row per layer, one column per input position (the last max_columns),
    each cell the layer's top next-token guess and its probability in percent."""
    T = len(labels)
    cols = list(range(max(0, T - max_columns), T))
    cell = 7  # characters of each guess; a column is "guess  99%  "
    width = cell + 7
    out = []
    if cols[0] > 0:
        out.append(f"(the last {len(cols)} of {T} positions)")
    out.append(f"{'input →':>9} " + "".join(f"{visible(labels[t])[:width - 1]:<{width}}" for t in cols))
    for name, pieces, probs in zip(layers, top_pieces, top_probs):
        cells = "".join(f"{visible(pieces[t])[:cell]:<{cell}} {probs[t] * 100:3.0f}%  " for t in cols)
        out.append(f"{name:>9} {cells}")
    return "\n".join(out)


def saliency_terminal(pieces: Sequence[str], scores: Sequence[float], color: bool = True) -> str:
    """The prompt with each token's background coloured by its score (green pushes towards the target,
    red away; stronger colour, larger share), followed by the five most influential tokens."""
    top = max((abs(s) for s in scores), default=0.0) or 1.0
    parts = []
    for piece, s in zip(pieces, scores):
        text = visible(piece)
        if color:
            level = min(5, int(round(abs(s) / top * 5)))
            # 256-colour backgrounds: greens 22,28,34,40,46 / reds 52,88,124,160,196
            bg = (22, 28, 34, 40, 46)[level - 1] if s > 0 else (52, 88, 124, 160, 196)[level - 1]
            parts.append(f"\x1b[48;5;{bg}m\x1b[97m{text}\x1b[0m" if level else text)
        else:
            parts.append(f"[{text} {s:+.2f}]")
    ranked = sorted(range(len(scores)), key=lambda i: -abs(scores[i]))[:5]
    rank = "  ".join(f"'{visible(pieces[i])}' {scores[i]:+.3f}" for i in ranked)
    return " ".join(parts) + f"\nmost influential: {rank}"


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


def saliency_html(pieces: Sequence[str], scores: Sequence[float], target: str, method: str) -> str:
    top = max((abs(s) for s in scores), default=0.0)
    spans = "".join(f'<span class="tok" style="background:{_shade(s, top)}" title="{s:+.4f}">{_e(p)}</span>'
                    for p, s in zip(pieces, scores))
    return (f"<p>Which prompt tokens pushed the model towards <b>{_e(target)}</b> ({html.escape(method)}; green "
            f"raised its logit, red lowered it; hover for the score):</p><p class=\"prompt\">{spans}</p>")


def steps_html(steps: Sequence[dict], settings: dict) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None) or "defaults"
    rows = [f"<p>Sampling settings: <code>{html.escape(shown)}</code>. Grey bar: the model's probability; "
            f"blue bar: the probability the token was drawn with. ▶ marks the token chosen.</p>"]
    for i, s in enumerate(steps, start=1):
        cells = []
        for piece, p, q in step_candidates(s):
            mark = "▶ " if piece == s["chosen"] else ""
            cells.append(f"<tr><td class=\"piece\">{mark}{_e(piece)}</td>"
                         f"<td><div class=\"bar grey\" style=\"width:{p * 200:.1f}px\"></div> {p:.3f}</td>"
                         f"<td><div class=\"bar blue\" style=\"width:{q * 200:.1f}px\"></div> {q:.3f}</td></tr>")
        rows.append(f"<table class=\"step\"><caption>step {i}: <b>{_e(s['chosen'])}</b></caption>"
                    f"<tr><th>token</th><th>model</th><th>sampled</th></tr>{''.join(cells)}</table>")
    return "\n".join(rows)


def lens_html(layers: Sequence[str], top_pieces: Sequence[Sequence[str]], top_probs: Sequence[Sequence[float]],
              labels: Sequence[str], next_labels: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for t in labels)
    body = []
    for name, pieces, probs in zip(layers, top_pieces, top_probs):
        cells = []
        for t, (piece, p) in enumerate(zip(pieces, probs)):
            hit = t < len(next_labels) and next_labels[t] == piece
            style = f"background:rgba(30,90,200,{p:.2f});color:{'#fff' if p > 0.55 else '#000'}"
            cells.append(f"<td style=\"{style}\" title=\"{p:.3f}\">{'<b>' if hit else ''}{_e(piece)}"
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


def finite(x: float) -> float | None:
    """JSON has no NaN or infinity: None instead."""
    return x if math.isfinite(x) else None


__all__ = ["visible", "step_candidates", "steps_table", "lens_table", "saliency_terminal", "data_uri", "saliency_html",
           "steps_html", "lens_html", "html_page", "image_html", "finite"]
