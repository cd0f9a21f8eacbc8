"""Honest times and progress: the smoothed speed (evaluations apart), the time left and the first estimate, with a
fake clock and known answers; the bar on a terminal and lines elsewhere; train()'s own bar; recipes cut to a budget;
progress for `eval` and for corpus downloads."""
from __future__ import annotations

import io
import json
import time
import urllib.request
from pathlib import Path

import pytest

from tinygpt.cli.progress import StageProgress
from tinygpt.config import ConfigError, build_configs
from tinygpt.data.text import TextData
from tinygpt.recipes.budget import scaled, split_steps
from tinygpt.tokenizers import CharTokenizer
from tinygpt.training.loop import Hooks, RunResult, train
from tinygpt.training.progress import TrainingProgress
from tinygpt.training.run import read_metrics
from tinygpt.training.throughput import Throughput, duration_text


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


START = {"device": "cpu", "dtype": "float32", "params": 1000, "tokens_per_step": 1000, "resumed": False, "step": 0,
         "max_iters": 10}


# --- the arithmetic ----------------------------------------------------------------------------------

def test_throughput_worked_example():
    pace = Throughput(max_iters=10, tokens_per_step=1000, eval_interval=5, warmup=0)
    pace.add_evaluation(2.0)  # step 0's evaluation: timed apart, never in a step's time
    for _ in range(5):
        pace.add_step(0.5)
    assert pace.step_seconds() == 0.5 and pace.tokens_per_sec() == 2000
    assert pace.evaluations_left() == 1  # step 10 (step 5's is done... its cost is still to be reported)
    assert pace.seconds_left() == 5 * 0.5 + 1 * 2.0


def test_a_slow_evaluation_never_slows_the_speed_and_the_first_step_is_not_counted():
    pace = Throughput(max_iters=100, tokens_per_step=64, eval_interval=10)
    pace.add_evaluation(90_000.0)  # a day-long step-0 evaluation (today it counts in step 1's time)
    pace.add_step(30.0)  # the first step: allocations, compilation; not counted
    assert pace.step_seconds() is None and pace.seconds_left() is None and not pace.ready()
    for _ in range(5):
        pace.add_step(0.01)
    assert pace.ready() and pace.counted == 5 and pace.step == 6
    assert pace.tokens_per_sec() == pytest.approx(6400)
    # 94 steps at 0.01 s and 10 evaluations (10, 20, ..., 100) at the measured 90,000 s each
    assert pace.seconds_left() == pytest.approx(94 * 0.01 + 10 * 90_000)


def test_the_speed_is_the_mean_of_a_window_of_recent_steps():
    pace = Throughput(max_iters=1000, tokens_per_step=100, window=4, warmup=0)
    for s in (9.0, 9.0, 1.0, 1.0, 1.0, 3.0):  # one sample alone (3.0) would say 33 tok/s
        pace.add_step(s)
    assert pace.step_seconds() == pytest.approx((1 + 1 + 1 + 3) / 4)
    assert pace.tokens_per_sec() == pytest.approx(100 / 1.5)


@pytest.mark.parametrize("step,max_iters,interval,left", [(0, 100, 10, 10), (5, 100, 10, 10), (10, 100, 10, 9),
                                                          (0, 25, 10, 3), (20, 25, 10, 1), (25, 25, 10, 0),
                                                          (0, 10, 0, 0)])
def test_evaluations_left_count_every_interval_and_the_last_step(step, max_iters, interval, left):
    assert Throughput(max_iters, step, eval_interval=interval).evaluations_left() == left


def test_duration_text_known_answers():
    assert [duration_text(s) for s in (0.2, 42, 59.4, 200, 3599, 4000)] == ["1 s", "42 s", "59 s", "3 min",
                                                                           "1 h 0 min", "1 h 7 min"]


def test_a_budget_keeps_the_recipes_shape():
    recipe = {"max_iters": 3000, "warmup_iters": 100, "eval_interval": 250, "lr_decay_iters": 0, "batch_size": 7}
    assert scaled(recipe, 300) == {"max_iters": 300, "warmup_iters": 10, "eval_interval": 25, "lr_decay_iters": 0,
                                   "batch_size": 7}
    assert scaled(recipe, None) == recipe and scaled(recipe, 3000) == recipe
    assert scaled(recipe, 2)["eval_interval"] == 1 and scaled(recipe, 2)["warmup_iters"] == 1  # at least 1
    assert scaled(recipe, 300, keys=("eval_interval",))["warmup_iters"] == 100
    assert split_steps(100, (800, 1200)) == (40, 60) and split_steps(1, (800, 1200)) == (1, 1)
    assert sum(split_steps(2001, (800, 1200))) == 2001


# --- what is shown -----------------------------------------------------------------------------------

def _result(step: int = 10) -> RunResult:
    return RunResult(Path("runs/x"), step, 1.5, 1.5, None)


def _shown(stream, pace: Throughput, clock: Clock, **kw) -> TrainingProgress:
    hooks = TrainingProgress(stream, clock=clock, **kw)
    hooks.on_start({**START, "max_iters": pace.max_iters, "pace": pace})
    return hooks


def test_the_bar_shows_the_smoothed_speed_and_the_time_left_without_evaluations():
    out, clock = Terminal(), Clock()
    pace = Throughput(max_iters=1000, tokens_per_step=1000, eval_interval=0, warmup=0)
    hooks = _shown(out, pace, clock)
    pace.add_evaluation(3600.0)
    for s in (0.5, 0.5, 0.5, 0.5, 0.1):  # the last step alone would read 10,000 tok/s
        pace.add_step(s)
    hooks.on_step({"step": 5, "train_loss": 2.0, "lr": 1e-3, "tokens_per_sec": 10_000.0})
    hooks.bar.refresh()
    text = out.getvalue()
    assert "2,381 tok/s" in text  # 1000 / mean(0.5, 0.5, 0.5, 0.5, 0.1)
    assert "06:57 left" in text  # 995 steps x 0.42 s = 418 s: the hour-long evaluation is not in it
    assert "10,000" not in text and "s/step" not in text and "it/s" not in text
    hooks.on_end(_result())


def test_off_a_terminal_lines_now_and_then_and_never_a_carriage_return():
    out, clock = io.StringIO(), Clock()
    pace = Throughput(max_iters=100, tokens_per_step=100, eval_interval=50, warmup=0)
    hooks = _shown(out, pace, clock, every=30.0)
    for step in range(1, 21):
        pace.add_step(0.1)
        clock.now += 3.0
        hooks.on_step({"step": step, "train_loss": 1.0, "lr": 1e-3, "tokens_per_sec": 1.0})
    hooks.on_eval({"step": 20, "eval_train_loss": 1.0, "val_loss": 1.25})
    hooks.on_end(_result(20))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    periodic = [ln for ln in lines if ln.startswith("step ") and "/100:" in ln]
    assert periodic == ["step 10/100: loss 1.0000, 1,000 tok/s, 00:09 left",
                        "step 20/100: loss 1.0000, 1,000 tok/s, 00:08 left"]
    assert lines[0].startswith("training on cpu") and lines[-1].startswith("done: step 20")


def test_the_time_estimate_is_printed_once_from_the_first_timed_steps():
    out, clock = io.StringIO(), Clock()
    pace = Throughput(max_iters=2000, tokens_per_step=100, eval_interval=250)
    hooks = _shown(out, pace, clock, then=(1000, "fine-tuning"))
    pace.add_evaluation(2.0)
    for step in range(1, 9):
        pace.add_step(5.0 if step == 1 else 0.08)  # the first step is slow and is not counted
        hooks.on_step({"step": step, "train_loss": 1.0, "lr": 1e-3, "tokens_per_sec": 1.0})
    estimates = [ln for ln in out.getvalue().splitlines() if ln.startswith("time estimate")]
    # at step 6 (5 steps counted): 1994 steps x 0.08 s + 8 evaluations x 2 s = 175.5 s; then 1000 x 0.08 s
    assert estimates == ["time estimate: about 3 min for the 1,994 steps left and 8 evaluations, then about 1 min "
                         "for the 1,000 steps of fine-tuning; measured from the first 5 steps on this machine (cpu)"]


def test_a_short_run_gets_no_estimate_unless_asked():
    for over, shown in ((10.0, False), (0.0, True)):
        out = io.StringIO()
        pace = Throughput(max_iters=20, tokens_per_step=100, warmup=0)
        hooks = _shown(out, pace, Clock(), estimate_over=over)
        for step in range(1, 8):
            pace.add_step(0.01)
            hooks.on_step({"step": step, "train_loss": 1.0, "lr": 1e-3, "tokens_per_sec": 1.0})
        assert ("time estimate: about 1 s for the 15 steps left" in out.getvalue()) == shown


# --- the loop and train() ----------------------------------------------------------------------------

class FakeClock:
    """The loop's clock: each training batch takes 1 s and each validation batch 100 s; nothing else takes time."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class SlowEvaluation(TextData):
    clock: FakeClock

    def get_batch(self, split, batch_size, gen):
        self.clock.now += 100.0 if split == "val" else 1.0
        return super().get_batch(split, batch_size, gen)


class Recorder(Hooks):
    def on_start(self, info):
        self.info = info


def _tiny(play: str, **kw):
    tok = CharTokenizer.train(play[:5000])
    model_cfg, cfg = build_configs({"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2,
                                    "eval_iters": 4, "eval_interval": 4, "max_iters": 8, "device": "cpu",
                                    "log_interval": 1, **kw}, vocab_size=tok.vocab_size)
    return model_cfg, cfg, tok


def test_the_loop_times_evaluations_apart_from_steps(tmp_path, play, monkeypatch):
    import tinygpt.training.loop as loop

    model_cfg, cfg, tok = _tiny(play)
    data = SlowEvaluation.from_text(play[:5000], tok, model_cfg.block_size)
    data.clock = FakeClock()
    monkeypatch.setattr(loop, "time", data.clock)
    hooks = Recorder()
    train(model_cfg, cfg, data, tok, tmp_path / "run", hooks=hooks)
    pace = hooks.info["pace"]
    assert pace.step == 8 and pace.counted == 7  # the first step is not counted
    assert pace.step_seconds() == 1.0  # one training batch per step; no evaluation in any step's time
    assert pace.eval_seconds == [4 * 1.0 + 4 * 100.0] * 3  # steps 0, 4 and 8: 4 batches of each split
    assert pace.tokens_per_sec() == 2 * 16
    assert hooks.info["may_finish_early"] is False


def test_python_train_shows_a_bar_on_a_terminal_and_nothing_when_quiet_or_in_a_log(tmp_path, play, monkeypatch):
    model_cfg, cfg, tok = _tiny(play, max_iters=3, eval_interval=3)
    data = TextData.from_text(play[:5000], tok, model_cfg.block_size)
    for name, stream, quiet in (("tty", Terminal(), False), ("quiet", Terminal(), True), ("log", io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        train(model_cfg, cfg, data, tok, tmp_path / name, quiet=quiet)
        text = stream.getvalue()
        if name == "tty":
            assert "training on cpu" in text and "3/3" in text and "\r" in text and "done: step 3" in text
        else:
            assert text == ""


# --- demos and the ladder cut to a budget ------------------------------------------------------------

def test_the_calculator_recipe_scales_with_max_iters():
    from tinygpt.recipes.demo import calculator_configs
    from tinygpt.tasks.calculator import CalculatorTask

    task = CalculatorTask()
    _, cfg = calculator_configs(task, {"max_iters": 300})
    assert (cfg.max_iters, cfg.eval_interval, cfg.warmup_iters) == (300, 25, 10)
    _, cfg = calculator_configs(task, {"max_iters": 300, "eval_interval": 100})  # what is given wins
    assert cfg.eval_interval == 100
    _, cfg = calculator_configs(task)  # the demo itself is untouched
    assert (cfg.max_iters, cfg.eval_interval, cfg.warmup_iters) == (3000, 250, 100)


def test_the_chat_demo_shares_a_budget_between_its_stages():
    from tinygpt.recipes import assistant

    assert assistant.stage_steps() == (800, 1200) and assistant.stage_steps(100) == (40, 60)
    with pytest.raises(ConfigError, match="needs at least 2 steps"):
        assistant.stage_steps(1)
    base_cfg, base = assistant.base_configs({"max_iters": 40})
    _, sft = assistant.sft_configs(base_cfg, {"max_iters": 60})
    assert (base.eval_interval, base.warmup_iters, sft.eval_interval, sft.warmup_iters) == (25, 5, 20, 2)


def test_the_ladder_with_a_short_budget_keeps_points_on_each_curve(tmp_path, play):
    from tinygpt.recipes.ladder import run_ladder

    run_ladder(play[:5000], tmp_path / "ladder", {"max_iters": 20, "batch_size": 4, "block_size": 16,
                                                   "eval_iters": 1, "device": "cpu"}, rungs=["bigram"])
    points = [m["step"] for m in read_metrics(tmp_path / "ladder" / "bigram") if "val_loss" in m]
    assert points == list(range(0, 21, 2))  # every 2 steps, as 100 of the ladder's 1000


# --- eval and downloads ------------------------------------------------------------------------------

def test_evaluate_stream_reports_its_windows(play):
    from tinygpt.models import build_model
    from tinygpt.training.evaluate import evaluate_stream

    model_cfg, _, tok = _tiny(play)
    ids = tok.encode(play[:1000])
    calls: list[tuple[int, int]] = []
    loss, n = evaluate_stream(build_model(model_cfg), ids, 16, batch_size=10,
                              progress=lambda done, total: calls.append((done, total)))
    windows = -(-(len(ids) - 1) // 16)
    assert calls == [(min(i + 10, windows), windows) for i in range(0, windows, 10)]
    assert evaluate_stream(build_model(model_cfg), ids, 16, batch_size=10)[1] == n


def test_stage_progress_off_a_terminal_prints_lines_now_and_then():
    out, clock = io.StringIO(), Clock()
    bars = StageProgress(stream=out, every=30.0, clock=clock)
    bars("scoring", 0, 4)  # announced: a line at once
    for done in range(1, 5):
        clock.now += 20.0
        bars("scoring", done, 4)
    quick = StageProgress(stream=out, clock=clock)
    quick("evaluating", 3, 9)  # a quick stage, never announced, says nothing
    quick("evaluating", 9, 9)
    assert out.getvalue() == "scoring: 0 of 4\nscoring: 2 of 4\nscoring: 4 of 4\n"


def test_stage_progress_on_a_terminal_draws_a_bar_and_quiet_draws_nothing():
    out = Terminal()
    with StageProgress(stream=out) as bars:
        bars.bar = None
        bars("evaluating", 1, 4)
        bars.bar.delay = 0  # draw at once
        bars("evaluating", 4, 4)
        bars.bar.refresh()
    assert "evaluating" in out.getvalue() and "4/4" in out.getvalue()
    quiet = Terminal()
    StageProgress(quiet=True, stream=quiet)("evaluating", 1, 4)
    assert quiet.getvalue() == ""


def test_eval_of_a_text_run_reports_progress_off_a_terminal(cli, tmp_path, play, monkeypatch, capsys):
    from conftest import train_tiny

    run = train_tiny(tmp_path, "r", 1)
    capsys.readouterr()
    monkeypatch.setattr(StageProgress.__init__, "__defaults__", (False, 0.0, None, time.monotonic))  # every line
    code, out, err = cli("eval", run, "--batch_size", "2", "--json")
    assert code == 0 and json.loads(out)["loss"] > 0
    lines = err.splitlines()
    assert len(lines) == 4 and all(ln.startswith("evaluating the val split (windows): ") for ln in lines)
    assert [ln.split(": ")[1] for ln in lines] == ["2 of 8", "4 of 8", "6 of 8", "8 of 8"]


def test_download_url_says_what_and_how_much(tmp_path, monkeypatch):
    import tinygpt.data.corpora as corpora

    src = tmp_path / "input.txt"
    src.write_bytes(b"x" * 400_000)
    said: list[str] = []
    got = corpora.download_url(src.as_uri(), tmp_path / "copy.txt", said.append, chunk=100_000)
    assert got.read_bytes() == src.read_bytes()
    assert said == [f"downloading {src.as_uri()} (0.4 MB)", "downloaded 25% (0.1 MB of 0.4 MB)",
                    "downloaded 50% (0.2 MB of 0.4 MB)", "downloaded 75% (0.3 MB of 0.4 MB)"]


def test_train_on_a_corpus_says_what_it_downloads(cli, tmp_path, play, monkeypatch):
    import hashlib

    import tinygpt.data.corpora as corpora

    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "tiny.txt"
    local.write_text(play[:20_000], encoding="utf-8")
    real = urllib.request.urlopen

    def served_here(url, timeout=None):  # the corpus's URL answered from a local file: no network
        assert url == corpora.TINYSHAKESPEARE_URL
        return real(local.as_uri(), timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", served_here)
    monkeypatch.setattr(corpora, "TINYSHAKESPEARE_SHA256", hashlib.sha256(local.read_bytes()).hexdigest())
    code, _, err = cli("train", "--data", "tinyshakespeare", "--out", tmp_path / "r", "--max_iters=1",
                       "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2",
                       "--eval_iters=1", "--device=cpu", "--quiet")
    assert code == 0, err
    assert "fetching corpus tinyshakespeare (about 1.1 MB of text; once, then cached)" in err
    assert f"downloading {corpora.TINYSHAKESPEARE_URL} (20 kB)" in err and "cached tinyshakespeare:" in err
