import json

import pytest

from conftest import TINY_FLAGS


@pytest.mark.parametrize("cmd", [[], ["train"], ["sample"], ["eval"], ["demo"], ["ladder"], ["plot"], ["corpora"],
                                 ["tokenizer"], ["tokenizer", "train"]])
def test_help(cli, cmd):
    code, out, _ = cli(*cmd, "--help")
    assert code == 0 and out.startswith(" ".join(["usage: tinygpt", *cmd]) + " ")  # this command's own help


def test_help_lists_hyperparameters(cli, tmp_path):
    from tinygpt.config import ALL_KEYS

    _, out, _ = cli("train", "--help")
    for key in ALL_KEYS:
        if key in ("vocab_size", "val_fraction"):  # the BPE size is its own flag; val_fraction is hidden
            continue
        assert f"--{key}" in out, key
        # each flag listed reaches the config, in both forms: a bad value is refused by name
        for form in ([f"--{key}=bogus"], [f"--{key}", "bogus"]):
            code, _, err = cli("train", "--data", tmp_path / "none.txt", "--out", tmp_path / "run", *form)
            assert code == 2 and f"{key}" in _one_line_error(code, err) and "'bogus'" in err, form


def test_train_sample_eval_end_to_end(cli, tmp_path, text_file):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", text_file, "--out", out, "--max_iters", "6", *TINY_FLAGS)
    assert code == 0, err
    code, text, err = cli("sample", out, "--prompt", "ROMEO:", "--max_new_tokens", "20", "--greedy")
    assert code == 0 and text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 20 + 1
    _, text2, _ = cli("sample", out, "--prompt", "ROMEO:", "--max_new_tokens", "20", "--greedy", "--no_cache")
    assert text == text2
    code, text, _ = cli("eval", out, "--json")
    res = json.loads(text)
    assert code == 0 and res["split"] == "val" and res["bits_per_char"] == pytest.approx(res["loss"] / 0.693147, rel=1e-3)
    n_text = len(text_file.read_text(encoding="utf-8"))
    assert res["tokens"] == n_text - int(n_text * 0.9) - 1  # the last 10 % of the characters, less the first
    # resume with a raised max_iters continues from step 6
    code, _, err = cli("train", "--out", out, "--resume", "--max_iters", "8", "--quiet")
    assert code == 0 and "resuming at step 6" in err
    assert json.loads((out / "latest/config.json").read_text())["step"] == 8


def test_config_file_and_both_flag_forms(cli, tmp_path, text_file):
    cfg = tmp_path / "c.toml"
    cfg.write_text('n_layer = 1\nn_embd = 16\nn_head = 2\nmax_iters = 3\n')
    out = tmp_path / "run"
    code, _, err = cli("train", "--config", cfg, "--data", text_file, "--out", out, "--block_size", "8",
                       "--batch_size=2", "--eval_iters=1", "--device=cpu", "--quiet")
    assert code == 0, err
    c = json.loads((out / "latest/config.json").read_text())
    assert (c["model"]["n_layer"], c["model"]["block_size"], c["train"]["batch_size"], c["step"]) == (1, 8, 2, 3)


def _one_line_error(code, err):
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_data(cli, tmp_path):
    out = tmp_path / "run"
    cases = {
        "missing.txt": None,
        "empty.txt": b"",
        "binary.bin": b"\x00\x01\x02\x03" * 100,
        "latin1.txt": "café au lait".encode("latin-1") * 100,
        "short.txt": b"hello world",
    }
    expect = {"missing.txt": "not found", "empty.txt": "empty", "binary.bin": "binary",
              "latin1.txt": "not valid UTF-8", "short.txt": "fewer than block_size"}
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        code, _, err = cli("train", "--data", p, "--out", out, *TINY_FLAGS)
        assert expect[name] in _one_line_error(code, err), name
    empty_dir = tmp_path / "nodata"
    empty_dir.mkdir()
    code, _, err = cli("train", "--data", empty_dir, "--out", out, *TINY_FLAGS)
    assert "no .txt, .jsonl or .parquet files" in _one_line_error(code, err)


def test_bad_config(cli, tmp_path, text_file):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", text_file, "--out", out, "--n_embd=100", "--n_head=3")
    assert "divisible" in _one_line_error(code, err)
    code, _, err = cli("train", "--data", text_file, "--out", out, "--n_lyer=2")
    assert code == 2 and "n_lyer" in err  # argparse: unrecognized arguments
    bad = tmp_path / "bad.toml"
    bad.write_text("n_lyer = 2\n")
    code, _, err = cli("train", "--config", bad, "--data", text_file, "--out", out)
    assert "did you mean n_layer" in _one_line_error(code, err)
    bad.write_text("n_layer = = 2\n")
    code, _, err = cli("train", "--config", bad, "--data", text_file, "--out", out)
    assert "not valid TOML" in _one_line_error(code, err)
    assert not out.exists()


def test_existing_run_is_refused_and_kept(cli, tmp_path, text_file):
    out = tmp_path / "run"
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=2", *TINY_FLAGS)[0] == 0
    before = (out / "latest/model.safetensors").read_bytes()
    code, _, err = cli("train", "--data", text_file, "--out", out, "--max_iters=2", *TINY_FLAGS)
    assert "already holds a run" in _one_line_error(code, err)
    assert (out / "latest/model.safetensors").read_bytes() == before
    code, _, err = cli("train", "--out", out, "--resume", "--n_layer=3")
    assert "cannot change n_layer" in _one_line_error(code, err)
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=2", "--overwrite", *TINY_FLAGS)[0] == 0


def test_damaged_run_directories(cli, tmp_path, text_file):
    out = tmp_path / "run"
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=2", *TINY_FLAGS)[0] == 0
    code, _, err = cli("sample", tmp_path / "nope")
    assert "no such run" in _one_line_error(code, err)
    ck = out / "best"
    (ck / "model.safetensors").write_bytes(b"garbage")
    code, _, err = cli("sample", out)
    assert "corrupted" in _one_line_error(code, err)
    (ck / "config.json").write_text("{")
    code, _, err = cli("sample", out)
    assert "corrupted" in _one_line_error(code, err)
    # a tokenizer from another model
    latest = out / "latest"
    (latest / "tokenizer.json").write_text(json.dumps({"type": "char", "chars": list("abc"), "specials": ["<unk>"]}))
    code, _, err = cli("sample", out, "--checkpoint", "latest")
    assert "does not belong" in _one_line_error(code, err)
    (latest / "tokenizer.json").unlink()
    code, _, err = cli("sample", out, "--checkpoint", "latest")
    assert "not found" in _one_line_error(code, err)
    (latest / "state.pt").write_bytes(b"junk")
    code, _, err = cli("train", "--out", out, "--resume")
    assert _one_line_error(code, err)


def test_bad_sampling_arguments(cli, tmp_path, text_file):
    out = tmp_path / "run"
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=1", *TINY_FLAGS)[0] == 0
    for flags, match in [(["--top_p", "1.5"], "top_p"), (["--temperature", "-1"], "temperature"),
                         (["--top_k", "0"], "top_k")]:
        code, _, err = cli("sample", out, *flags)
        assert match in _one_line_error(code, err)


def test_unknown_characters_warn_once_and_do_not_crash(cli, tmp_path, text_file):
    out = tmp_path / "run"
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=1", *TINY_FLAGS)[0] == 0
    code, text, err = cli("sample", out, "--prompt", "€€ hello ☃", "--max_new_tokens", "3")
    assert code == 0 and err.count("warning:") == 1 and "Traceback" not in err
    assert text.startswith("€€ hello ☃") and len(text) == len("€€ hello ☃") + 3 + 1  # the prompt as typed


def test_plot_makes_a_png_of_the_expected_size(cli, tmp_path, text_file):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert cli("train", "--data", text_file, "--out", out, "--max_iters=6", *TINY_FLAGS)[0] == 0
    code, text, err = cli("plot", out, out, "--labels", "a", "b", "--out", tmp_path / "loss.png")
    assert code == 0, err
    data = (tmp_path / "loss.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (990, 605)
    code, _, err = cli("plot", out, "--labels", "a", "b")
    assert "one label per run" in _one_line_error(code, err)
    code, _, err = cli("plot", tmp_path / "nothing")
    assert "metrics.jsonl" in _one_line_error(code, err)


def test_smoothing_known_answer():
    from tinygpt.inspect.plot import smooth
    assert smooth([1, 3], 0.5) == pytest.approx([1.0, 7 / 3])
    assert smooth([2, 2, 2], 0.9) == pytest.approx([2, 2, 2])


@pytest.mark.slow
def test_demo_sample_eval_on_a_task_checkpoint(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("demo", "--max_iters=20", "--eval_interval=10", "--batch_size=16", "--n_layer=1",
                         "--device=cpu", "--quiet")
    assert code == 0, err
    assert "held-out" in out and "Next, try" in out and (tmp_path / "runs/calculator/best").exists()
    # a second demo never overwrites the first
    code, out, err = cli("demo", "--max_iters=2", "--eval_interval=10", "--batch_size=16", "--n_layer=1",
                         "--device=cpu", "--quiet")
    assert code == 0 and (tmp_path / "runs/calculator-2/best").exists()
    code, answer, err = cli("sample", "runs/calculator", "--prompt", "two plus three")
    assert code == 0 and answer.endswith("\n") and "<eos>" not in answer
    for bad, match in [("", "empty"), ("two plus banana", "unknown word 'banana'"), ("ROMEO:", "unknown word"),
                       ("two hundred plus one", "out of range")]:
        code, _, err = cli("sample", "runs/calculator", "--prompt", bad)
        assert match in _one_line_error(code, err)
    code, text, _ = cli("eval", "runs/calculator", "--json")
    res = json.loads(text)
    assert set(res["heldout"]) == {"plus", "minus"} and res["train"]["times"]["total"] == 169
