"""GPT-2: token + position embeddings -> pre-LayerNorm transformer blocks -> LayerNorm -> tied output head.

Submodule names follow GPT-2 (wte, wpe, h, ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj,
ln_f) so weights map one-to-one to Hugging Face's GPT2LMHeadModel. The defaults are GPT-2; ModelConfig's
later options (position, norm, activation, qk_norm, bias, tie_embeddings; models/modern.py) swap pieces in place.
`forward` is the plain pass. Beside it: the pass through a KV cache (generation; with a RowKVCache, one token
per row, each row at its own position: the batched engine's decoding step) and the pass that keeps the
internals (inspection). The ladder's ablations, the GPT with one piece switched off, are in ablations.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.models.attention import CausalSelfAttention, KVCache, RowKVCache
from tinygpt.models.attention_kernels import cached_attention_kernels
from tinygpt.models.base import LanguageModel
from tinygpt.models.fast_dropout import Dropout
from tinygpt.models.loss import next_token_loss
from tinygpt.models.modern import ReluSquared, RMSNorm, SwiGLU


class MLP(nn.Module):
    """Position-wise feed-forward: expand 4x, GELU, project back. GPT-2 used GELU's tanh approximation
    (activation "gelu_tanh"), so its weights give its logits only with that one. Activation "relu2" puts
    squared ReLU in GELU's place."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.act = ReluSquared() if cfg.activation == "relu2" else \
            nn.GELU(approximate="tanh" if cfg.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


def norm(cfg: ModelConfig) -> nn.Module:
    """GPT-2's LayerNorm, or RMSNorm (cfg.norm)."""
    return RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def feed_forward(cfg: ModelConfig) -> nn.Module:
    """GPT-2's MLP, or SwiGLU (cfg.activation)."""
    return SwiGLU(cfg) if cfg.activation == "swiglu" else MLP(cfg)


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)): the residual stream is read and written, never replaced."""

    def __init__(self, cfg: ModelConfig, rotary: bool = False):
        super().__init__()
        self.ln_1 = norm(cfg)
        self.attn = CausalSelfAttention(cfg, rotary)
        self.ln_2 = norm(cfg)
        self.mlp = feed_forward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x

    def forward_cached(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward() for new tokens, their attention through the KV cache."""
        x = x + self.attn.forward_cached(self.ln_1(x), cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x

    def forward_with_weights(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward's output, the block's attention weights (B, nh, T, T_total))."""
        a, weights = self.attn.forward_with_weights(self.ln_1(x), cache, layer)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(LanguageModel):
    """forward(idx, targets=None) -> (logits (B, T, vocab), loss or None).

    `cache`: a KVCache; idx then holds only the new tokens, placed at positions cache.pos onwards. Or a
      RowKVCache: idx (slots, 1) holds one new token per slot, each at its own position (attention.py).
    `capture`: pass a dict to receive internals under stable names (attention then runs written out):
      "embed"      (B, T, C)     token + position embedding
      "attn.{i}"   (B, nh, T, T) attention weights of layer i (rows sum to 1, zero above the diagonal)
      "resid.{i}"  (B, T, C)     residual stream after block i
      "ln_f"       (B, T, C)     final LayerNorm output (what the head reads)
    """

    can_cache = True
    can_cache_rows = True
    can_capture = True
    model_types: tuple[str, ...] = ("gpt",)  # the cfg.model it builds (the ablations are AblatedGPT's)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.model not in self.model_types:
            raise ValueError(f"{type(self).__name__} does not build model {cfg.model!r}; build_model(cfg) builds "
                             f"every model type")
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            drop=Dropout(cfg.dropout),
            h=nn.ModuleList(self.new_block() for _ in range(cfg.n_layer)),
            ln_f=self.new_norm(),
        ))
        if self.learned_positions():
            self.transformer.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # weight tying: one matrix reads and writes tokens
            self.lm_head.weight = self.transformer.wte.weight
        # (untied, tie_embeddings=False: what it fixes is one matrix serving two jobs, recognising a token at the
        # input and predicting it at the output, whose best values differ; it costs vocab × n_embd weights)
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: normal weights (std init_std, 0.02 by default), zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None, capture: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if capture is not None:
            logits = self.forward_captured(idx, capture, cache)
        elif cache is not None:
            logits = self.forward_cached(idx, cache)
        else:
            x = self.embed(idx)  # (B, T, C)
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        return logits, None if targets is None else next_token_loss(logits, targets)

    def embed(self, idx: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Token (+ position) embeddings of idx (B, T), whose tokens sit at positions start onwards, or at
        `positions` (B, T) given token by token (the batched engine's rows): (B, T, C)."""
        T = idx.size(1)
        if positions is None and start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} positions exceeds block_size {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:  # learned positions (GPT-2's); rotary ones turn q and k inside attention
            if positions is None:
                positions = torch.arange(start, start + T, device=idx.device)
            x = x + self.transformer.wpe(positions)
        return self.transformer.drop(x)

    # --- beside the plain pass: generation through the KV cache, and the internals for inspection ------------
    def forward_cached(self, idx: torch.Tensor, cache: KVCache | RowKVCache) -> torch.Tensor:
        """Logits (B, T, vocab) of new tokens idx (B, T) at positions cache.pos onwards; every layer's keys and
        values of them join the cache, and cache.pos moves past them. With a RowKVCache: forward_rows."""
        if isinstance(cache, RowKVCache):
            return self.forward_rows(idx, cache)
        x = self.embed(idx, start=cache.pos)
        with cached_attention_kernels(idx.device):
            for i, block in enumerate(self.transformer.h):
                x = block.forward_cached(x, cache, i)
        cache.pos += idx.size(1)
        return self.readout(x)

    def forward_rows(self, idx: torch.Tensor, cache: RowKVCache) -> torch.Tensor:
        """Logits (S, 1, vocab) of one new token per slot, idx (S, 1), slot i's at position cache.positions[i]
        (the engine points the cache first). Shapes depend only on the cache's size: one compiled graph serves
        every step."""
        x = self.embed(idx, positions=cache.positions[:, None])  # (S, 1, C)
        for i, block in enumerate(self.transformer.h):
            x = block.forward_cached(x, cache, i)
        return self.readout(x)

    def forward_captured(self, idx: torch.Tensor, capture: dict, cache: KVCache | None = None) -> torch.Tensor:
        """forward()'s logits, with the internals put in `capture` (see the class docstring); with a cache, as
        forward_cached. Attention runs written out (manual_attention), which is what gives its weights."""
        x = self.embed(idx, start=cache.pos if cache is not None else 0)
        capture["embed"] = x
        for i, block in enumerate(self.transformer.h):
            x, capture[f"attn.{i}"] = block.forward_with_weights(x, cache, i)
            capture[f"resid.{i}"] = x
        if cache is not None:
            cache.pos += idx.size(1)
        capture["ln_f"] = self.transformer.ln_f(x)
        return self.readout(x)

    # --- what __init__ builds; the ladder's ablations (ablations.py) build less ------------------------------
    def new_block(self) -> nn.Module:
        return Block(self.config, rotary=self.config.position == "rotary")

    def new_norm(self) -> nn.Module:
        return norm(self.config)

    def learned_positions(self) -> bool:
        return self.config.position == "learned"

    # --- the LanguageModel interface (models/base.py) --------------------------------------------------------
    @property
    def attention_layers(self) -> int:
        return self.config.n_layer

    @property
    def attention_heads(self) -> int:
        return self.config.n_head

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.transformer.h)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.transformer.wte

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer.ln_f(x))

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, max_len: int | None = None) -> KVCache:
        cfg = self.config
        p = self.transformer.wte.weight  # the activations' dtype (the head may hold int8: models/quantize.py)
        return KVCache(cfg.n_layer, batch_size, cfg.n_head, max_len or cfg.block_size, cfg.head_size,
                       device or p.device, dtype or p.dtype)

    def new_row_cache(self, slots: int) -> RowKVCache:
        """The batched engine's cache: `slots` rows, each with the whole window (attention.py's RowKVCache)."""
        cfg = self.config
        p = self.transformer.wte.weight  # the activations' dtype (the head may hold int8: models/quantize.py)
        return RowKVCache(cfg.n_layer, slots, cfg.n_head, cfg.block_size, cfg.head_size, p.device, p.dtype)
