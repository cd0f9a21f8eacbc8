"""No command prints a Python traceback for any input a user can type: a table of bad inputs through
`tinygpt.cli.main` (in-process, fast) and a few through `python -m tinygpt`, each answered with its exit code
and one `error:` line on stderr. Also a closed stdout pipe, Ctrl-C during start-up, and control characters
echoed in errors."""
from __future__ import annotations

import contextlib
import io
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from faultkit import FLAGS, error_line, make_text, only_line, spawn
from tinygpt.cli.main import main
from tinygpt.training.run import Run, load_checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Files a user might point at, and one small trained run that the cases only read."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "input.txt").write_text(make_text(), encoding="utf-8")
    (root / "other.txt").write_text(make_text(seed=1), encoding="utf-8")
    (root / "binary.dat").write_bytes(bytes(range(256)) * 8)
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("café au lait, s'il vous plaît\n".encode("latin-1") * 50)
    (root / "no_text").mkdir()
    (root / "bad.toml").write_text("n_layer = = 2\n")
    (root / "unknown_key.toml").write_text("n_layers = 2\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_CACHE", str(root / "cache"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", "--data", str(root / "input.txt"), "--out", str(root / "run"), *FLAGS,
                         "--max_iters=4"])
        assert code == 0, err.getvalue()
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a path that wrongly means "here" must never reach the working tree


def fill_in(args: list[str], world: Path, tmp_path: Path) -> list[str]:
    """{w} is the shared world (read-only), {t} this test's own directory (fresh --out paths)."""
    return [a.replace("{w}", str(world)).replace("{t}", str(tmp_path)) for a in args]


TRAIN = ["train", "--data", "{w}/input.txt", "--out", "{t}/r"]

# (id, argv, words the one error line must hold); every case exits 2
CASES = [
    # unknown options, abbreviations, stray words
    ("lr-alias", TRAIN + ["--lr=3000"], "unknown option --lr (did you mean --learning_rate?)"),
    ("abbreviation", TRAIN + ["--max_iter=3"], "unknown option --max_iter (did you mean --max_iters?)"),
    ("unknown-flag", TRAIN + ["--bogus_flag"], "unknown option --bogus_flag"),
    ("stray-word", TRAIN + ["stray"], "unexpected argument 'stray'"),
    ("no-command", [], "required: COMMAND"),
    ("bad-command", ["trian"], "did you mean 'train'?"),
    ("corpora-flag", ["corpora", "--bogus"], "unknown option --bogus"),
    # numbers out of range (train, eval, sample)
    ("lr-inf", TRAIN + ["--learning_rate=inf"], "learning_rate must be a finite number"),
    ("lr-nan", TRAIN + ["--learning_rate=nan"], "learning_rate must be a finite number"),
    ("lr-negative", TRAIN + ["--learning_rate=-1"], "learning_rate must be >= 0"),
    ("lr-no-value", TRAIN + ["--learning_rate"], "--learning_rate needs a value: --learning_rate=V"),
    ("dtype-no-value", TRAIN + ["--dtype"], "--dtype needs a value: --dtype=V"),
    ("batch-zero", TRAIN + ["--batch_size=0"], "batch_size must be > 0"),
    ("iters-zero", TRAIN + ["--max_iters=0"], "max_iters must be > 0"),
    ("int-not-number", TRAIN + ["--n_layer=abc"], "invalid value for n_layer: 'abc'"),
    ("seed-negative", TRAIN + ["--seed=-1"], "seed must be between 0 and 2**63 - 1"),
    ("dropout-one", TRAIN + ["--dropout=1"], "dropout must be in [0, 1)"),
    ("weight-decay-nan", TRAIN + ["--weight_decay=nan"], "weight_decay must be a finite number"),
    ("heads-divide", TRAIN + ["--n_head=3"], "divisible by n_head"),
    ("model-name", TRAIN + ["--model=transformer"], "model must be one of"),
    ("dtype-name", TRAIN + ["--dtype=float8"], "dtype must be one of"),
    ("device-name", TRAIN + ["--device=tpu"], "device must be one of"),
    ("bool-value", TRAIN + ["--compile=maybe"], "invalid value for compile: 'maybe'"),
    ("vocab-zero", TRAIN + ["--vocab_size=0"], "--vocab_size: must be a whole number > 0"),
    ("vocab-for-char", TRAIN + ["--vocab_size=300"], "applies to BPE tokenizers only"),
    ("embd-1e9", TRAIN + ["--n_embd=1e9"], "is too large for any machine"),
    ("memory-refusal", TRAIN + ["--n_embd=65536", "--n_head=1", "--n_layer=12"], "GB is available on"),
    ("block-too-long", TRAIN + ["--block_size=100000"], "fewer than block_size + 1"),
    ("eval-batch-negative", ["eval", "{w}/run", "--batch_size", "-1"], "--batch_size: must be a whole number > 0"),
    ("eval-batch-word", ["eval", "{w}/run", "--batch_size", "abc"], "must be a whole number, got 'abc'"),
    ("sample-tokens-negative", ["sample", "{w}/run", "--max_new_tokens", "-1"], "--max_new_tokens"),
    ("sample-temperature-nan", ["sample", "{w}/run", "--temperature", "nan"], "temperature"),
    ("sample-top-k-zero", ["sample", "{w}/run", "--top_k", "0"], "top_k"),
    ("sample-top-p-two", ["sample", "{w}/run", "--top_p", "2"], "top_p"),
    ("sample-seed-negative", ["sample", "{w}/run", "--seed", "-1"], "--seed"),
    ("sample-device", ["sample", "{w}/run", "--device", "tpu"], "unknown device 'tpu'"),
    ("sample-checkpoint", ["sample", "{w}/run", "--checkpoint", "worst"], "unknown choice 'worst'"),
    # files: missing, a directory, binary, empty, not UTF-8, a bad corpus name, bad configs
    ("data-missing", ["train", "--data", "{t}/nope.txt", "--out", "{t}/r"], "data file not found"),
    ("data-directory", ["train", "--data", "{w}/no_text", "--out", "{t}/r"], "holds no .txt, .jsonl or .parquet files"),
    ("data-binary", ["train", "--data", "{w}/binary.dat", "--out", "{t}/r"], "looks binary"),
    ("data-empty", ["train", "--data", "{w}/empty.txt", "--out", "{t}/r"], "is empty"),
    ("data-latin1", ["train", "--data", "{w}/latin1.txt", "--out", "{t}/r"], "is not valid UTF-8"),
    ("data-empty-name", ["train", "--data", "", "--out", "{t}/r"], "--data is required"),
    ("corpus-name", ["train", "--data", "shakespear", "--out", "{t}/r"], "not a file, a folder or a corpus name"),
    ("config-missing", ["train", "--config", "{t}/nope.toml", "--data", "{w}/input.txt", "--out", "{t}/r"],
     "config file not found"),
    ("config-bad-toml", ["train", "--config", "{w}/bad.toml", "--data", "{w}/input.txt", "--out", "{t}/r"],
     "is not valid TOML"),
    ("config-unknown-key", ["train", "--config", "{w}/unknown_key.toml", "--data", "{w}/input.txt", "--out", "{t}/r"],
     "unknown config key 'n_layers' (did you mean n_layer?)"),
    ("tokenizer-missing", TRAIN + ["--tokenizer", "{t}/nope.json"], "tokenizer file not found"),
    ("tokenizer-not-json", TRAIN + ["--tokenizer", "{w}/input.txt"], "is not valid JSON"),
    ("tokenizer-kind", TRAIN + ["--tokenizer", "words"], "unknown tokenizer 'words'"),
    ("preset-name", TRAIN + ["--preset", "tiny"], "did you mean 'tiny_char'?"),
    # --out: missing, empty, a file, a run already there; contradicting options
    ("out-missing", ["train", "--data", "{w}/input.txt"], "required: --out"),
    ("out-empty", ["train", "--data", "{w}/input.txt", "--out", "", *FLAGS, "--max_iters=1"],
     "--out: is empty"),
    ("out-a-file", ["train", "--data", "{w}/input.txt", "--out", "{w}/input.txt"], "exists and is not a directory"),
    ("out-holds-run", ["train", "--data", "{w}/input.txt", "--out", "{w}/run"], "already holds a run"),
    ("resume-and-overwrite", ["train", "--out", "{w}/run", "--resume", "--overwrite"], "contradict each other"),
    ("resume-nothing", ["train", "--out", "{t}/none", "--resume"], "nothing to resume"),
    ("resume-tokenizer", ["train", "--out", "{w}/run", "--resume", "--tokenizer", "bpe"], "keeps its tokenizer"),
    ("resume-preset", ["train", "--out", "{w}/run", "--resume", "--preset", "tiny_char"],
     "--preset tiny_char sets what this run does not have: n_layer 4 (the run has 1), n_head 4 (the run has 2), "
     "n_embd 128 (the run has 16) and 9 more; a resumed run keeps its settings: drop --preset"),
    ("resume-architecture", ["train", "--out", "{w}/run", "--resume", "--n_layer=3"], "cannot change n_layer"),
    ("resume-other-data", ["train", "--out", "{w}/run", "--resume", "--data", "{w}/other.txt"],
     "is not the text this run was trained on"),
    ("change-data-alone", TRAIN + ["--change_data"], "--change_data applies only with --resume"),
    # runs that are not runs, and the other commands' arguments
    ("sample-not-a-run", ["sample", "{w}/no_text"], "holds no checkpoint"),
    ("sample-missing", ["sample", "{t}/nope"], "no such run or checkpoint directory"),
    ("sample-empty-name", ["sample", ""], "the run directory name is empty"),
    ("sample-a-file", ["sample", "{w}/input.txt"], "is not a directory"),
    ("sample-prompt-file-missing", ["sample", "{w}/run", "--prompt_file", "{t}/nope.txt"], "nope.txt"),
    ("eval-missing", ["eval", "{t}/nope"], "no such run or checkpoint directory"),
    ("eval-binary-data", ["eval", "{w}/run", "--data", "{w}/binary.dat"], "looks binary"),
    ("eval-empty-data", ["eval", "{w}/run", "--data", "{w}/empty.txt"], "is empty"),
    ("eval-split", ["eval", "{w}/run", "--split", "bogus"], "unknown choice 'bogus'"),
    ("inspect-no-prompt", ["inspect", "steps", "{w}/run"], "required: --prompt"),
    ("inspect-view", ["inspect", "bogus", "{w}/run", "--prompt", "to"], "unknown choice 'bogus'"),
    ("inspect-layer", ["inspect", "attention", "{w}/run", "--prompt", "to", "--layer", "5"],
     "--layer 5 is out of range"),
    ("inspect-out-suffix", ["inspect", "attention", "{w}/run", "--prompt", "to", "--out", "{t}/x.txt"],
     "must end in .png"),
    ("inspect-fps-nan", ["inspect", "animate", "{w}/run", "--prompt", "to", "--fps", "nan"], "--fps"),
    ("inspect-temperature", ["inspect", "steps", "{w}/run", "--prompt", "to", "--temperature", "-1"], "temperature"),
    ("inspect-not-a-run", ["inspect", "steps", "{w}/no_text", "--prompt", "to"], "holds no checkpoint"),
    # tokenizer subcommands with bad paths
    ("tok-encode-missing", ["tokenizer", "encode", "{t}/nope.json", "--text", "hi"], "tokenizer file not found"),
    ("tok-encode-not-json", ["tokenizer", "encode", "{w}/input.txt", "--text", "hi"], "is not valid JSON"),
    ("tok-stats-missing", ["tokenizer", "stats", "{t}/nope.json", "--data", "{w}/input.txt"],
     "tokenizer file not found"),
    ("tok-stats-data", ["tokenizer", "stats", "{w}/run/latest/tokenizer.json", "--data", "{t}/nope.txt"],
     "data file not found"),
    ("tok-train-data", ["tokenizer", "train", "--data", "{t}/nope.txt", "--vocab_size", "300", "--out", "{t}/t.json"],
     "data file not found"),
    ("tok-train-vocab", ["tokenizer", "train", "--data", "{w}/input.txt", "--vocab_size", "10", "--out", "{t}/t.json"],
     "below 256"),
    ("tok-export-missing", ["tokenizer", "export", "{t}/nope.json", "--format", "hf", "--out", "{t}/o"],
     "tokenizer file not found"),
    ("tok-export-char", ["tokenizer", "export", "{w}/run/latest/tokenizer.json", "--format", "hf", "--out", "{t}/o"],
     "only byte-level BPE tokenizers can be exported"),
    # plot, demo, ladder
    ("plot-missing-run", ["plot", "{t}/nope"], "has no metrics.jsonl"),
    ("plot-labels", ["plot", "{w}/run", "--labels", "a", "b", "--out", "{t}/p.png"], "one label per run"),
    ("plot-format", ["plot", "{w}/run", "--out", "{t}/p.txt"], "give an image file name ending in .png"),
    ("ladder-out-empty", ["ladder", "--data", "{w}/input.txt", "--out", ""], "--out: is empty"),
    ("demo-out-holds-run", ["demo", "--out", "{w}/run"], "already holds a run"),
    ("ladder-data", ["ladder", "--data", "{t}/nope.txt", "--out", "{t}/l"], "data file not found"),
    ("ladder-rung", ["ladder", "--data", "{w}/input.txt", "--rungs", "bogus", "--out", "{t}/l"],
     "unknown rung 'bogus'"),
    # control characters typed into names and prompts come back escaped
    ("ctrl-data-name", ["train", "--data", "{t}/in\x1b[31m.txt", "--out", "{t}/r"], "in\\x1b[31m.txt"),
    ("ctrl-prompt-file", ["sample", "{w}/run", "--prompt_file", "{t}/\x07bell.txt"], "\\x07bell.txt"),
    ("ctrl-option", TRAIN + ["--lr\x1b=3"], "--lr\\x1b"),
    ("ctrl-saliency-target", ["inspect", "saliency", "{w}/run", "--prompt", "to", "--target", "\x1b[2Jzz"],
     "'\\x1b[2Jzz'"),
    # flags that contradict each other in sample / inspect
    ("sample-prompt-and-file", ["sample", "{w}/run", "--prompt", "a", "--prompt_file", "{w}/input.txt"], "not both"),
    ("sample-greedy-temperature", ["sample", "{w}/run", "--greedy", "--temperature", "0.5"], "--greedy"),
    ("sample-beams-zero", ["sample", "{w}/run", "--num_beams", "0"], "--num_beams"),
    ("sample-stop-empty", ["sample", "{w}/run", "--stop", ""], "--stop"),
    ("sample-num-samples-zero", ["sample", "{w}/run", "--num_samples", "0"], "--num_samples"),
    ("inspect-prompt-and-file", ["inspect", "steps", "{w}/run", "--prompt", "a", "--prompt_file", "{w}/input.txt"],
     "not both"),
    ("tok-train-out-dir", ["tokenizer", "train", "--data", "{w}/input.txt", "--vocab_size", "300", "--out",
                           "{w}/no_text"], "is a directory"),
    ("plot-out-dir", ["plot", "{w}/run", "--out", "{w}/no_text"], "is a directory"),
]
# cases where notices come before the error line (the tokenizer built, the demo's introduction, a warning)
NOTICES = {"embd-1e9", "memory-refusal", "demo-out-holds-run", "ctrl-saliency-target"}
KNOWN = {  # cases not implemented yet, or bugs outside the files this suite's change touched
    "inspect-prompt-and-file": "inspect has no --prompt_file yet: an unknown option, not the conflict",
}


def _param(case):
    marks = [pytest.mark.xfail(strict=False, reason=KNOWN[case[0]])] if case[0] in KNOWN else []
    return pytest.param(*case[1:], case[0] in NOTICES, id=case[0], marks=marks)


@pytest.mark.parametrize("argv, words, notices", [_param(c) for c in CASES])
def test_bad_input_is_one_error_line(world, tmp_path, cli, argv, words, notices):
    code, _, err = cli(*fill_in(argv, world, tmp_path))
    assert code == 2, err
    line = error_line(err) if notices else only_line(err)
    assert words in line, line
    assert not (tmp_path / "r").exists() or not Run(tmp_path / "r").holds_run()  # refused runs write nothing


# --- a damaged run: every command that reads it says which file ---------------------------------------

DAMAGE = {
    "config-not-json": ("config.json", b"{not json", "config.json is corrupted"),
    "config-a-list": ("config.json", b"[]", "config.json has no model section"),
    "config-bad-value": ("config.json", b'{"model": {"n_layer": -1}}', "config.json: invalid model config"),
    "weights-garbage": ("model.safetensors", b"garbage", "model.safetensors is corrupted"),
    "weights-cut": ("model.safetensors", None, "model.safetensors is corrupted"),
    "tokenizer-not-json": ("tokenizer.json", b"{]", "tokenizer.json is not valid JSON"),
    "tokenizer-empty-object": ("tokenizer.json", b"{}", "tokenizer.json: unknown tokenizer type"),
}


@pytest.mark.parametrize("command", ["sample", "eval", "resume", "inspect"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_one_line_naming_the_file(world, tmp_path, cli, damage, command):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    name, content, words = DAMAGE[damage]
    for ckpt in ("best", "latest"):
        f = run / ckpt / name
        f.write_bytes(content if content is not None else f.read_bytes()[: f.stat().st_size // 2])
    argv = {"sample": ["sample", run, "--max_new_tokens", "3"], "eval": ["eval", run],
            "resume": ["train", "--out", run, "--resume", "--max_iters=6"],
            "inspect": ["inspect", "steps", run, "--prompt", "to"]}[command]
    code, _, err = cli(*argv)
    assert code == 2 and words in only_line(err), err


def test_a_damaged_training_state_only_stops_resume(world, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    (run / "latest" / "state.pt").write_bytes(b"xx")
    code, _, err = cli("train", "--out", run, "--resume", "--max_iters=6")
    assert code == 2 and "state.pt is corrupted" in only_line(err)
    code, text, err = cli("sample", run, "--max_new_tokens", "3", "--seed", "0")
    assert code == 0 and text, err


# --- through `python -m tinygpt` ---------------------------------------------------------------------

@pytest.mark.slow
def test_bad_input_through_the_real_entry_point(world, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(world / "run", damaged)
    for ckpt in ("best", "latest"):
        (damaged / ckpt / "config.json").write_text("{")
    procs = [(spawn(["train", "--data", world / "input.txt", "--out", tmp_path / "r", "--lr=3000"], tmp_path),
              "unknown option --lr (did you mean --learning_rate?)"),
             (spawn(["sample", damaged], tmp_path), "config.json is corrupted")]
    for proc, words in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and words in only_line(err), err


@pytest.mark.slow
def test_a_closed_stdout_pipe_ends_quietly(world, tmp_path):
    """`tinygpt sample RUN | head -c 10`: the reader goes away; no traceback, no error line, exit 141."""
    proc = spawn(["sample", world / "run", "--max_new_tokens", "20000", "--seed", "0"], tmp_path,
                 stdout=subprocess.PIPE)
    try:
        head = proc.stdout.read(10)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(head) == 10
    assert proc.returncode == 141 and "Traceback" not in err and "error" not in err, err


# 130 as a shell sees it. Under `python -m`, CPython ends the process by SIGINT itself, after main() returned 130,
# when the KeyboardInterrupt passed through code run by PyRun_* (seen once in eight interrupts during start-up);
# a shell reports 130 for that too
INTERRUPTED = (130, -signal.SIGINT)


def _interrupt(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err


def _nothing_or_a_valid_run(out: Path) -> None:
    try:
        ckpt = Run(out).checkpoint("latest")
    except Exception:  # no directory, or no checkpoint in it: nothing to keep
        return
    load_checkpoint(ckpt)


@pytest.mark.slow
def test_ctrl_c_during_imports(world, tmp_path):
    out = tmp_path / "r"
    proc = spawn(["train", "--data", world / "input.txt", "--out", out, *FLAGS, "--max_iters=100000"], tmp_path)
    time.sleep(0.3)
    err = _interrupt(proc)
    _nothing_or_a_valid_run(out)
    assert proc.returncode in INTERRUPTED and "Traceback" not in err, err


@pytest.mark.slow
def test_ctrl_c_during_start_up(world, tmp_path):
    """SIGINT once the command has begun (its first stderr line), before the training loop: exit 130, no traceback,
    and the run directory holds nothing or a valid run."""
    out = tmp_path / "r"
    proc = spawn(["train", "--data", world / "input.txt", "--out", out, *FLAGS, "--max_iters=100000"], tmp_path)
    first = proc.stderr.readline()
    err = first + _interrupt(proc)
    assert proc.returncode in INTERRUPTED and "Traceback" not in err, err
    assert not [ln for ln in err.splitlines() if ln.startswith("error")], err
    _nothing_or_a_valid_run(out)


def test_train_help_explains_every_hyperparameter_and_a_bare_flag_means_true(cli):
    """Every setting in --help has its line and its default (val_fraction too); a yes/no setting given bare is
    true, any other needs a value."""
    from tinygpt.cli.args import as_flags, config_overrides
    from tinygpt.cli.main import build_parser
    from tinygpt.config import ALL_KEYS, HELP, ConfigError
    code, out, _ = cli("train", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "--val_fraction" in out
    for key in ALL_KEYS:
        if key != "vocab_size":
            assert f"--{key} [V] {' '.join(as_flags(HELP[key]).split())}" in flat, key
    assert "(bf16 untimed when sharded with --fsdp)" in flat  # a setting named in a help line: its flag
    assert "keeps the precision it began with (default auto)" in flat and "(default 1337)" in flat
    for command in ("demo", "ladder"):  # their recipes set other defaults: none is claimed
        _, out, _ = cli(command, "--help")
        assert "optimizer steps in all" in out and "optimizer steps in all (default" not in " ".join(out.split())
    args = build_parser().parse_args(["train", "--out", "r", "--qk_norm", "--compile", "--n_layer=2"])
    assert config_overrides(args) == {"qk_norm": "true", "compile": "true", "n_layer": "2"}
    with pytest.raises(ConfigError, match="--seed needs a value"):
        config_overrides(build_parser().parse_args(["train", "--out", "r", "--seed"]))


def test_the_command_that_began_a_run_resumes_it_with_resume_added(world, tmp_path, cli):
    """Re-running the training command with --resume keeps working with its own --preset and --tokenizer; a
    preset or tokenizer the run does not have is refused, naming what differs, before anything is written."""
    command = ["train", "--data", world / "input.txt", "--out", tmp_path / "run", "--preset", "tiny_char",
               "--tokenizer", "char", "--n_layer=1", "--n_embd=32", "--batch_size=2", "--eval_iters=1",
               "--eval_interval=2", "--device=cpu", "--dtype=float32", "--quiet"]
    assert cli(*command, "--max_iters=2")[0] == 0
    code, _, err = cli(*command, "--max_iters=3", "--resume")
    assert code == 0, err
    assert Run(tmp_path / "run").metrics()[-1]["step"] == 3
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    for change, words in ((["--preset", "shakespeare_char"], "--preset shakespeare_char sets what this run does not "
                                                             "have: n_head 6 (the run has 4)"),
                          (["--tokenizer", "bpe"], "a resumed run keeps its tokenizer (char, ")):
        args = [a for a in command if a not in ("tiny_char", "char")]
        args = [a for i, a in enumerate(args) if a not in ("--preset", "--tokenizer")]
        code, _, err = cli(*args, *change, "--max_iters=4", "--resume")
        assert code == 2 and words in only_line(err), err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert Run(tmp_path / "run").metrics()[-1]["step"] == 3
