"""Character vs byte-level BPE tokens: the same model, the same text, the same training time.

    python bench/char_vs_bpe.py --budget 120 --vocab 512 1024

For each tokenizer the script (1) times a short probe run to get the seconds per step, (2) sets max_iters so
that training fills the budget (warmup and cosine decay scaled to it), (3) trains with `tinygpt train`, and
(4) scores the whole validation split with `tinygpt eval`, in bits per byte: the one unit that compares
tokenizers fairly (a BPE token covers several bytes, so its loss per token is not comparable). The model is
the baby Shakespeare one (4 layers, 4 heads, 128 wide, 64-token window, batch 12); only the vocabulary
differs, so a BPE model also sees ~2-3x more text per window.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
MODEL = ["--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=64", "--batch_size=12", "--dropout=0.0",
         "--learning_rate=1e-3", "--min_lr=1e-4", "--device=cpu", "--compile=False", "--quiet"]


def tinygpt(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tinygpt", *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tinygpt {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def seconds_per_step(tok: list[str], tmp: Path, probe: int) -> float:
    run = tmp / "probe"
    tinygpt("train", "--data", str(DATA), "--out", str(run), "--overwrite", *tok, *MODEL, f"--max_iters={probe}",
            f"--eval_interval={probe}", "--eval_iters=1", "--log_interval=1")
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(ln["dt_ms"] for ln in lines if "dt_ms" in ln and ln["step"] > 5) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=120, help="training seconds per tokenizer")
    ap.add_argument("--vocab", type=int, nargs="+", default=[512, 1024], help="BPE vocabulary sizes")
    ap.add_argument("--probe", type=int, default=40, help="steps of the timing probe")
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(args.out or t)
        for name, tok in [("char", ["--tokenizer=char"])] + [(f"bpe {v}", ["--tokenizer=bpe", f"--vocab_size={v}"])
                                                              for v in args.vocab]:
            sps = seconds_per_step(tok, tmp, args.probe)
            iters = int(args.budget / sps)
            run = tmp / name.replace(" ", "")
            tinygpt("train", "--data", str(DATA), "--out", str(run), "--overwrite", *tok, *MODEL,
                    f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--warmup_iters={max(10, iters // 20)}",
                    f"--eval_interval={max(1, iters // 4)}", "--eval_iters=20")
            metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
            res = json.loads(tinygpt("eval", str(run), "--json", "--checkpoint=latest"))
            rows.append(dict(tokenizer=name, ms_per_step=sps * 1000, steps=iters,
                             train_s=max(m.get("elapsed_s", 0) for m in metrics), **res))
            print(json.dumps(rows[-1]), flush=True)
            sample = tinygpt("sample", str(run), "--prompt", "ROMEO:", "--max_new_tokens", "60", "--seed", "1",
                             "--checkpoint=latest")
            print(sample, flush=True)
    print(f"\n| tokenizer | ms/step | steps in {args.budget:.0f} s | val loss (nats/token) | bits per byte |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokenizer']} | {r['ms_per_step']:.1f} | {r['steps']} | {r['loss']:.3f} | {r['bits_per_byte']:.3f} |")


if __name__ == "__main__":
    main()
