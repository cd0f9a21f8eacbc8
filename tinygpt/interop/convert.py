"""Hugging Face checkpoints in and out, whatever their architecture: an import reads config.json to pick GPT-2 or
Llama (gpt2.py, llama.py); an export picks the format that computes the run's model, or refuses it in one line."""
from __future__ import annotations

from pathlib import Path

from tinygpt.config import ModelConfig
from tinygpt.interop.common import ExportResult, HFError, ImportResult, check_out, read_json
from tinygpt.interop.gpt2 import export_gpt2, gpt2_gaps, import_gpt2
from tinygpt.interop.llama import export_llama, import_llama, llama_gaps
from tinygpt.training.checkpoint import load_model
from tinygpt.training.run import Run


def import_hf(folder: str | Path, out: str | Path) -> ImportResult:
    """import_gpt2, or llama.import_llama for a folder whose config.json says Llama or Qwen3."""
    path = Path(folder) / "config.json"
    cfg = read_json(path) if path.is_file() else None  # no folder, no config: import_gpt2 says so
    if isinstance(cfg, dict) and cfg.get("model_type") in ("llama", "qwen3"):
        return import_llama(folder, out)
    return import_gpt2(folder, out)


def check_exportable(cfg: ModelConfig, where: str) -> str:
    """Which format holds the model: "gpt2", or "llama" for a GPT with the modern options (llama.py). Refuses
    the ladder's teaching rungs and ablations, a GPT-2 without biases, and mixtures neither format computes."""
    if cfg.model == "gpt" and gpt2_gaps(cfg):
        llama = llama_gaps(cfg)
        if llama:
            raise HFError(f"{where} holds a GPT with {gpt2_gaps(cfg)[0]}, which GPT-2 does not compute, and with "
                          f"{llama[0]}, which Llama cannot express; it cannot be exported")
        return "llama"
    if cfg.model != "gpt":
        rung = "a teaching rung of the ladder" if cfg.model in ("bigram", "single_head", "multi_head") \
            else "an ablation of the ladder"
        raise HFError(f"{where} holds a {cfg.model!r} model ({rung}); only GPT-2-shaped models (model 'gpt') can "
                      f"be exported to Hugging Face")
    if not cfg.bias:
        raise HFError(f"{where} holds a GPT without biases; GPT-2 has biases in every layer, so it cannot be "
                      f"exported (Llama has none, but also needs rotary positions, RMSNorm and SwiGLU)")
    return "gpt2"


def export_hf(run: str | Path, out: str | Path, which: str = "best") -> ExportResult:
    """Write a run's GPT (its `which` checkpoint) as a folder that `GPT2LMHeadModel.from_pretrained` and
    `AutoTokenizer.from_pretrained` load offline: config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json. Built in a temporary directory and renamed into place. A GPT with the modern options
    is written as LlamaForCausalLM (Qwen3ForCausalLM with QK-norm) instead: llama.export_llama."""
    out = Path(out)
    check_out(out)
    source = Run(run)
    ckpt = source.checkpoint(which)
    kind = check_exportable(source.model_config(which), str(ckpt))  # before loading any weights
    model, tok, _ = load_model(ckpt)
    return (export_llama if kind == "llama" else export_gpt2)(model, tok, ckpt, out)


__all__ = ["import_hf", "check_exportable", "export_hf"]
