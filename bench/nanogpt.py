"""Run karpathy/nanoGPT as a reference point for tinygpt benchmarks (subprocesses only, parsed from stdout).

Getting nanoGPT: this bench never vendors nanoGPT (no code, config or text from it is kept in this
repository). Clone it anywhere outside the repo and point the bench at it:

    git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt
    git -C /tmp/nanogpt checkout 3adf61e154c3fe3fca428ad6bc3818b27a3b8291   # commit the baseline figures used
    export NANOGPT_DIR=/tmp/nanogpt        # or pass --nanogpt /tmp/nanogpt

nanoGPT's shakespeare_char data is prepared offline: `prepare_nanogpt_data` copies our tiny Shakespeare
text to data/shakespeare_char/input.txt in the checkout (its prepare.py only downloads when that file is
missing) and runs its prepare.py there. Everything runs with the current interpreter by default, so the
nanoGPT runs use the same torch build as tinygpt; its train.py/sample.py import `requests`/`tiktoken`
at module level, and when those are not installed a stub module is put on PYTHONPATH (they are never
used for character-level data).

How nanoGPT behaves on CPU (worth knowing when comparing):
  * its autocast context is `nullcontext()` whenever the device is CPU, so training and sampling run in
    float32 whatever `--dtype` says (the default dtype string on a CUDA-less torch is 'float16', which
    only asks for a CUDA GradScaler; torch warns and disables it);
  * fused AdamW only on CUDA; on CPU it is plain torch.optim.AdamW (torch's default implementation);
  * the "iter N ... time Xms" figure is time.time() between the ends of consecutive iterations, so it
    includes fetching the next batch, the previous iteration's logging (`loss.item()` + print), and on
    evaluation steps (N % eval_interval == 0, including iter 0) the whole evaluation and any checkpoint
    save; `summarize_train` drops those iterations and a few warm-up ones before taking the median;
  * max_iters=M runs iterations 0..M inclusive (M+1 optimizer steps); the eval at step M happens
    before the last step.

Library use:
    from bench.nanogpt import prepare_nanogpt_data, run_nanogpt_train, run_nanogpt_sample, summarize_train
Command line (prints JSON):
    python bench/nanogpt.py --nanogpt /tmp/nanogpt prepare --text ../shared/data/tinyshakespeare.txt
    python bench/nanogpt.py train --out /tmp/ng_out -- --max_iters=30 --eval_interval=1000 ...
    python bench/nanogpt.py sample --out /tmp/ng_out --max-new-tokens 500
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import pickle
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANOGPT_COMMIT = "3adf61e154c3fe3fca428ad6bc3818b27a3b8291"
NANOGPT_URL = "https://github.com/karpathy/nanoGPT"
SHAKESPEARE_CHAR_CONFIG = "config/train_shakespeare_char.py"

# nanoGPT README's "baby GPT" CPU run on shakespeare_char (4 layers, 4 heads, 128 dims, block 64, batch 12).
BABY_CPU_OVERRIDES = [
    "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
    "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
    "--lr_decay_iters=2000", "--dropout=0.0",
]
# The shakespeare_char config as is (6/6/384, block 256, batch 64, dropout 0.2), short throughput run on CPU.
FULL_CPU_THROUGHPUT_OVERRIDES = [
    "--device=cpu", "--compile=False", "--max_iters=30", "--eval_interval=1000", "--eval_iters=1",
    "--log_interval=1", "--always_save_checkpoint=False",
]

_ITER_RE = re.compile(r"^iter (\d+): loss ([-\d.naif]+), time ([\d.]+)ms, mfu ([-\d.]+)%", re.M)
_EVAL_RE = re.compile(r"^step (\d+): train loss ([-\d.naif]+), val loss ([-\d.naif]+)", re.M)
_TOKENS_PER_ITER_RE = re.compile(r"^tokens per iteration will be: ([\d,]+)", re.M)
_NPARAMS_RE = re.compile(r"^number of parameters: ([\d.]+)M", re.M)
_FUSED_RE = re.compile(r"^using fused AdamW: (True|False)", re.M)
_BENCH_MARK = "NANOGPT_BENCH "
_SAMPLE_SEP = "\n---------------\n"

_STUBS = {
    "requests": "def get(*a, **k):\n    raise RuntimeError('requests stub (bench/nanogpt.py): no downloads')\n",
    "tiktoken": "def get_encoding(*a, **k):\n    raise RuntimeError('tiktoken stub (bench/nanogpt.py): not installed')\n",
}

# Runs nanoGPT's sample.py unchanged (runpy, same sys.argv for its configurator) after wrapping
# GPT.generate with a timer; each call's timing goes to stderr as one JSON line after _BENCH_MARK.
_SAMPLE_WRAPPER = r"""
import json, runpy, sys, time
sys.path.insert(0, '.')
import torch, model
_orig = model.GPT.generate
def _timed(self, idx, max_new_tokens, *a, **k):
    sync = torch.cuda.synchronize if idx.is_cuda else (lambda: None)
    sync(); t0 = time.perf_counter()
    out = _orig(self, idx, max_new_tokens, *a, **k)
    sync(); dt = time.perf_counter() - t0
    p = next(self.parameters())
    rec = dict(prompt_tokens=int(idx.shape[1]), new_tokens=int(out.shape[1] - idx.shape[1]), seconds=dt,
               param_dtype=str(p.dtype), device=str(p.device), autocast_cpu=torch.is_autocast_cpu_enabled(),
               threads=torch.get_num_threads(), ids=out[0].tolist())
    print(%r + json.dumps(rec), file=sys.stderr, flush=True)
    return out
model.GPT.generate = _timed
sys.argv = ['sample.py'] + sys.argv[1:]
runpy.run_path('sample.py', run_name='__main__')
""" % _BENCH_MARK


def resolve_nanogpt_dir(path: str | os.PathLike | None = None) -> Path:
    """The nanoGPT checkout: `path`, else $NANOGPT_DIR. Raises if it does not look like one."""
    p = path if path is not None else os.environ.get("NANOGPT_DIR")
    if not p:
        raise FileNotFoundError(f"nanoGPT checkout not given: pass --nanogpt or set NANOGPT_DIR "
                                f"(git clone {NANOGPT_URL}; commit {NANOGPT_COMMIT})")
    d = Path(p).expanduser().resolve()
    for f in ("train.py", "sample.py", "model.py", "configurator.py"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d} is not a nanoGPT checkout (no {f})")
    return d


def nanogpt_commit(nanogpt_dir) -> str | None:
    """HEAD commit of the checkout when it is a git work tree, else None."""
    try:
        r = subprocess.run(["git", "-C", str(nanogpt_dir), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _env(python: str, threads: int | None, extra: dict | None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    missing = [m for m in _STUBS if subprocess.run(
        [python, "-c", f"import {m}"], capture_output=True, env=env).returncode != 0]
    if missing:
        stub_dir = Path(tempfile.gettempdir()) / f"tinygpt_bench_nanogpt_stubs_{'_'.join(sorted(missing))}"
        stub_dir.mkdir(exist_ok=True)
        for m in missing:
            (stub_dir / f"{m}.py").write_text(_STUBS[m])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub_dir), env.get("PYTHONPATH")]))
    if extra:
        env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float | None, log_path, echo: bool) -> dict:
    """Run cmd, streaming stdout (optionally echoed / logged); returns stdout, stderr, rc, wall and CPU s."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    err_f = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    log_f = open(log_path, "w", encoding="utf-8") if log_path else None
    out_lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err_f,
                                text=True, encoding="utf-8", errors="replace")
        deadline = None if timeout is None else time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
            if echo:
                sys.stderr.write(line)
            if log_f:
                log_f.write(line)
                log_f.flush()
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
        err_f.seek(0)
        stderr = err_f.read()
        if log_f and stderr:
            log_f.write(stderr)
    finally:
        err_f.close()
        if log_f:
            log_f.close()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"stdout": "".join(out_lines), "stderr": stderr, "returncode": rc, "wall_s": wall, "cpu_s": cpu}


def _check(res: dict, cmd: list[str]) -> None:
    if res["returncode"] != 0:
        tail = (res["stdout"][-2000:] + "\n" + res["stderr"][-3000:]).strip()
        raise RuntimeError(f"nanoGPT command failed (rc={res['returncode']}): {' '.join(cmd)}\n{tail}")


def prepare_nanogpt_data(nanogpt_dir, text_path, *, python: str = sys.executable, force: bool = False) -> dict:
    """Copy `text_path` to data/shakespeare_char/input.txt (if missing) and run nanoGPT's prepare.py there.

    Skips prepare.py when train.bin, val.bin and meta.pkl already exist (unless force). Returns the
    paths and the vocab size from meta.pkl. Refuses an existing input.txt that differs from text_path.
    """
    d = resolve_nanogpt_dir(nanogpt_dir)
    data_dir = d / "data" / "shakespeare_char"
    inp = data_dir / "input.txt"
    text_path = Path(text_path)
    if not inp.exists():
        shutil.copyfile(text_path, inp)  # contents only: the source may be read-only
    elif inp.read_bytes() != text_path.read_bytes():
        raise RuntimeError(f"{inp} exists and differs from {text_path}; remove it to re-prepare")
    outs = [data_dir / n for n in ("train.bin", "val.bin", "meta.pkl")]
    ran = False
    if force or not all(p.exists() for p in outs):
        cmd = [python, "prepare.py"]
        res = _run(cmd, data_dir, _env(python, None, None), 600, None, False)
        _check(res, cmd)
        ran = True
    with open(data_dir / "meta.pkl", "rb") as f:
        meta = pickle.load(f)
    return {"data_dir": str(data_dir), "input": str(inp), "ran_prepare": ran, "vocab_size": meta["vocab_size"],
            "train_tokens": (data_dir / "train.bin").stat().st_size // 2,
            "val_tokens": (data_dir / "val.bin").stat().st_size // 2}


def parse_train_stdout(text: str) -> dict:
    """Parse nanoGPT train.py stdout: iteration lines, eval lines and a few header facts."""
    iters = [{"iter": int(i), "loss": float(l), "dt_ms": float(t), "mfu_pct": float(m)}
             for i, l, t, m in _ITER_RE.findall(text)]
    evals = [{"step": int(s), "train_loss": float(tr), "val_loss": float(va)}
             for s, tr, va in _EVAL_RE.findall(text)]
    m = _TOKENS_PER_ITER_RE.search(text)
    n = _NPARAMS_RE.search(text)
    fz = _FUSED_RE.search(text)
    return {"iters": iters, "evals": evals,
            "tokens_per_iter": int(m.group(1).replace(",", "")) if m else None,
            "n_params_m": float(n.group(1)) if n else None,
            "fused_adamw": (fz.group(1) == "True") if fz else None}


def summarize_train(result: dict, skip_first: int = 5, tokens_per_iter: int | None = None) -> dict:
    """Median/mean ms per iteration over iterations >= skip_first that did not include an evaluation,
    tokens/s from the median, and the last evaluation's losses."""
    eval_steps = {e["step"] for e in result["evals"]}
    dts = [it["dt_ms"] for it in result["iters"] if it["iter"] >= skip_first and it["iter"] not in eval_steps]
    tpi = tokens_per_iter or result.get("tokens_per_iter")
    out = {"n_timed": len(dts), "skip_first": skip_first, "tokens_per_iter": tpi}
    if dts:
        med = statistics.median(dts)
        q = statistics.quantiles(dts, n=4) if len(dts) > 1 else [med, med, med]
        out.update(median_ms=med, mean_ms=statistics.fmean(dts), min_ms=min(dts), p25_ms=q[0], p75_ms=q[2],
                   tokens_per_sec=(tpi * 1000.0 / med) if tpi else None)
    if result["evals"]:
        last = result["evals"][-1]
        out.update(last_eval_step=last["step"], last_train_loss=last["train_loss"], last_val_loss=last["val_loss"])
    return out


def run_nanogpt_train(nanogpt_dir, overrides: list[str], out_dir, *, config: str | None = SHAKESPEARE_CHAR_CONFIG,
                      python: str = sys.executable, threads: int | None = None, timeout: float | None = None,
                      log_path=None, echo: bool = False, env: dict | None = None, skip_first: int = 5) -> dict:
    """Run `python train.py [config] *overrides --out_dir=out_dir` in the checkout and parse its stdout.

    overrides are nanoGPT's own `--key=value` arguments (e.g. BABY_CPU_OVERRIDES). Returns
    {cmd, returncode, wall_s, cpu_s, iters: [{iter, loss, dt_ms, mfu_pct}], evals: [{step, train_loss,
    val_loss}], tokens_per_iter, n_params_m, fused_adamw, summary (see summarize_train), stdout, stderr}.
    `threads` sets OMP_NUM_THREADS/MKL_NUM_THREADS for the child. Raises RuntimeError on failure.
    """
    d = resolve_nanogpt_dir(nanogpt_dir)
    if any(o.startswith("--out_dir=") for o in overrides):
        raise ValueError("give out_dir as the argument, not in overrides")
    out_dir = Path(out_dir).resolve()
    if Path(out_dir).resolve().is_relative_to(d):
        raise ValueError("out_dir must be outside the nanoGPT checkout")
    cmd = [python, "train.py"] + ([config] if config else []) + list(overrides) + [f"--out_dir={out_dir}"]
    res = _run(cmd, d, _env(python, threads, env), timeout, log_path, echo)
    _check(res, cmd)
    parsed = parse_train_stdout(res["stdout"])
    result = {"cmd": cmd, "cwd": str(d), "out_dir": str(out_dir), **res, **parsed}
    result["summary"] = summarize_train(result, skip_first=skip_first)
    return result


def run_nanogpt_sample(nanogpt_dir, out_dir, *, start: str = "\n", max_new_tokens: int = 500,
                       num_samples: int = 1, dtype: str | None = "float32", device: str = "cpu",
                       seed: int | None = None, temperature: float | None = None, top_k: int | None = None,
                       extra_overrides: list[str] | None = None, python: str = sys.executable,
                       threads: int | None = None, timeout: float | None = None, env: dict | None = None) -> dict:
    """Run nanoGPT's sample.py (init_from='resume' from out_dir/ckpt.pt) and time its generation.

    sample.py itself is run unchanged through a small wrapper that times each GPT.generate call with
    perf_counter (so model loading and interpreter start-up are not counted). dtype=None keeps
    sample.py's default (it is irrelevant on CPU: the autocast context is a nullcontext there).
    Returns {tokens_per_sec (all new tokens / all generate seconds), samples: [text, ...], text (first),
    calls: [{prompt_tokens, new_tokens, seconds, param_dtype, autocast_cpu, threads}], wall_s, cpu_s, cmd, ...}.
    """
    d = resolve_nanogpt_dir(nanogpt_dir)
    out_dir = Path(out_dir).resolve()
    _check_start(start)
    if not (out_dir / "ckpt.pt").is_file():
        raise FileNotFoundError(f"no ckpt.pt in {out_dir}")
    ov = ["--init_from=resume", f"--out_dir={out_dir}", f"--device={device}", "--compile=False",
          f"--num_samples={num_samples}", f"--max_new_tokens={max_new_tokens}", f"--start={start}"]
    if dtype is not None:
        ov.append(f"--dtype={dtype}")
    if seed is not None:
        ov.append(f"--seed={seed}")
    if temperature is not None:
        ov.append(f"--temperature={float(temperature)}")
    if top_k is not None:
        ov.append(f"--top_k={int(top_k)}")
    ov += list(extra_overrides or [])
    cmd = [python, "-c", _SAMPLE_WRAPPER] + ov
    res = _run(cmd, d, _env(python, threads, env), timeout, None, False)
    _check(res, cmd)
    calls = [json.loads(line[len(_BENCH_MARK):]) for line in res["stderr"].splitlines()
             if line.startswith(_BENCH_MARK)]
    if not calls:
        raise RuntimeError("sample.py ran but no generate timing was recorded")
    ids = [c.pop("ids") for c in calls]
    samples = _decode_samples(d, out_dir, ids)
    if samples is None:  # no char meta: fall back to what sample.py printed
        body = res["stdout"]
        k = max(body.rfind("Loading meta from"), body.rfind("No meta.pkl found"))
        body = body[body.index("\n", k) + 1:] if k >= 0 else body
        samples = [s.rstrip("\n") for s in body.split(_SAMPLE_SEP)][:len(calls)]
    new = sum(c["new_tokens"] for c in calls)
    secs = sum(c["seconds"] for c in calls)
    shown_cmd = [python, "-c", "<bench.nanogpt sample wrapper: runpy sample.py>"] + ov
    return {"cmd": shown_cmd, "cwd": str(d), "tokens_per_sec": new / secs if secs > 0 else None,
            "new_tokens": new, "generate_s": secs, "calls": calls, "samples": samples,
            "text": samples[0] if samples else "", **{k: res[k] for k in ("returncode", "wall_s", "cpu_s",
                                                                            "stdout", "stderr")}}


def _check_start(start: str) -> None:
    """nanoGPT's configurator splits `--key=value` on every '=' and literal_evals the value, keeping the
    result only when its type matches (str here): refuse prompts it would mangle or reject."""
    if "=" in start:
        raise ValueError("nanoGPT's configurator cannot take a --start containing '='; use start='FILE:path'")
    try:
        val = ast.literal_eval(start)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return
    if not isinstance(val, str) or val != start:
        raise ValueError(f"nanoGPT's configurator would turn --start={start!r} into {val!r}; use start='FILE:path'")


def _decode_samples(nanogpt_dir: Path, out_dir: Path, ids: list[list[int]]) -> list[str] | None:
    """Decode generated ids with the dataset's meta.pkl (char-level) when the checkpoint names one."""
    try:
        import torch
        ck = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
        meta_path = nanogpt_dir / "data" / ck["config"]["dataset"] / "meta.pkl"
        with open(meta_path, "rb") as f:
            itos = pickle.load(f)["itos"]
        return ["".join(itos[i] for i in seq) for seq in ids]
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt", default=None, help="nanoGPT checkout (default: $NANOGPT_DIR)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL threads for the nanoGPT process")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="prepare data/shakespeare_char")
    p.add_argument("--text", default=str(Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"))
    p.add_argument("--force", action="store_true")
    t = sub.add_parser("train", help="run train.py; nanoGPT overrides after --")
    t.add_argument("--out", required=True)
    t.add_argument("--preset", choices=["baby", "full", "none"], default="none",
                   help="prepend BABY_CPU_OVERRIDES or FULL_CPU_THROUGHPUT_OVERRIDES")
    t.add_argument("--no-config", action="store_true", help=f"do not pass {SHAKESPEARE_CHAR_CONFIG}")
    t.add_argument("--skip-first", type=int, default=5)
    t.add_argument("--log", default=None)
    t.add_argument("--echo", action="store_true")
    t.add_argument("overrides", nargs="*")
    s = sub.add_parser("sample", help="run sample.py from OUT/ckpt.pt and time generation")
    s.add_argument("--out", required=True)
    s.add_argument("--max-new-tokens", type=int, default=500)
    s.add_argument("--num-samples", type=int, default=1)
    s.add_argument("--start", default="\n")
    s.add_argument("--dtype", default="float32", help="'default' keeps sample.py's own default")
    a = ap.parse_args(argv)
    d = resolve_nanogpt_dir(a.nanogpt)
    if a.cmd == "prepare":
        out = prepare_nanogpt_data(d, a.text, python=a.python, force=a.force)
    elif a.cmd == "train":
        pre = {"baby": BABY_CPU_OVERRIDES, "full": FULL_CPU_THROUGHPUT_OVERRIDES, "none": []}[a.preset]
        r = run_nanogpt_train(d, pre + a.overrides, a.out, config=None if a.no_config else SHAKESPEARE_CHAR_CONFIG,
                              python=a.python, threads=a.threads, log_path=a.log, echo=a.echo,
                              skip_first=a.skip_first)
        out = {k: r[k] for k in ("cmd", "wall_s", "cpu_s", "tokens_per_iter", "n_params_m", "fused_adamw",
                                 "evals", "summary")}
    else:
        r = run_nanogpt_sample(d, a.out, start=a.start, max_new_tokens=a.max_new_tokens,
                               num_samples=a.num_samples, dtype=None if a.dtype == "default" else a.dtype,
                               python=a.python, threads=a.threads)
        out = {k: r[k] for k in ("cmd", "tokens_per_sec", "new_tokens", "generate_s", "calls", "wall_s", "text")}
    out["nanogpt_dir"], out["nanogpt_commit"] = str(d), nanogpt_commit(d) or NANOGPT_COMMIT + " (expected)"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
