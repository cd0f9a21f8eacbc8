"""The model zoo: every model shares forward(idx, targets=None) -> (logits, loss | None)."""
from __future__ import annotations

import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.models.ablations import VARIANTS, AblatedGPT
from tinygpt.models.attention import CausalSelfAttention, KVCache
from tinygpt.models.base import LanguageModel, Unsupported, eval_mode
from tinygpt.models.bigram import BigramLM
from tinygpt.models.gpt import GPT
from tinygpt.models.zoo import AttentionLM, Head, MultiHeadAttention

# The ladder, bottom to top, then the GPT's ablations. Every model: forward(idx, targets) -> (logits, loss).
MODELS: dict[str, type[LanguageModel]] = {"bigram": BigramLM, "single_head": AttentionLM, "multi_head": AttentionLM,
                                          **{name: GPT if name == "gpt" else AblatedGPT for name in VARIANTS}}


def build_model(cfg: ModelConfig) -> LanguageModel:
    if cfg.vocab_size <= 0:
        raise ValueError("ModelConfig.vocab_size must be set (from the tokenizer) before building a model")
    return MODELS[cfg.model](cfg)


def count_params(model: nn.Module, non_embedding: bool = False) -> int:
    """Parameters of the model (shared tensors once); non_embedding=True leaves out position embeddings."""
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or (non_embedding and name.endswith("wpe.weight")):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


__all__ = ["LanguageModel", "Unsupported", "eval_mode", "GPT", "AblatedGPT", "BigramLM", "AttentionLM", "Head",
           "MultiHeadAttention", "VARIANTS", "KVCache", "CausalSelfAttention", "MODELS", "build_model", "count_params"]
