"""`tinygpt sample` on text runs: beams and stop strings through the same engine as the library, the
tokenizer's end-of-text id passed on, and one-line errors for flags that contradict each other."""
import pytest

from conftest import TINY_FLAGS, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny character run (a few steps: what it says does not matter, only that CLI and library agree)."""
    root = tmp_path_factory.mktemp("sample")
    train_tiny(root, "char", 4)
    return root


def loaded(path):
    from tinygpt.training.run import load_checkpoint

    model, tokenizer, _ = load_checkpoint(path)
    return model, tokenizer


@pytest.mark.parametrize("flags, fragment", [
    (["--num_beams", "0"], "--num_beams"), (["--num_beams", "-3"], "--num_beams"),
    (["--stop", ""], "--stop needs a non-empty string"), (["--prompt_file", "x.txt"], "not both"),
    (["--greedy", "--temperature", "0.7"], "--greedy means temperature 0"),
    (["--num_beams", "3", "--top_k", "5"], "drop --top_k"), (["--num_beams", "3", "--seed", "1"], "drop --seed"),
    (["--num_beams", "3", "--top_p", "0.9", "--temperature", "1"], "drop --temperature, --top_p"),
    (["--num_beams", "2", "--num_samples", "2"], "--num_samples"),
    (["--max_new_tokens", "-1"], "--max_new_tokens"), (["--num_samples", "0"], "--num_samples")])
def test_contradictory_or_meaningless_flags_are_one_line_errors(cli, run, flags, fragment):
    code, out, err = cli("sample", run / "char", "--prompt", "RO", *flags)
    assert code == 2 and out == "" and err.startswith("error:") and err.count("\n") == 1 and fragment in err, err


def test_greedy_with_temperature_zero_is_fine_and_equals_the_library(cli, run):
    from tinygpt.generation.generate import generate_text

    model, tok = loaded(run / "char")
    want = "RO" + "".join(generate_text(model, tok, "RO", 30, temperature=0)) + "\n"
    for flags in (["--greedy"], ["--greedy", "--temperature", "0"], ["--temperature", "0"], ["--greedy", "--no_cache"]):
        code, out, err = cli("sample", run / "char", "--prompt", "RO", "--max_new_tokens", "30", *flags)
        assert code == 0 and out == want, (flags, err)


def test_beams_equal_the_library_search_with_and_without_cache(cli, run):
    from tinygpt.generation.generate import beam_search, beam_search_text

    model, tok = loaded(run / "char")
    text, best = beam_search_text(model, tok, "ROMEO:", 40, num_beams=3)[0]
    assert best.tokens == beam_search(model, tok.encode("ROMEO:"), 40, num_beams=3)[0].tokens
    for extra in ([], ["--no_cache"]):
        code, out, err = cli("sample", run / "char", "--prompt", "ROMEO:", "--num_beams", "3", "--max_new_tokens", "40",
                             *extra)
        assert code == 0 and out == "ROMEO:" + text + "\n", err


def test_stop_strings_end_beams(cli, run):
    from tinygpt.generation.generate import beam_search_text

    model, tok = loaded(run / "char")
    free, _ = beam_search_text(model, tok, "ROMEO:", 40, num_beams=3)[0]
    stop = free[len(free) // 2]  # a character the unstopped best beam writes
    text, beam = beam_search_text(model, tok, "ROMEO:", 40, num_beams=3, stop=[stop])[0]
    assert stop not in text and stop in tok.decode(beam.tokens)  # the beam ended at its stop string
    code, out, err = cli("sample", run / "char", "--prompt", "ROMEO:", "--num_beams", "3", "--max_new_tokens", "40",
                         "--stop", stop)
    assert code == 0 and out == "ROMEO:" + text + "\n", err


@pytest.mark.slow
def test_the_tokenizers_end_of_text_id_reaches_beams_and_sampling(cli, run, monkeypatch, text_file):
    import importlib
    import inspect

    generate = importlib.import_module("tinygpt.generation.generate")
    sample = importlib.import_module("tinygpt.cli.sample")

    tok_file = run / "bpe.json"
    code, _, err = cli("tokenizer", "train", "--data", text_file, "--vocab_size", "280", "--special", "<|endoftext|>",
                       "--out", tok_file)
    assert code == 0, err
    assert cli("train", "--data", text_file, "--out", run / "bpe", "--tokenizer", tok_file, "--max_iters=1",
               *TINY_FLAGS)[0] == 0
    _, tok = loaded(run / "bpe")
    eos = tok.special_ids["<|endoftext|>"]
    seen = []
    for name in ("beam_search_text", "generate_text"):
        real = getattr(generate, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, list(inspect.signature(_real).bind(*args, **kwargs).arguments.get("eos_ids", []))))
            return _real(*args, **kwargs)

        monkeypatch.setattr(generate, name, spy)
        if hasattr(sample, name):  # the command's own name for it, where it imports it at the top
            monkeypatch.setattr(sample, name, spy)
    assert cli("sample", run / "bpe", "--prompt", "the", "--num_beams", "2", "--max_new_tokens", "5")[0] == 0
    assert cli("sample", run / "bpe", "--prompt", "the", "--max_new_tokens", "5", "--seed", "0")[0] == 0
    assert seen == [("beam_search_text", [eos]), ("generate_text", [eos])]
