"""Two small runs for the server's tests: a calculator trained 5 steps and a 2-layer character model, both CPU."""
from __future__ import annotations

from pathlib import Path

CAT_TEXT = "the cat sat on the mat. " * 300
_MADE: dict[str, Path] = {}


def shared_runs(tmp_path_factory) -> dict[str, Path]:
    """make_runs once per test session (the runs are only read), in the session's temporary directory."""
    if not _MADE:
        _MADE.update(make_runs(tmp_path_factory.mktemp("serve-runs")))
    return dict(_MADE)


def make_runs(root: Path) -> dict[str, Path]:
    """{"calculator": run dir, "cat": run dir}: a task run and a text run (block_size 32, so windows slide)."""
    import tinygpt
    from tinygpt.demo import train_calculator
    from tinygpt.tokenizers import CharTokenizer

    quick = {"max_iters": 5, "eval_interval": 5, "eval_iters": 1, "device": "cpu"}
    calc = root / "calculator"
    train_calculator(calc, {**quick, "batch_size": 16}, finish_early=False)
    tok = CharTokenizer.train(CAT_TEXT)
    model_cfg, train_cfg = tinygpt.build_configs({"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                                                  "learning_rate": 3e-3, **quick, "max_iters": 30},
                                                 vocab_size=tok.vocab_size)
    cat = root / "cat"
    tinygpt.train(model_cfg, train_cfg, tinygpt.TextData.from_text(CAT_TEXT, tok, model_cfg.block_size), tok, cat)
    return {"calculator": calc, "cat": cat}
