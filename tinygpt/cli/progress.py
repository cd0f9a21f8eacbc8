"""What a training run shows on the terminal: the progress bar, evaluations, and TensorBoard scalars.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tinygpt.cli.args import CLIError
from tinygpt.training.evaluate import bits


def tensorboard_writer(out: Path) -> Any:
    """A function making the TensorBoard writer once the run directory is ours (so a refused run creates
    nothing); TensorBoard missing is an error before any work."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CLIError("--tensorboard needs TensorBoard: pip install 'tinygpt[tensorboard]'") from None
    return lambda: SummaryWriter(str(out / "tensorboard"))


class ProgressHooks:
    """Draws the progress bar (loss, lr, tokens/s, ETA) and prints evaluations."""

    def __init__(self, quiet: bool = False, writer_factory: Any = None):
        self.quiet, self.bar, self.tps = quiet, None, None
        self.writer_factory, self.writer = writer_factory, None  # TensorBoard, made when training starts

    def on_start(self, info: dict[str, Any]) -> None:
        if self.writer_factory is not None:
            self.writer = self.writer_factory()
        if info.get("dtype_probe"):
            timed = ", ".join(f"{k} {v:.1f} ms" for k, v in info["dtype_probe"].items())
            print(f"precision: {info['dtype']}, the faster per training step on this CPU ({timed})", file=sys.stderr)
        if info.get("fsdp") is False:
            print("note: FSDP shards over the processes torchrun starts; with one process this run trains unsharded",
                  file=sys.stderr)
        print(f"training on {info['device']} ({info['dtype']}), {info['params'] / 1e6:.2f}M parameters, "
              f"{info['tokens_per_step']:,} tokens per step"
              + (f", sharded over {info['world_size']} processes (FSDP)" if info.get("fsdp") else "")
              + (f", resuming at step {info['step']}" if info["resumed"] else ""), file=sys.stderr)
        self.bar = tqdm(total=info["max_iters"], initial=info["step"], unit="step", dynamic_ncols=True,
                        disable=self.quiet, file=sys.stderr)

    def on_step(self, m: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.tps = m["tokens_per_sec"] if self.tps is None else 0.9 * self.tps + 0.1 * m["tokens_per_sec"]
        self.bar.set_postfix_str(f"loss {m['train_loss']:.4f}, lr {m['lr']:.2e}, {self.tps:,.0f} tok/s", refresh=False)
        self.bar.update(m["step"] - self.bar.n)
        if self.writer is not None:
            for k in ("train_loss", "lr", "tokens_per_sec"):
                self.writer.add_scalar(k, m[k], m["step"])

    def on_eval(self, m: dict[str, Any]) -> None:
        unit = f"{m['val_bits_per_byte']:.3f} bits/byte" if "val_bits_per_byte" in m \
            else f"{bits(m['val_loss'], 1.0):.3f} bits/token"
        msg = f"step {m['step']}: train loss {m['eval_train_loss']:.4f}, val loss {m['val_loss']:.4f} ({unit})"
        exact = [f"{k[10:]} {m[k]:.1%}" for k in ("val_exact_first", "val_exact_followup") if k in m]
        if exact:
            msg += f"; held-out replies exactly right: {', '.join(exact)}"
        if self.writer is not None:
            for k in ("val_loss", "eval_train_loss", "val_bits_per_char", "val_bits_per_byte"):
                if k in m:
                    self.writer.add_scalar(k, m[k], m["step"])
        if self.bar is not None and not self.quiet:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def on_checkpoint(self, path: Path, kind: str) -> None: ...

    def on_end(self, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        best = f", best val loss {result.best_val_loss:.4f}" if result.best_val_loss < float("inf") else ""
        print(f"done: step {result.step}{best}; run saved in {result.out_dir}", file=sys.stderr)
