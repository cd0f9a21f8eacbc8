"""Three small runs for the server's tests, all CPU: a calculator trained 5 steps, a 2-layer character model, and
that model fine-tuned a few steps on conversations (a chat run)."""
from __future__ import annotations

import json
from pathlib import Path

CAT_TEXT = "the cat sat on the mat. " * 300
# conversations in the cat model's characters (one of them two exchanges long)
CONVERSATIONS = [[("user", "the cat"), ("assistant", "sat on the mat.")],
                 [("user", "on the mat"), ("assistant", "the cat sat.")],
                 [("user", "cat"), ("assistant", "a cat."), ("user", "mat"), ("assistant", "a mat.")]] * 10
_MADE: dict[str, Path] = {}


def shared_runs(tmp_path_factory) -> dict[str, Path]:
    """make_runs once per test session (the runs are only read), in the session's temporary directory."""
    if not _MADE:
        _MADE.update(make_runs(tmp_path_factory.mktemp("serve-runs")))
    return dict(_MADE)


def make_runs(root: Path) -> dict[str, Path]:
    """{"calculator": run dir, "cat": run dir, "chat": run dir}: a task run, a text run (block_size 32, so windows
    slide) and a chat run fine-tuned from the text run (`tinygpt train --init_from`)."""
    import tinygpt
    from tinygpt.cli.main import main
    from tinygpt.recipes.demo import train_calculator
    from tinygpt.tokenizers import CharTokenizer

    quick = {"max_iters": 5, "eval_interval": 5, "eval_iters": 1, "device": "cpu"}
    calc = root / "calculator"
    # the recipe's own warm-up, not scaled down to the 5 steps: the answers the tests read come from this model
    train_calculator(calc, {**quick, "batch_size": 16, "warmup_iters": 100}, finish_early=False)
    tok = CharTokenizer.train(CAT_TEXT)
    model_cfg, train_cfg = tinygpt.build_configs({"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                                                  "learning_rate": 3e-3, **quick, "max_iters": 30},
                                                 vocab_size=tok.vocab_size)
    cat = root / "cat"
    tinygpt.train(model_cfg, train_cfg, tinygpt.TextData.from_text(CAT_TEXT, tok, model_cfg.block_size), tok, cat)
    convs = root / "convs.jsonl"
    convs.write_text("".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs]}) + "\n"
                             for pairs in CONVERSATIONS), encoding="utf-8")
    chat = root / "chat"
    assert main(["train", "--init_from", str(cat), "--data", str(convs), "--out", str(chat), "--max_iters=20",
                 "--eval_interval=20", "--eval_iters=1", "--batch_size=8", "--learning_rate=3e-3", "--device=cpu",
                 "--dtype=float32", "--quiet"]) == 0
    return {"calculator": calc, "cat": cat, "chat": chat}
