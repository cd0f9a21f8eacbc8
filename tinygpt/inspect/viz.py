"""Pictures of what interpret.py measures: attention heatmaps and the logit lens grid (PNG), attention while
generating (GIF), and the sampling step chart (PNG).

matplotlib and Pillow are optional (pip install 'tinygpt[viz]') and imported inside the functions; pyplot is
never used, so drawing changes no global backend and leaks no figures. Every function takes token labels the
caller already made readable (e.g. "\\n", "␣") and writes one file, returning its path.

Sizes are exact: a fixed DPI, no tight bounding box, and figure sizes in quarter inches, so an image is exactly
`*_figsize(...) * DPI` pixels. The `*_figsize` functions take the number of positions actually drawn:
min(T, max_tokens), since a long input shows only its last `max_tokens` positions (the title says so).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from tinygpt.files import atomic_path

DPI = 100
MAX_INCHES = 29.5       # keep every side under ~30 inches (quarter-inch rounding adds at most 0.25)
CMAP = "viridis"        # sequential; cells that cannot be read (the causal future) are left white
HIGHLIGHT = "#e4572e"   # the newest token in the animation, the chosen token in the steps chart
LABEL_CHARS = 8         # token labels on axes are cut to this many characters (the margins are sized for it)


# ---------------------------------------------------------------------------------------------- helpers

def _figure(size: tuple[float, float]):
    """A matplotlib Figure of exactly `size` inches with an Agg canvas (no pyplot, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("drawing needs matplotlib: pip install 'tinygpt[viz]'") from None
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("animations need Pillow: pip install 'tinygpt[viz]'") from None
    return Image


def _cmap():  # matplotlib: the viz extra, as _figure
    import matplotlib
    return matplotlib.colormaps[CMAP].with_extremes(bad="white")


def _quarter(inches: float) -> float:
    """Round up to a quarter inch: exact in binary, so inches * DPI is a whole number of pixels."""
    return math.ceil(inches * 4 - 1e-9) / 4


def _array(x) -> np.ndarray:
    """A tensor (any device, any float dtype) or array as a float numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _text(s: str, n: int = LABEL_CHARS) -> str:
    """A label safe to draw: control characters spelled out, at most n characters, "$" not read as math."""
    s = str(s).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(s) > n:
        s = s[:n - 1] + "…"
    return s.replace("$", r"\$")


def _index(i: int, n: int, what: str) -> int:
    if not -n <= i < n:
        raise ValueError(f"{what} {i} does not exist: the maps have {n} {what}s (0..{n - 1}, or negative from the end)")
    return i % n


def _check_labels(labels: Sequence[str], T: int, what: str = "labels") -> None:
    if len(labels) != T:
        raise ValueError(f"{what} has {len(labels)} entries but the data covers {T} positions")


def _notice(T: int, shown: int) -> str:
    return f" (last {shown} of {T} tokens)" if shown < T else ""


def _causal(m: np.ndarray) -> np.ndarray:
    """(T, T) weights with the unreadable future (above the diagonal, exactly zero) as NaN, drawn white."""
    m = m.copy()
    m[np.triu(np.ones(m.shape, dtype=bool), 1) & (m == 0)] = np.nan
    return m


def _axes(fig, size, left: float, bottom: float, width: float, height: float):
    """Axes placed in inches from the figure's bottom-left corner."""
    W, H = size
    return fig.add_axes((left / W, bottom / H, width / W, height / H))


def _ticks(n: int, cell_inches: float) -> tuple[list[int], float]:
    """Which of n positions get a label, and the font size, so that neighbouring labels never overlap."""
    pitch = cell_inches * 72 / 1.25  # the font size (points) that fills one cell
    step = 1 if pitch >= 5.5 else math.ceil(5.5 / pitch)
    return list(range(n - 1, -1, -step))[::-1], min(9.0, pitch * step)


def _title(fig, size, text: str, sub: str | None = None, fontsize: float = 13):
    """A centred title at the top (wrapped to the figure's width) and an optional smaller line below it."""
    W, H = size
    lines = textwrap.wrap(text, max(20, int((W - 0.3) * 72 / (0.58 * fontsize))))
    t = fig.text(0.5, 1 - 0.1 / H, "\n".join(lines), ha="center", va="top", fontsize=fontsize)
    if sub:
        y = 0.1 + len(lines) * fontsize * 1.2 / 72 + 0.05
        sub = "\n".join(textwrap.wrap(sub, max(20, int((W - 0.3) * 72 / (0.58 * 9)))))
        fig.text(0.5, 1 - y / H, sub, ha="center", va="top", fontsize=9, color="#444444")
    return t


def _colorbar(fig, size, im, left: float, bottom: float, height: float, label: str):
    cbar = fig.colorbar(im, cax=_axes(fig, size, left, bottom, 0.18, height))
    cbar.set_label(label, fontsize=10)
    cbar.ax.tick_params(labelsize=8)
    return cbar


def _label_room(labels: Sequence[str], fontsize: float) -> float:
    """Inches taken by the longest tick label (plus tick and padding), to put an axis title right after it."""
    return max((len(s.replace("\\$", "$")) for s in labels), default=1) * 0.65 * fontsize / 72 + 0.1


def _query_key_titles(fig, size, left: float, bottom: float, width: float, height: float, room: float):
    """The axis titles of attention heatmaps, just outside the tick labels of a block of panels (inches)."""
    W, H = size
    fig.text((left + width / 2) / W, (bottom - room - 0.05) / H, "key: the position being read", ha="center",
             va="top", fontsize=11)
    fig.text((left - room - 0.05) / W, (bottom + height / 2) / H, "query: the position reading", rotation=90,
             ha="right", va="center", fontsize=11)


def _save(fig, out) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:  # a failed save never leaves a broken file where a good one was
        fig.savefig(tmp, dpi=DPI, format=out.suffix[1:] or "png")  # NOTE: never bbox_inches="tight" (exact sizes)
    return out


# ---------------------------------------------------------------------------------------- attention grid

ATT_LEFT, ATT_RIGHT, ATT_BOTTOM = 1.1, 1.1, 1.05  # inches around the grid of panels (labels of 8 characters)
ATT_GAP_W, ATT_GAP_H = 0.3, 0.45                  # between panels (room for a panel title)


def _attention_top(n_rows: int, n_cols: int) -> float:
    """Inches above the panels: the title and subtitle, plus the panel titles when there are several panels."""
    return 0.9 if n_rows == n_cols == 1 else 1.05


def _attention_panel(n_rows: int, n_cols: int, T: int) -> float:
    """Side of one square heatmap in inches: grows with T, shrinks so the figure stays under MAX_INCHES."""
    want = max(4.0, 0.3 * T) if n_rows == n_cols == 1 else max(2.2, 0.22 * T)
    fit_w = (MAX_INCHES - ATT_LEFT - ATT_RIGHT - (n_cols - 1) * ATT_GAP_W) / n_cols
    fit_h = (MAX_INCHES - _attention_top(n_rows, n_cols) - ATT_BOTTOM - (n_rows - 1) * ATT_GAP_H) / n_rows
    return max(0.6, min(want, fit_w, fit_h))


def attention_figsize(n_rows: int, n_cols: int, T: int) -> tuple[float, float]:
    """Figure size (inches) of attention_grid with n_rows x n_cols panels of T drawn positions each."""
    p = _attention_panel(n_rows, n_cols, T)
    return (_quarter(ATT_LEFT + n_cols * p + (n_cols - 1) * ATT_GAP_W + ATT_RIGHT),
            _quarter(_attention_top(n_rows, n_cols) + n_rows * p + (n_rows - 1) * ATT_GAP_H + ATT_BOTTOM))


def attention_grid(maps, labels: list[str], out, layer: int | None = None, head: int | None = None,
                   title: str | None = None, max_tokens: int = 48) -> Path:
    """Heatmaps of attention weights (n_layer, n_head, T, T): every layer x head (default), one layer's heads
    side by side (layer=), one head in every layer (head=), or a single map (both). Row = query (the position
    reading), column = key (the position read); layers and heads are numbered from 0."""
    a = _array(maps)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"maps must be (n_layer, n_head, T, T), got shape {tuple(a.shape)}")
    L, H, T, _ = a.shape
    _check_labels(labels, T)
    layers = list(range(L)) if layer is None else [_index(layer, L, "layer")]
    heads = list(range(H)) if head is None else [_index(head, H, "head")]
    shown = min(T, max_tokens)
    a, labels = a[..., T - shown:, T - shown:], list(labels)[T - shown:]

    rows, cols = len(layers), len(heads)
    size = attention_figsize(rows, cols, shown)
    p = _attention_panel(rows, cols, shown)
    fig = _figure(size)
    top = size[1] - _attention_top(rows, cols)
    idx, fs = _ticks(shown, p / shown)
    names = [_text(labels[i]) for i in idx]
    cmap = _cmap()
    for r, li in enumerate(layers):
        for c, hj in enumerate(heads):
            ax = _axes(fig, size, ATT_LEFT + c * (p + ATT_GAP_W), top - (r + 1) * p - r * ATT_GAP_H, p, p)
            im = ax.imshow(_causal(a[li, hj]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            if rows * cols > 1:
                ax.set_title(f"layer {li}, head {hj}", fontsize=10 if p >= 1.8 else 8, pad=4)
            ax.set_xticks(idx, names, rotation=90, fontsize=fs)
            ax.set_yticks(idx, names, fontsize=fs)
            ax.tick_params(length=2, pad=2, labelbottom=r == rows - 1, labelleft=c == 0)
    grid_w, grid_h = cols * p + (cols - 1) * ATT_GAP_W, rows * p + (rows - 1) * ATT_GAP_H
    _colorbar(fig, size, im, ATT_LEFT + grid_w + 0.25, top - grid_h, grid_h, "attention weight")
    _query_key_titles(fig, size, ATT_LEFT, top - grid_h, grid_w, grid_h, _label_room(names, fs))
    what = (f"layer {layers[0]}, head {heads[0]}" if rows * cols == 1 else
            f"layer {layers[0]}, every head" if rows == 1 and layer is not None else
            f"head {heads[0]}, every layer" if cols == 1 and head is not None else "every layer and head")
    sub = "each row sums to 1" if shown == T else f"each row sums to 1 over all {T} tokens"
    sub += " · white: the future, not visible"
    if title is None:
        title = f"Attention weights, {what}"
    else:  # the caller's title (e.g. the model's name); what is drawn goes in the subtitle
        sub = f"{what} · {sub}"
    _title(fig, size, title + _notice(T, shown), sub)
    return _save(fig, out)


# ------------------------------------------------------------------------------------ attention animation

ANIM_LEFT, ANIM_RIGHT, ANIM_BOTTOM, ANIM_TOP = 1.1, 1.1, 1.05, 0.8


def _animation_panel(T: int) -> float:
    return min(max(4.5, 0.2 * T), MAX_INCHES - ANIM_LEFT - ANIM_RIGHT)


def animation_figsize(T: int) -> tuple[float, float]:
    """Figure size (inches) of every frame of attention_animation with T drawn positions."""
    p = _animation_panel(T)
    return _quarter(ANIM_LEFT + p + ANIM_RIGHT), _quarter(ANIM_BOTTOM + p + ANIM_TOP)


def attention_animation(frames, labels: list[str], out, windows: Sequence[tuple[int, int]], layer: int = -1,
                        head: int | None = None, fps: float = 2.0, max_tokens: int = 48) -> Path:
    """An animated GIF of attention while generating: frame i holds maps (n_layer, n_head, t, t) computed on
    labels[a:b], (a, b) = windows[i] (interpret.generation_attention: the windows the Decoder read; frame 0
    is the prompt). head=None shows the mean over heads. The newest token's row is outlined; the last frame
    is held 3x longer."""
    maps = _animation_maps(frames, windows, fps)
    L, H = maps[0].shape[:2]
    li = _index(layer, L, "layer")
    hj = None if head is None else _index(head, H, "head")
    total = max(b for _, b in windows)
    if len(labels) < total:
        raise ValueError(f"labels cover {len(labels)} tokens but the windows reach position {total}")
    stage = _AnimationStage(min(max(b - a for a, b in windows), max_tokens), labels[:total])
    what = f"head {hj}" if hj is not None else f"mean of {H} heads"
    images = []
    for i, (m, (_, n)) in enumerate(zip(maps, windows)):
        weights = m[li].mean(0) if hj is None else m[li, hj]  # (t, t) on labels[n - t:n]
        w = min(weights.shape[-1], stage.W)
        step = (f"step 0: the prompt ({n} tokens)" if i == 0 else
                f"step {i}: generated '{_text(labels[n - 1], 12)}'")
        images.append(stage.frame(weights, labels[n - w:n], f"layer {li}, {what}{_notice(n, w)} — {step}"))
    return _write_gif(images, out, fps)


def _animation_maps(frames, windows: Sequence[tuple[int, int]], fps: float) -> list[np.ndarray]:
    """The frames as arrays, refused (ValueError) unless each is (n_layer, n_head, t, t) with a window (a, b) of
    b - a == t positions, and fps is a sensible speed."""
    if not frames:
        raise ValueError("no frames to animate")
    if not 0.1 <= fps <= 50:  # also refuses NaN
        raise ValueError(f"fps must be between 0.1 and 50, got {fps}")
    maps = [_array(f) for f in frames]
    if any(m.ndim != 4 or m.shape[-1] != m.shape[-2] for m in maps):
        raise ValueError("every frame must be (n_layer, n_head, t, t)")
    if len(windows) != len(maps) or any(m.shape[-1] != b - a for m, (a, b) in zip(maps, windows)):
        raise ValueError("need one window (start, end) per frame, each as long as its frame")
    return maps


class _AnimationStage:
    """One figure for every frame of an animation W positions wide. The static part (frame, tick marks,
    colorbar, axis titles) is drawn once; the artists marked animated (heatmap, outline, token labels, title)
    are redrawn on top of it for each frame (blitting). `labels`: every token the frames show, for the room
    the axis titles leave for the longest."""

    def __init__(self, W: int, labels: list[str]):
        from matplotlib.patches import Rectangle  # the viz extra, as _figure
        from matplotlib.transforms import offset_copy

        self.W, size, p = W, animation_figsize(W), _animation_panel(W)
        self.fig = fig = _figure(size)
        self.ax = ax = _axes(fig, size, ANIM_LEFT, size[1] - ANIM_TOP - p, p, p)
        self.im = ax.imshow(np.full((W, W), np.nan), cmap=_cmap(), vmin=0, vmax=1, interpolation="nearest",
                            aspect="auto", animated=True)
        self.idx, fs = _ticks(W, p / W)
        ax.set_xticks(self.idx, [""] * len(self.idx))
        ax.set_yticks(self.idx, [""] * len(self.idx))
        ax.tick_params(length=2)
        below = offset_copy(ax.get_xaxis_transform(), fig, y=-4, units="points")
        left = offset_copy(ax.get_yaxis_transform(), fig, x=-4, units="points")
        self.xlabels = [ax.text(k, 0, "", transform=below, rotation=90, ha="center", va="top", fontsize=fs,
                                animated=True) for k in self.idx]
        self.ylabels = [ax.text(0, k, "", transform=left, ha="right", va="center", fontsize=fs, animated=True)
                        for k in self.idx]
        self.box = ax.add_patch(Rectangle((-0.5, -0.5), W, 1, fill=False, edgecolor=HIGHLIGHT, linewidth=2.5,
                                          clip_on=False, animated=True))
        _colorbar(fig, size, self.im, ANIM_LEFT + p + 0.25, size[1] - ANIM_TOP - p, p, "attention weight")
        _query_key_titles(fig, size, ANIM_LEFT, size[1] - ANIM_TOP - p, p, p,
                          _label_room([_text(s) for s in labels], fs))
        self.title = _title(fig, size, "")
        self.title.set_animated(True)
        fig.canvas.draw()
        self.background = fig.canvas.copy_from_bbox(fig.bbox)
        self.chars = max(20, int((size[0] - 0.3) * 72 / (0.58 * 13)))  # the title's line length, as _title's

    def frame(self, weights: np.ndarray, names: list[str], title: str):
        """The picture of weights (t, t), cut to its last w = len(names) positions, with the newest (last)
        token's row outlined, as an RGB Pillow image."""
        W, w, fig = self.W, len(names), self.fig
        t = weights.shape[-1]
        grid = np.full((W, W), np.nan)
        grid[:w, :w] = _causal(weights[t - w:, t - w:])
        self.im.set_data(grid)
        shown = [_text(s) for s in names] + [""] * (W - w)
        for k, xl, yl in zip(self.idx, self.xlabels, self.ylabels):
            for lab in (xl, yl):
                lab.set_text(shown[k])
                lab.set_color(HIGHLIGHT if k == w - 1 else "black")
                lab.set_fontweight("bold" if k == w - 1 else "normal")
        self.box.set_xy((-0.5, w - 1.5))
        self.box.set_width(w)
        self.title.set_text(textwrap.fill(title, self.chars))
        fig.canvas.restore_region(self.background)
        for artist in (self.im, *self.ax.spines.values(), self.box, self.title, *self.xlabels, *self.ylabels):
            fig.draw_artist(artist)  # the spines back over the image
        return _pil().frombuffer("RGBA", fig.canvas.get_width_height(), bytes(fig.canvas.buffer_rgba()), "raw",
                                 "RGBA", 0, 1).convert("RGB")


def _write_gif(images: list, out, fps: float) -> Path:
    """The frames as a looping GIF, fps frames a second, the last held 3x longer. One palette for all frames,
    taken from the fullest (last) one: GIF needs <= 256 colours, and mapping onto a fixed palette is much faster
    than Pillow's per-frame median cut."""
    Image = _pil()
    palette = images[-1].quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    ms = 1000 / fps
    out = Path(out)
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=[ms] * (len(images) - 1) + [3 * ms])
    return out


# -------------------------------------------------------------------------------------------- logit lens

LENS_LEFT, LENS_RIGHT, LENS_BOTTOM = 1.15, 1.15, 1.05
LENS_TOP, LENS_TOP_NEXT = 0.85, 1.8  # above the grid: titles; with next_labels also the top axis of next tokens
LENS_CHARS = 6  # characters of the top-1 token written in each cell


def _lens_cells(n_layers: int, T: int) -> tuple[float, float]:
    """(width, height) of one cell in inches: wide enough for LENS_CHARS characters, capped to fit."""
    w = min(max(0.62, 4.0 / T), (MAX_INCHES - LENS_LEFT - LENS_RIGHT) / T)
    h = min(0.42, (MAX_INCHES - LENS_TOP_NEXT - LENS_BOTTOM) / n_layers)
    return w, h


def logit_lens_figsize(n_layers: int, T: int, with_next: bool = True) -> tuple[float, float]:
    """Figure size (inches) of logit_lens_grid with n_layers rows ("embed" included) and T drawn positions;
    with_next: whether next_labels were given (they take a row of labels above the grid)."""
    w, h = _lens_cells(n_layers, T)
    top = LENS_TOP_NEXT if with_next else LENS_TOP
    return _quarter(LENS_LEFT + T * w + LENS_RIGHT), _quarter(top + max(n_layers * h, 1.2) + LENS_BOTTOM)


def logit_lens_grid(layers: list[str], top_pieces: list[list[str]], top_probs, labels: list[str], out,
                    next_labels: list[str] | None = None, max_tokens: int = 48) -> Path:
    """What each layer would predict: rows are layers ("embed" first, at the top; the last row is the model's
    output), columns are input positions. Each cell shows the top-1 next token and is coloured by its
    probability. top_probs: (L + 1, T), or LensResult.top_probs (L + 1, T, k) whose first candidate is used.
    next_labels[t]: the token that actually follows position t ("" if unknown); matching cells are bold."""
    probs = _array(top_probs)
    if probs.ndim == 3:
        probs = probs[..., 0]
    if probs.ndim != 2 or probs.shape[0] != len(layers) or len(top_pieces) != len(layers):
        raise ValueError(f"need one row per layer: {len(layers)} layers, {len(top_pieces)} rows of pieces, "
                         f"top_probs of shape {tuple(probs.shape)}")
    n, T = probs.shape
    _check_labels(labels, T)
    for row in top_pieces:
        _check_labels(row, T, "a row of top_pieces")
    if next_labels is not None:
        _check_labels(next_labels, T, "next_labels")
    shown = min(T, max_tokens)
    cut = T - shown
    probs = probs[:, cut:]
    pieces = [list(row)[cut:] for row in top_pieces]
    labels = list(labels)[cut:]
    nxt = None if next_labels is None else list(next_labels)[cut:]

    size = logit_lens_figsize(n, shown, with_next=nxt is not None)
    cw, ch = _lens_cells(n, shown)
    gh = max(n * ch, 1.2)
    fig = _figure(size)
    bottom = size[1] - (LENS_TOP if nxt is None else LENS_TOP_NEXT) - gh
    ax = _axes(fig, size, LENS_LEFT, bottom, shown * cw, gh)
    cmap = _cmap()
    im = ax.imshow(probs, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    fs = max(6.0, min(9.0, cw * 72 / (LENS_CHARS * 0.62)))
    for l in range(n):
        for t in range(shown):
            r, g, b, _ = cmap(float(probs[l, t]))
            dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45
            hit = nxt is not None and nxt[t] != "" and pieces[l][t] == nxt[t]
            ax.text(t, l, _text(pieces[l][t], LENS_CHARS), ha="center", va="center", fontsize=fs,
                    color="white" if dark else "black", fontweight="bold" if hit else "normal")
    ax.set_xticks(range(shown), [_text(s) for s in labels], rotation=90, fontsize=9)
    ax.set_yticks(range(n), [_text(s, 10) for s in layers], fontsize=9)
    ax.tick_params(length=2, pad=2)
    ax.set_xlabel("input token (position)", fontsize=10)
    ax.set_ylabel("layer", fontsize=10)
    if nxt is not None:
        top = ax.secondary_xaxis("top")
        top.set_xticks(range(shown), [_text(s) for s in nxt], rotation=90, fontsize=9)
        top.tick_params(length=2, pad=2)
        top.set_xlabel("token that actually comes next", fontsize=10)
    _colorbar(fig, size, im, LENS_LEFT + shown * cw + 0.25, bottom, gh, "top-1 probability")
    sub = "rows: embed at the top, the model's output at the bottom · cell: that layer's top-1 next token, " \
          "coloured by its probability"
    if nxt is not None:
        sub += " · bold: it is the token that actually comes next"
    _title(fig, size, "Logit lens: what each layer would predict" + _notice(T, shown), sub)
    return _save(fig, out)


# ------------------------------------------------------------------------------------------- steps chart

STEP_W, STEP_H, STEP_GAP_W, STEP_GAP_H = 3.0, 2.4, 1.3, 0.85
STEP_LEFT, STEP_RIGHT, STEP_TOP, STEP_BOTTOM = 1.25, 0.35, 1.2, 0.5
STEP_COLS, STEP_MIN_WIDTH, MAX_CANDIDATES = 4, 7.0, 8


def _steps_grid(n_steps: int) -> tuple[int, int, float]:
    """(rows, cols, panel width in inches) for n_steps panels; one or two panels are widened to STEP_MIN_WIDTH."""
    cols = min(STEP_COLS, max(1, n_steps))
    rows = math.ceil(max(1, n_steps) / cols)
    fill = (STEP_MIN_WIDTH - STEP_LEFT - STEP_RIGHT - (cols - 1) * STEP_GAP_W) / cols
    return rows, cols, max(STEP_W, fill)


def steps_figsize(n_steps: int) -> tuple[float, float]:
    """Figure size (inches) of steps_chart with n_steps drawn panels (min(len(steps), max_steps))."""
    rows, cols, w = _steps_grid(n_steps)
    return (_quarter(STEP_LEFT + cols * w + (cols - 1) * STEP_GAP_W + STEP_RIGHT),
            _quarter(STEP_TOP + rows * STEP_H + (rows - 1) * STEP_GAP_H + STEP_BOTTOM))


def _candidates(step: dict) -> list[tuple[str, float, float, bool]]:
    """At most MAX_CANDIDATES of a step's candidates, in order, the chosen one always among them."""
    rows = list(step["candidates"])
    if len(rows) > MAX_CANDIDATES:
        chosen = next(r for r in rows if r[3])
        rows = rows[:MAX_CANDIDATES] if chosen in rows[:MAX_CANDIDATES] else rows[:MAX_CANDIDATES - 1] + [chosen]
    return rows


def steps_chart(steps: list[dict], out, max_steps: int = 12) -> Path:
    """One panel per generated token: the top candidates' probability before filtering (grey) and after
    temperature / top-k / top-p (colour), the chosen one marked with ▶. steps: dicts with "chosen" (its
    label) and "candidates": [(label, probability before, after, is the chosen one), ...] in drawing order
    (report.step_candidates with ids turned into labels)."""
    if not steps:
        raise ValueError("no generation steps to draw")
    drawn = steps[:max_steps]
    rows, cols, pw = _steps_grid(len(drawn))
    size = steps_figsize(len(drawn))
    fig = _figure(size)
    top = size[1] - STEP_TOP
    for i, step in enumerate(drawn):
        r, c = divmod(i, cols)
        ax = _axes(fig, size, STEP_LEFT + c * (pw + STEP_GAP_W), top - (r + 1) * STEP_H - r * STEP_GAP_H, pw, STEP_H)
        rows = _candidates(step)
        before, after = [r[1] for r in rows], [r[2] for r in rows]
        y = np.arange(len(rows))
        ax.barh(y - 0.2, before, height=0.38, color="#c9c9c9", label="before filtering (the model's softmax)")
        ax.barh(y + 0.2, after, height=0.38, color="#2a78b5", label="after temperature / top-k / top-p")
        for k in range(len(rows)):
            ax.text(after[k] + 0.02, y[k] + 0.2, f"{after[k]:.2f}", va="center", fontsize=7, color="#1b4f78")
        ax.set_yticks(y, [("▶ " if chosen else "") + _text(p) for p, _, _, chosen in rows], fontsize=9)
        for (_, _, _, chosen), lab in zip(rows, ax.get_yticklabels()):
            if chosen:
                lab.set_color(HIGHLIGHT)
                lab.set_fontweight("bold")
        ax.set_ylim(len(rows) - 0.45, -0.55)  # first candidate on top
        ax.set_xlim(0, 1.15)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(length=2, pad=2)
        ax.set_xlabel("probability", fontsize=8, labelpad=1)
        ax.set_title(f"step {i + 1}: chose '{_text(step['chosen'], 12)}'", fontsize=10, pad=4)
        if i == 0:
            handles, names = ax.get_legend_handles_labels()
    notice = f" (first {len(drawn)} of {len(steps)} steps)" if len(steps) > len(drawn) else ""
    t = _title(fig, size, "Generation step by step: top candidates for each new token" + notice)
    lines = t.get_text().count("\n") + 1
    fig.legend(handles, names, loc="upper center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1 - (0.12 + lines * 13 * 1.2 / 72) / size[1]))
    return _save(fig, out)


__all__ = ["DPI", "attention_figsize", "attention_grid", "animation_figsize", "attention_animation",
           "logit_lens_figsize", "logit_lens_grid", "steps_figsize", "steps_chart"]
