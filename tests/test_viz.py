"""viz.py: every picture is written, has exactly the size its *_figsize function promises, and long inputs are cut."""
import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageSequence  # noqa: E402

from tinygpt.inspect import viz  # noqa: E402

TEXT = "ROMEO:\nWhat say you, my lord? I have $5$ here.\nJULIET:\nO Romeo, Romeo! wherefore art thou?"


def readable(s: str) -> list[str]:
    """What the caller does before drawing: one label per token, whitespace made visible."""
    return [c.replace("\n", "\\n").replace(" ", "␣") for c in s]


LABELS = readable(TEXT)


def causal_maps(L: int, H: int, T: int, seed: int = 0) -> torch.Tensor:
    """Random attention weights (L, H, T, T): softmaxed rows, zero above the diagonal, like attention_maps."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, H, T, T, generator=g) * 2
    return scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def pixels(figsize: tuple[float, float]) -> tuple[int, int]:
    return round(figsize[0] * viz.DPI), round(figsize[1] * viz.DPI)


def size_of(path) -> tuple[int, int]:
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        return im.size


@pytest.mark.parametrize("layer, head, rows, cols", [(None, None, 2, 3), (1, None, 1, 3), (None, 2, 2, 1),
                                                     (0, 1, 1, 1), (-1, -1, 1, 1)])
def test_attention_grid_has_the_promised_size(tmp_path, layer, head, rows, cols):
    T = 7
    out = viz.attention_grid(causal_maps(2, 3, T), LABELS[:T], tmp_path / "a.png", layer=layer, head=head)
    assert out == tmp_path / "a.png"
    assert size_of(out) == pixels(viz.attention_figsize(rows, cols, T))


def test_attention_grid_cuts_long_inputs_to_max_tokens(tmp_path):
    long = viz.attention_grid(causal_maps(2, 3, 60), LABELS[:60], tmp_path / "long.png", layer=0, head=1)
    short = viz.attention_grid(causal_maps(2, 3, 48), LABELS[:48], tmp_path / "short.png", layer=0, head=1)
    assert size_of(long) == size_of(short) == pixels(viz.attention_figsize(1, 1, 48))
    cut = viz.attention_grid(causal_maps(1, 2, 60), LABELS[:60], tmp_path / "cut.png", max_tokens=10)
    assert size_of(cut) == pixels(viz.attention_figsize(1, 2, 10))


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_attention_grid_pixels_change_exactly_where_the_attention_does(tmp_path):
    T = 6
    maps = causal_maps(1, 1, T)
    other = maps.clone()
    other[0, 0, 4] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # one row (query 4) now reads key 2 only
    a = png(viz.attention_grid(maps, LABELS[:T], tmp_path / "a.png"))
    b = png(viz.attention_grid(other, LABELS[:T], tmp_path / "b.png"))
    ys, xs = np.nonzero(np.abs(a - b).max(-1) > 0)
    side = viz._attention_panel(1, 1, T)
    cell, left, top = side / T * viz.DPI, viz.ATT_LEFT * viz.DPI, viz._attention_top(1, 1) * viz.DPI
    assert abs(ys.min() - (top + 4 * cell)) <= 2 and abs(ys.max() - (top + 5 * cell)) <= 2  # row 4 only
    assert xs.min() >= left - 1 and xs.max() <= left + 5 * cell + 1  # the causal part of the row (keys 0..4)


def test_attention_grid_refuses_wrong_labels_and_layers(tmp_path):
    maps = causal_maps(2, 3, 7)
    with pytest.raises(ValueError, match="labels has 6 entries"):
        viz.attention_grid(maps, LABELS[:6], tmp_path / "a.png")
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        viz.attention_grid(maps, LABELS[:7], tmp_path / "a.png", layer=2)


def test_figures_stay_under_30_inches_and_panels_grow_with_T():
    for w, h in [viz.attention_figsize(12, 12, 48), viz.attention_figsize(1, 16, 48), viz.animation_figsize(48),
                 viz.logit_lens_figsize(13, 48), viz.steps_figsize(12)]:
        assert w <= 30 and h <= 30
    assert viz.attention_figsize(1, 1, 40)[0] > viz.attention_figsize(1, 1, 10)[0]
    assert viz.animation_figsize(30)[0] > viz.animation_figsize(10)[0]


def generation_frames(prompt_len: int, new: int, L: int = 2, H: int = 3, block: int = 1000):
    """Frames and windows as interpret.generation_attention makes them, with a window of `block` tokens
    that keeps its last 3/4 when it slides."""
    from tinygpt.generation.decoder import prompt_start, slide

    full = causal_maps(L, H, prompt_len + new, seed=1)
    start = prompt_start(prompt_len, block)
    frames, windows = [], []
    for n in range(prompt_len, prompt_len + new + 1):
        start = slide(start, n, block) if n > prompt_len else start
        part = full[:, :, start:n, start:n]
        frames.append(part / part.sum(-1, keepdim=True))
        windows.append((start, n))
    return frames, windows


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")).astype(int) for f in ImageSequence.Iterator(im)]


@pytest.mark.parametrize("head", [None, 1])
def test_animation_has_one_same_sized_frame_per_step_and_holds_the_last(tmp_path, head):
    P, N = 5, 4
    frames, windows = generation_frames(P, N)
    out = viz.attention_animation(frames, LABELS[:P + N], tmp_path / "a.gif", windows, head=head, fps=4)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.info.get("loop") == 0
        sizes, durations = [], []
        for frame in ImageSequence.Iterator(im):
            sizes.append(frame.size)
            durations.append(frame.info["duration"])
    assert len(sizes) == len(frames) == N + 1
    assert set(sizes) == {pixels(viz.animation_figsize(P + N))}
    assert durations[:-1] == [250] * N and durations[-1] == 750


def highlight_box(img: np.ndarray, left: float, top: float, side: float, pad: int = 4):
    """Pixel rows and columns of the HIGHLIGHT outline inside the heatmap (inches from the top-left corner)."""
    rgb = np.array([int(viz.HIGHLIGHT[i:i + 2], 16) for i in (1, 3, 5)])
    x0, y0, x1, y1 = (round(v * viz.DPI) for v in (left, top, left + side, top + side))
    area = img[y0 - pad:y1 + pad, x0 - pad:x1 + pad]
    ys, xs = np.nonzero(np.abs(area - rgb).max(-1) < 40)
    return ys.min() + y0 - pad, ys.max() + y0 - pad, xs.min() + x0 - pad, xs.max() + x0 - pad


def test_animation_outlines_the_newest_tokens_row_in_every_frame(tmp_path):
    """Frame i outlines row w-1 across its w columns: the newest token, whatever the window has done."""
    P, N, block = 3, 6, 5  # the window slides (keeps 3) at the 6th token
    frames, windows = generation_frames(P, N, L=1, H=1, block=block)
    assert [b - a for a, b in windows] == [3, 4, 5, 3, 4, 5, 3]
    out = viz.attention_animation(frames, LABELS[:P + N], tmp_path / "a.gif", windows, layer=0)
    images = gif_frames(out)
    assert len(images) == len(windows)
    W = block  # the widest window
    side = viz._animation_panel(W)
    cell = side / W * viz.DPI
    for img, (a, b) in zip(images, windows):
        w = b - a
        y0, y1, x0, x1 = highlight_box(img, viz.ANIM_LEFT, viz.ANIM_TOP, side)
        row_top = viz.ANIM_TOP * viz.DPI + (w - 1) * cell
        assert abs(y0 - row_top) <= 3 and abs(y1 - (row_top + cell)) <= 3
        assert abs(x0 - viz.ANIM_LEFT * viz.DPI) <= 3 and abs(x1 - (viz.ANIM_LEFT * viz.DPI + w * cell)) <= 3


def test_animation_of_a_long_sequence_shows_the_last_max_tokens(tmp_path):
    P, N = 55, 5
    frames, windows = generation_frames(P, N, L=1, H=2)
    out = viz.attention_animation(frames, LABELS[:P + N], tmp_path / "a.gif", windows, layer=0)
    with Image.open(out) as im:
        assert im.n_frames == len(frames)
        assert im.size == pixels(viz.animation_figsize(48))
    with pytest.raises(ValueError, match="labels cover"):
        viz.attention_animation(frames, LABELS[:P], tmp_path / "b.gif", windows)
    with pytest.raises(ValueError, match="one window"):
        viz.attention_animation(frames, LABELS[:P + N], tmp_path / "b.gif", windows[:-1])


def lens_inputs(n_layers: int, T: int):
    g = torch.Generator().manual_seed(2)
    layers = ["embed"] + [f"resid.{i}" for i in range(n_layers - 1)]
    pieces = [[LABELS[(t + l + 1) % len(LABELS)] + "x" * (l % 3) for t in range(T)] for l in range(n_layers)]
    probs = torch.rand(n_layers, T, generator=g)
    return layers, pieces, probs, LABELS[:T], LABELS[1:T] + [""]


def test_logit_lens_grid_has_the_promised_size_with_or_without_next_tokens(tmp_path):
    layers, pieces, probs, labels, nxt = lens_inputs(3, 7)
    out = viz.logit_lens_grid(layers, pieces, probs, labels, tmp_path / "a.png", next_labels=nxt)
    assert size_of(out) == pixels(viz.logit_lens_figsize(3, 7))
    # LensResult.top_probs is (L + 1, T, k): its first candidate is used
    out = viz.logit_lens_grid(layers, pieces, probs[..., None].expand(-1, -1, 4), labels, tmp_path / "b.png")
    assert size_of(out) == pixels(viz.logit_lens_figsize(3, 7, with_next=False))


def test_logit_lens_grid_cuts_long_inputs_to_max_tokens(tmp_path):
    layers, pieces, probs, labels, nxt = lens_inputs(3, 60)
    long = viz.logit_lens_grid(layers, pieces, probs, labels, tmp_path / "long.png", next_labels=nxt)
    layers, pieces, probs, labels, nxt = lens_inputs(3, 48)
    short = viz.logit_lens_grid(layers, pieces, probs, labels, tmp_path / "short.png", next_labels=nxt)
    assert size_of(long) == size_of(short) == pixels(viz.logit_lens_figsize(3, 48))
    with pytest.raises(ValueError, match="one row per layer"):
        viz.logit_lens_grid(layers[:2], pieces, probs, labels, tmp_path / "bad.png")


def make_steps(n: int) -> list[dict]:
    rows = [("e", 0.4, 0.6), ("␣", 0.2, 0.25), ("a", 0.15, 0.15), ("\\n", 0.1, 0.0), ("$", 0.05, 0.0)]
    chosen = ["e", "␣", "a", "q"]  # "q" is in neither list: drawn from its own probabilities
    steps = []
    for i in range(n):
        c = chosen[i % 4]
        cands = [(p, b, a, p == c) for p, b, a in rows] + ([("q", 0.01, 0.0, True)] if c == "q" else [])
        steps.append({"chosen": c, "candidates": cands})
    return steps


@pytest.mark.parametrize("n, drawn", [(1, 1), (3, 3), (15, 12)])
def test_steps_chart_has_the_promised_size(tmp_path, n, drawn):
    out = viz.steps_chart(make_steps(n), tmp_path / "s.png")
    assert size_of(out) == pixels(viz.steps_figsize(drawn))


def test_steps_chart_needs_steps(tmp_path):
    with pytest.raises(ValueError, match="no generation steps"):
        viz.steps_chart([], tmp_path / "s.png")


def test_a_failed_write_keeps_the_old_file(tmp_path):
    from tinygpt.files import atomic_path
    out = tmp_path / "keep.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.png"]
