"""`tinygpt inspect`: every view on a text run and a calculator run, the JSON numbers, and clear errors."""
import json

import pytest
import torch

from conftest import train_tiny

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny character run, a tiny calculator run and a bigram run (a few steps each: shapes, not skill)."""
    from tinygpt.recipes.demo import train_calculator

    root = tmp_path_factory.mktemp("inspect")
    train_tiny(root, "char", 3)
    train_tiny(root, "bigram", 2, "--model=bigram")
    train_calculator(root / "calc", overrides=dict(max_iters=2, batch_size=8, eval_interval=2, eval_iters=1,
                                                   n_layer=2, n_embd=32, device="cpu"))
    return root


def test_attention_png_and_json(cli, runs, tmp_path):
    out, js = tmp_path / "a.png", tmp_path / "a.json"
    code, text, err = cli("inspect", "attention", runs / "char", "--prompt", "ROMEO:\nWhat", "--out", out, "--json", js)
    assert code == 0, err
    assert "2 layer(s) × 2 head(s) over 11 tokens" in text
    data = json.loads(js.read_text())
    assert data["shape"] == [2, 2, 11, 11] and data["tokens"][:5] == list("ROMEO")
    row = data["attention"][1][0][10]
    assert sum(row) == pytest.approx(1, abs=1e-3)
    # the numbers are the model's attention on the prompt's ids, rounded to 4 decimals
    from tinygpt.inspect.interpret import attention_maps
    from tinygpt.training.run import load_checkpoint
    model, tok, _ = load_checkpoint(runs / "char")
    assert data["ids"] == tok.encode("ROMEO:\nWhat")
    assert torch.tensor(data["attention"]) == pytest.approx(attention_maps(model, data["ids"]), abs=6e-5)
    from PIL import Image

    from tinygpt.inspect import viz
    w, h = viz.attention_figsize(2, 2, 11)
    assert Image.open(out).size == (round(w * viz.DPI), round(h * viz.DPI))


def test_one_layer_one_head_and_bad_indices(cli, runs, tmp_path):
    code, _, err = cli("inspect", "attention", runs / "char", "--prompt", "What", "--out", tmp_path / "b.png",
                       "--layer", "1", "--head", "0")
    assert code == 0, err
    code, _, err = cli("inspect", "attention", runs / "char", "--prompt", "What", "--layer", "5")
    assert code == 2 and "--layer 5 is out of range: the model has 2 layer(s)" in err and "Traceback" not in err


def test_bigram_attention_is_a_clear_error(cli, runs, tmp_path):
    code, _, err = cli("inspect", "attention", runs / "bigram", "--prompt", "What", "--out", tmp_path / "x.png")
    assert code == 2 and "bigram model has no attention" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
    # saliency still makes sense: only the last token can matter
    code, text, _ = cli("inspect", "saliency", runs / "bigram", "--prompt", "What", "--json")
    assert code == 0 and json.loads(text)["scores"][:3] == [0, 0, 0]


def test_animate_gif_has_one_frame_per_token(cli, runs, tmp_path):
    out = tmp_path / "a.gif"
    code, _, err = cli("inspect", "animate", runs / "char", "--prompt", "ROMEO:", "--out", out,
                       "--max_new_tokens", "4", "--seed", "1", "--json", tmp_path / "a.json")
    assert code == 0, err
    from PIL import Image, ImageSequence
    frames = [f.copy() for f in ImageSequence.Iterator(Image.open(out))]
    assert len(frames) == 5  # the prompt, then one frame per new token
    assert len({f.size for f in frames}) == 1
    data = json.loads((tmp_path / "a.json").read_text())
    assert len(data["frames"]) == 5 and len(data["frames"][-1]) == 10
    # each frame is layer -1 (mean of the heads) on exactly the window the generation read
    from tinygpt.inspect.interpret import attention_maps, trace_generation
    from tinygpt.training.run import load_checkpoint
    model, tok, _ = load_checkpoint(runs / "char")
    trace = trace_generation(model, tok.encode("ROMEO:"), 4, temperature=0.8, seed=1)
    assert data["generated"] == [tok.id_to_piece(i) for i in trace.tokens]
    assert data["windows"] == [list(w) for w in trace.windows + [trace.last_window]] == [[0, n] for n in range(6, 11)]
    seq = trace.prompt + trace.tokens
    for (a, b), frame in zip(data["windows"], data["frames"]):
        want = attention_maps(model, seq[a:b])[-1].mean(0)
        assert torch.tensor(frame) == pytest.approx(want, abs=6e-5)


def test_animation_past_the_window_uses_the_decoders_windows(cli, runs, tmp_path):
    code, text, err = cli("inspect", "animate", runs / "char", "--prompt", "ROMEO: What say you, my lord?",
                          "--max_new_tokens", "12", "--seed", "2", "--json")
    assert code == 0, err
    data = json.loads(text)
    # block_size 32, keep 24: a 29-token prompt fills the window after 3 new tokens, then it slides
    assert data["windows"][:5] == [[0, 29], [0, 30], [0, 31], [0, 32], [9, 33]]
    assert len(data["frames"]) == 13 and [len(f) for f in data["frames"]][3:6] == [32, 24, 25]


def test_steps_terminal_json_png_and_html(cli, runs, tmp_path):
    code, text, _ = cli("inspect", "steps", runs / "char", "--prompt", "ROMEO:", "--max_new_tokens", "3",
                        "--temperature", "1.0", "--top_k", "2", "--seed", "0", "--json")
    data = json.loads(text)
    assert code == 0 and len(data["steps"]) == 3
    for s in data["steps"]:
        assert s["kept"] == 2 and len(s["after"]) == 2 and s["chosen"] in [p for p, _ in s["after"]]
    code, text, _ = cli("inspect", "steps", runs / "char", "--prompt", "ROMEO:", "--max_new_tokens", "2",
                        "--out", tmp_path / "s.png")
    assert code == 0 and "step 2: chose" in text
    from PIL import Image

    from tinygpt.inspect import viz
    w, h = viz.steps_figsize(2)
    assert Image.open(tmp_path / "s.png").size == (round(w * viz.DPI), round(h * viz.DPI))
    code, _, _ = cli("inspect", "steps", runs / "char", "--prompt", "ROMEO:", "--out", tmp_path / "s.html")
    assert code == 0 and "<table" in (tmp_path / "s.html").read_text()
    code, _, err = cli("inspect", "steps", runs / "char", "--prompt", "ROMEO:", "--out", tmp_path / "s.txt")
    assert code == 2 and ".png or .html" in err


def test_logit_lens_and_saliency_on_the_calculator(cli, runs, tmp_path):
    code, text, err = cli("inspect", "logit-lens", runs / "calc", "--prompt", "seven times eight", "--json")
    assert code == 0, err
    data = json.loads(text)
    assert data["tokens"] == ["seven", "times", "eight", "="]  # the question is wrapped as the task expects
    assert data["layers"] == ["embed", "resid.0", "resid.1"]
    code, _, _ = cli("inspect", "logit-lens", runs / "calc", "--prompt", "seven times eight", "--out", tmp_path / "l.png")
    from PIL import Image

    from tinygpt.inspect import viz
    w, h = viz.logit_lens_figsize(3, 4)  # 3 rows (embed, 2 blocks) x 4 positions, with the next-token axis
    assert code == 0 and Image.open(tmp_path / "l.png").size == (round(w * viz.DPI), round(h * viz.DPI))
    code, text, _ = cli("inspect", "saliency", runs / "calc", "--prompt", "seven times eight", "--target", "fifty",
                        "--out", tmp_path / "s.html", "--json")
    data = json.loads(text)
    assert code == 0 and data["target"] == "fifty" and len(data["scores"]) == 4
    assert 'title="' in (tmp_path / "s.html").read_text()
    code, _, err = cli("inspect", "saliency", runs / "calc", "--prompt", "seven times eight", "--target", "fifty six")
    assert code == 2 and "exactly one token" in err
    code, _, err = cli("inspect", "steps", runs / "calc", "--prompt", "seven times 8")
    assert code == 2 and "unknown word" in err


def test_report_is_one_offline_html_file(cli, runs, tmp_path):
    out = tmp_path / "r.html"
    code, _, err = cli("inspect", "report", runs / "calc", "--prompt", "two plus three", "--out", out)
    assert code == 0, err
    page = out.read_text()
    for heading in ("Attention", "Logit lens", "Step by step", "Saliency"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("data:image/png;base64,") == 1 and page.count("data:image/gif;base64,") == 1
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_long_prompt_is_cut_with_a_notice(cli, runs):
    code, text, err = cli("inspect", "logit-lens", runs / "char", "--prompt", "What say you? " * 5)
    assert code == 0 and "the model sees only the last 32" in err


def test_empty_prompt_and_missing_run(cli, runs, tmp_path):
    code, _, err = cli("inspect", "steps", runs / "char", "--prompt", "")
    assert code == 2 and "prompt is empty" in err
    code, _, err = cli("inspect", "attention", tmp_path / "nope", "--prompt", "x")
    assert code == 2 and "Traceback" not in err


def test_outputs_are_checked_before_any_work(cli, runs, tmp_path):
    for view, out in (("animate", "a.png"), ("saliency", "s.png"), ("report", "r.png"), ("attention", "noext")):
        code, _, err = cli("inspect", view, runs / "char", "--prompt", "What", "--out", tmp_path / out)
        assert code == 2 and "--out for" in err and not (tmp_path / out).exists()
    same = tmp_path / "same.png"
    code, _, err = cli("inspect", "attention", runs / "char", "--prompt", "What", "--out", same, "--json", same)
    assert code == 2 and "same file" in err and not same.exists()
    ckpt = runs / "char" / "best"
    before = (ckpt / "config.json").read_bytes()
    code, _, err = cli("inspect", "logit-lens", runs / "char", "--prompt", "What", "--json", ckpt / "config.json")
    assert code == 2 and "checkpoint directory" in err and (ckpt / "config.json").read_bytes() == before
    code, _, err = cli("inspect", "animate", runs / "char", "--prompt", "What", "--fps", "0.001")
    assert code == 2 and "--fps" in err


def test_json_alone_writes_no_image(cli, runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text, _ = cli("inspect", "attention", runs / "char", "--prompt", "What", "--json")
    assert code == 0 and json.loads(text)["shape"][0] == 2 and list(tmp_path.iterdir()) == []


def test_bigram_animation_says_it_has_no_attention(cli, runs, tmp_path):
    code, _, err = cli("inspect", "animate", runs / "bigram", "--prompt", "What", "--out", tmp_path / "a.gif")
    assert code == 2 and "bigram model has no attention" in err


def test_steps_table_always_shows_the_chosen_token(cli, runs):
    code, text, _ = cli("inspect", "steps", runs / "char", "--prompt", "ROMEO:", "--max_new_tokens", "6",
                        "--temperature", "2.0", "--top", "1", "--seed", "3")
    assert code == 0 and text.count("\n▶ ") == 6


def test_report_composes_the_views_from_one_generation(cli, runs, tmp_path, monkeypatch):
    import tinygpt.inspect.views as inspector
    from tinygpt.inspect import interpret

    calls = {"trace": 0, "prompt": 0}
    trace, prompt_ids = interpret.trace_generation, inspector.prompt_ids

    def counted(name, f):
        def g(*a, **k):
            calls[name] += 1
            return f(*a, **k)
        return g

    monkeypatch.setattr(interpret, "trace_generation", counted("trace", trace))
    monkeypatch.setattr(inspector, "prompt_ids", counted("prompt", prompt_ids))
    code, text, _ = cli("inspect", "report", runs / "char", "--prompt", "ROMEO:", "--out", tmp_path / "r.html",
                        "--seed", "4", "--json")
    data = json.loads(text)
    assert code == 0 and calls == {"trace": 1, "prompt": 1}  # one generation, the prompt encoded once
    assert data["animation"]["generated"] == data["steps"]["generated"]
    # each part is exactly what the view alone gives for the same prompt and settings
    for view, key, extra in (("attention", "attention", []), ("logit-lens", "logit_lens", []),
                             ("saliency", "saliency", []), ("steps", "steps", ["--seed", "4"]),
                             ("animate", "animation", ["--seed", "4", "--max_new_tokens", "20"])):
        code, alone, err = cli("inspect", view, runs / "char", "--prompt", "ROMEO:", "--json", *extra)
        assert code == 0, err
        assert json.loads(alone) == data[key], view


def test_bad_numbers_and_devices_are_one_line_errors(cli, runs):
    for args in (["--temperature", "nan"], ["--top_p", "nan"], ["--seed", str(2 ** 70)], ["--device", "foo"]):
        code, _, err = cli("inspect", "steps", runs / "char", "--prompt", "What", *args)
        assert code == 2 and err.startswith("error:") and "Traceback" not in err, args
