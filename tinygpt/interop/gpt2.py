"""Hugging Face GPT-2 interop: a local GPT-2 folder becomes a tinygpt checkpoint (`import_gpt2`), and a tinygpt GPT
becomes a folder that `transformers` loads (`export_gpt2`). One key table, used in both directions. A GPT with the
options added after GPT-2 goes out (and comes back in) as Llama instead: llama.py; convert.py picks.

Our GPT uses GPT-2's submodule names, so the table is short: the layer keys with "{}" for the layer number, the
causal-mask buffers GPT-2 files carry (dropped), and the four Conv1D weights, which GPT-2 stores as (in, out)
and we as (out, in). Weights are converted one tensor at a time (tensorfiles.py): importing gpt2-xl needs
about one tensor of working memory beyond the memory-mapped files, not a second copy of the model.
Nothing here downloads anything: the folder is one the user fetched (see docs/guides/weights.md).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from tinygpt.config import ConfigError, ModelConfig
from tinygpt.files import atomic_dir
from tinygpt.generation.generate import end_of_text_id
from tinygpt.interop.common import (ExportResult, HFError, ImportResult, all_finite, check_out, hf_tokenizer_files,
                                    read_hf_tokenizer, read_json)
from tinygpt.interop.tensorfiles import TensorReader, write_safetensors
from tinygpt.models import build_model
from tinygpt.tokenizers import Tokenizer
from tinygpt.training.checkpoint import CONFIG, TOKENIZER, WEIGHTS
from tinygpt.version import __version__

# Hugging Face GPT-2 key ("{}": the layer number) -> our key; None: not one of our weights.
KEY_MAP: dict[str, str | None] = {
    "wte.weight": "transformer.wte.weight",
    "wpe.weight": "transformer.wpe.weight",
    **{f"h.{{}}.{name}": f"transformer.h.{{}}.{name}" for name in (
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias")},
    "ln_f.weight": "transformer.ln_f.weight",
    "ln_f.bias": "transformer.ln_f.bias",
    "h.{}.attn.bias": None,         # the causal mask, a buffer in older GPT-2 files
    "h.{}.attn.masked_bias": None,  # the value masked scores were set to, likewise
    "lm_head.weight": None,         # the output head is wte itself (tied); checked equal on import
}
# GPT-2's Conv1D stores these as (in, out): transposed in both directions.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT2LMHeadModel.save_pretrained writes "transformer."-prefixed keys; the original hub files (GPT2Model) do not.
PREFIX = "transformer."

# The activation names of transformers' GPT-2 config -> ours. gelu_new, gelu_pytorch_tanh and gelu_fast all
# compute GELU's tanh approximation (GPT-2's own); "gelu" is the exact GELU.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
# GPT2Config's defaults, for the keys a config.json may leave out.
HF_DEFAULTS: dict[str, Any] = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                               "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                               "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                               "add_cross_attention": False, "tie_word_embeddings": True}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which our GPT uses


def layer_keys(n_layer: int) -> dict[str, str | None]:
    """KEY_MAP with the layers written out: layer_keys(2)["h.1.ln_1.weight"] == "transformer.h.1.ln_1.weight"."""
    out: dict[str, str | None] = {}
    for hf, ours in KEY_MAP.items():
        for i in range(n_layer) if "{}" in hf else [None]:
            out[hf.format(i)] = None if ours is None else ours.format(i)
    return out


def is_transposed(key: str) -> bool:
    return key.endswith(TRANSPOSED)


# --- configs ---------------------------------------------------------------------------------------

def model_config_from_hf(hf: dict[str, Any], where: str = CONFIG) -> ModelConfig:
    """Our ModelConfig for a GPT-2 config.json; anything GPT-2 allows that our GPT does not compute is refused."""
    if not isinstance(hf, dict):
        raise HFError(f"{where} does not hold a JSON object")
    kind = hf.get("model_type")
    if kind != "gpt2":
        raise HFError(f"{where} describes a model of type {kind!r}, not GPT-2 ('gpt2'); only GPT-2 models can be "
                      f"imported")
    c = {**HF_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "n_inner"}}
    act = c["activation_function"]
    if act not in ACTIVATIONS:
        raise HFError(f"{where}: activation_function {act!r} is not one of GPT-2's ({', '.join(ACTIVATIONS)})")
    checks = [
        (c["n_inner"] in (None, 4 * c["n_embd"]), f"n_inner {c['n_inner']} (our MLP is 4 × n_embd wide)"),
        (math.isclose(float(c["layer_norm_epsilon"]), LAYER_NORM_EPS, rel_tol=1e-6),
         f"layer_norm_epsilon {c['layer_norm_epsilon']} (ours is {LAYER_NORM_EPS})"),
        (c["scale_attn_weights"] is True, "scale_attn_weights false"),
        (c["scale_attn_by_inverse_layer_idx"] is False, "scale_attn_by_inverse_layer_idx true"),
        (c["add_cross_attention"] is False, "cross-attention"),
        (c["tie_word_embeddings"] is True, "an output head separate from the token embedding"),
    ]
    for ok, what in checks:
        if not ok:
            raise HFError(f"{where}: {what} is not supported; our GPT computes standard GPT-2 only")
    try:
        return ModelConfig(model="gpt", vocab_size=int(c["vocab_size"]), block_size=int(c["n_positions"]),
                           n_layer=int(c["n_layer"]), n_head=int(c["n_head"]), n_embd=int(c["n_embd"]),
                           dropout=0.0, bias=True, init_std=float(hf.get("initializer_range", 0.02)),
                           activation=ACTIVATIONS[act])
    except (ConfigError, TypeError, ValueError) as e:
        raise HFError(f"{where}: {e}") from None


def hf_config(cfg: ModelConfig, eos_id: int | None) -> dict[str, Any]:
    """A transformers GPT2Config (as config.json) for our GPT-2-shaped model."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_inner": None, "activation_function": EXPORT_ACTIVATIONS[cfg.activation],
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS, "initializer_range": cfg.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": True, "use_cache": True, "bos_token_id": eos_id, "eos_token_id": eos_id,
        "dtype": "float32",
    }


def gpt2_gaps(cfg: ModelConfig) -> list[str]:
    """The options after GPT-2 that `cfg` switches on (a GPT2LMHeadModel computes none of them)."""
    gaps = []
    if cfg.position != "learned":
        gaps.append("rotary position embeddings")
    if cfg.norm != "layernorm":
        gaps.append("RMSNorm")
    if cfg.activation not in EXPORT_ACTIVATIONS:
        gaps.append(f"a {cfg.activation} MLP")
    if cfg.qk_norm:
        gaps.append("QK-norm")
    if not cfg.tie_embeddings:
        gaps.append("an untied output head")
    return gaps


# --- import ----------------------------------------------------------------------------------------

def import_gpt2(folder: str | Path, out: str | Path) -> ImportResult:
    """Turn a local Hugging Face GPT-2 folder (config.json, model.safetensors or pytorch_model.bin, possibly
    sharded, and tokenizer.json or vocab.json + merges.txt) into a tinygpt checkpoint directory at `out`.

    Every check (config, tokenizer, names and shapes of all tensors) comes before anything is written; the
    checkpoint is built in a temporary directory and renamed into place, so a failure leaves nothing behind.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise HFError(f"no such folder: {folder} (a Hugging Face GPT-2 folder, fetched beforehand)")
    check_out(out)
    cfg = model_config_from_hf(read_json(folder / "config.json"), str(folder / "config.json"))
    tok, tok_files = read_hf_tokenizer(folder)
    if tok.vocab_size != cfg.vocab_size:
        raise HFError(f"{folder}: the model has {cfg.vocab_size} token embeddings but the tokenizer "
                      f"({tok_files}) has {tok.vocab_size} tokens; they must be equal")
    with TensorReader(folder) as reader:
        plan = _import_plan(reader, cfg, folder)
        n_params = sum(math.prod(shape) for _, _, shape in plan.values())
        specs = [(ours, torch.float32, shape) for ours, (_, _, shape) in plan.items()]
        meta = {"tinygpt_version": __version__, "model": dataclasses.asdict(cfg), "tokenizer": tok.kind,
                "imported_from": {"path": str(folder.resolve()), "format": "Hugging Face GPT-2",
                                  "weights": [f.name for f in reader.files], "tokenizer": tok_files}}

        def converted(ours: str) -> torch.Tensor:
            hf, transpose, _ = plan[ours]
            t = reader.get(hf)
            if not all_finite(t):
                raise HFError(f"{folder}: tensor {hf} holds non-finite numbers (a damaged file?)")
            return (t.t() if transpose else t).to(torch.float32)

        with atomic_dir(out) as tmp:
            write_safetensors(tmp / WEIGHTS, specs, converted, metadata={"format": "pt"})
            (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
            tok.save(tmp / TOKENIZER)
        files = [f.name for f in reader.files]
    return ImportResult(out, cfg, n_params, files, tok_files)


def _import_plan(reader: TensorReader, cfg: ModelConfig, folder: Path) -> dict[str, tuple[str, bool, tuple]]:
    """our key -> (its name in the files, transposed?, our shape), after checking that the files hold exactly
    GPT-2's tensors for this config, each of the right shape. The tied output head, if stored, must equal wte."""
    where = ", ".join(f.name for f in reader.files)
    table = layer_keys(cfg.n_layer)
    by_base: dict[str, str] = {}
    for name in reader.names():
        base = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if base in by_base:
            raise HFError(f"{folder}: tensor {base} appears twice ({by_base[base]} and {name})")
        if base not in table:
            raise HFError(f"{folder}/{where} holds an unexpected tensor {name} (config.json says {cfg.n_layer} layers"
                          f" of GPT-2)")
        by_base[base] = name
    missing = [hf for hf, ours in table.items() if ours is not None and hf not in by_base]
    if missing:
        raise HFError(f"{folder}/{where} has no tensor {missing[0]}" + (f" (and {len(missing) - 1} more missing)"
                                                                       if len(missing) > 1 else ""))
    with torch.device("meta"):  # the shapes our model expects, without allocating it
        expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    plan = {}
    for hf, ours in table.items():
        if ours is None:
            continue
        transpose = is_transposed(hf)
        shape = reader.shape(by_base[hf])
        want = expected[ours][::-1] if transpose else expected[ours]
        if tuple(shape) != want:
            raise HFError(f"{folder}: tensor {by_base[hf]} has shape {list(shape)} but config.json implies "
                          f"{list(want)}")
        plan[ours] = (by_base[hf], transpose, expected[ours])
    if "lm_head.weight" in by_base:  # stored although tied: it must be wte, or the model is not GPT-2
        head, wte = reader.get(by_base["lm_head.weight"]), reader.get(by_base["wte.weight"])
        if head.shape != wte.shape or not torch.equal(head, wte):
            raise HFError(f"{folder}: lm_head.weight differs from wte.weight; GPT-2 ties them (one matrix reads "
                          f"and writes tokens), and an untied output head is not supported")
    return plan


# --- export ----------------------------------------------------------------------------------------

def export_gpt2(model: torch.nn.Module, tok: Tokenizer, ckpt: Path, out: Path) -> ExportResult:
    """Write `model` (a GPT-2-shaped GPT; checked with check_exportable by the caller) and its tokenizer as a folder
    that `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained` load offline: config.json,
    model.safetensors, tokenizer.json, tokenizer_config.json."""
    cfg: ModelConfig = model.config
    tok_docs = hf_tokenizer_files(tok, cfg.block_size, str(ckpt))
    ours = model.state_dict()
    # ours -> HF; the tied head is left out, as save_pretrained leaves it out: from_pretrained ties it to wte
    table = {o: hf for hf, o in layer_keys(cfg.n_layer).items() if o is not None}
    specs = []
    for key, hf in table.items():
        shape = tuple(ours[key].shape)
        specs.append((PREFIX + hf, torch.float32, shape[::-1] if is_transposed(hf) else shape))
    back = {PREFIX + hf: key for key, hf in table.items()}

    def converted(name: str) -> torch.Tensor:
        t = ours[back[name]].detach().to(torch.float32)
        return t.t() if is_transposed(name) else t

    with atomic_dir(out) as tmp:
        write_safetensors(tmp / "model.safetensors", specs, converted, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, end_of_text_id(tok)), indent=2), encoding="utf-8")
        for name, doc in tok_docs.items():
            (tmp / name).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(out, ckpt, files)


__all__ = ["KEY_MAP", "TRANSPOSED", "layer_keys", "model_config_from_hf", "hf_config", "gpt2_gaps", "import_gpt2",
           "export_gpt2"]
