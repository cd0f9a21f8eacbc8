"""tinygpt: build, train, run and look inside a GPT-style language model written from scratch.

The public API, for use from Python:

    import tinygpt

    model, tokenizer, config = tinygpt.load_checkpoint("runs/baby")       # a run or checkpoint directory
    print("".join(tinygpt.generate_text(model, tokenizer, "ROMEO:", 100, temperature=0.8, seed=0)))

    cfg = tinygpt.ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=65)
    gpt = tinygpt.GPT(cfg)                                                  # logits, loss = gpt(ids, targets)

    tinygpt.train(...) shows a progress bar on a terminal (quiet=True: none; hooks=tinygpt.TrainingProgress():
    its lines in a log or a notebook too).

Everything else lives in subpackages by role (models, tokenizers, data, generation, tasks, training, inspect,
interop, serve, recipes, cli); the README's "What is inside" maps them.
"""
import os as _os
import signal as _signal
import sys as _sys
import threading as _threading

from tinygpt.version import __version__

# The `tinygpt` command (not a library import): a Ctrl-C while torch loads is held until the imports are done.
# Raised inside torch's C++ start-up code, it would abort the process with a C++ error instead of exiting cleanly.
_held: list[int] = []
_hold = (_os.path.basename(_sys.argv[0]) in ("tinygpt", "-m", "__main__.py")
         and _threading.current_thread() is _threading.main_thread()
         and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler)
if _hold:
    _signal.signal(_signal.SIGINT, lambda signum, frame: _held.append(signum))
try:
    from tinygpt.config import ModelConfig, TrainConfig, build_configs  # noqa: E402
    from tinygpt.data.text import TextData  # noqa: E402
    from tinygpt.generation.decoder import Decoder  # noqa: E402
    from tinygpt.generation.engine import Engine, Sampling  # noqa: E402
    from tinygpt.generation.generate import generate, generate_text  # noqa: E402
    from tinygpt.models import GPT, LanguageModel, build_model  # noqa: E402
    from tinygpt.models.quantize import quantize  # noqa: E402
    from tinygpt.tokenizers import load_tokenizer  # noqa: E402
    from tinygpt.training.loop import Hooks, RunResult, train  # noqa: E402
    from tinygpt.training.progress import TrainingProgress  # noqa: E402
    from tinygpt.training.run import Run, load_checkpoint  # noqa: E402
finally:
    if _hold:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
if _held:
    print("interrupted", file=_sys.stderr)
    raise SystemExit(130)

__all__ = ["__version__", "ModelConfig", "TrainConfig", "build_configs", "TextData", "Decoder", "generate",
           "generate_text", "GPT", "LanguageModel", "build_model", "Run", "load_checkpoint", "load_tokenizer",
           "Hooks", "RunResult", "train", "TrainingProgress", "Engine", "Sampling", "quantize"]
