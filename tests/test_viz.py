"""viz.py: every picture is written, has exactly the size its *_figsize function promises, and long inputs are cut."""
import pytest
import torch

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageSequence  # noqa: E402

from tinygpt import viz  # noqa: E402

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


def generation_frames(prompt_len: int, new: int, L: int = 2, H: int = 3) -> list[torch.Tensor]:
    full = causal_maps(L, H, prompt_len + new, seed=1)
    frames = []
    for n in range(prompt_len, prompt_len + new + 1):
        part = full[:, :, :n, :n]
        frames.append(part / part.sum(-1, keepdim=True))
    return frames


@pytest.mark.parametrize("head", [None, 1])
def test_animation_has_one_same_sized_frame_per_step_and_holds_the_last(tmp_path, head):
    P, N = 5, 4
    frames = generation_frames(P, N)
    out = viz.attention_animation(frames, LABELS[:P + N], tmp_path / "a.gif", prompt_len=P, head=head, fps=4)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.info.get("loop") == 0
        sizes, durations = [], []
        for frame in ImageSequence.Iterator(im):
            sizes.append(frame.size)
            durations.append(frame.info["duration"])
    assert len(sizes) == len(frames)
    assert set(sizes) == {pixels(viz.animation_figsize(P + N))}
    assert durations[:-1] == [250] * N and durations[-1] == 750


def test_animation_of_a_long_sequence_shows_the_last_max_tokens(tmp_path):
    P, N = 55, 5
    frames = generation_frames(P, N, L=1, H=2)
    out = viz.attention_animation(frames, LABELS[:P + N], tmp_path / "a.gif", prompt_len=P, layer=0)
    with Image.open(out) as im:
        assert im.n_frames == len(frames)
        assert im.size == pixels(viz.animation_figsize(48))
    with pytest.raises(ValueError, match="labels cover"):
        viz.attention_animation(frames, LABELS[:P], tmp_path / "b.gif", prompt_len=P)


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
    # LogitLens.top_probs is (L + 1, T, k): its first candidate is used
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
    before = [("e", 0.4), ("␣", 0.2), ("a", 0.15), ("\\n", 0.1), ("$", 0.05)]
    after = [("e", 0.6), ("␣", 0.25), ("a", 0.15)]
    chosen = ["e", "␣", "a", "q"]  # "q" is in neither list: drawn from its own probabilities
    return [{"chosen": chosen[i % 4], "before": before, "after": after, "chosen_before": 0.01, "chosen_after": 0.0}
            for i in range(n)]


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
