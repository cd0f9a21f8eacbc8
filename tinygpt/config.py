"""Typed configuration: the model and training dataclasses, named presets, overrides and validation.

Importable without torch. The dataclasses are the single source of truth: every checkpoint stores them
in config.json and is rebuilt from it. Hyperparameters keep nanoGPT's names.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL_TYPES = ("bigram", "single_head", "multi_head", "gpt",
               "gpt_no_pos", "gpt_no_residual", "gpt_no_layernorm", "gpt_no_mlp")
# the MLP's nonlinearity: exact GELU (ours), GELU's tanh approximation (GPT-2's "gelu_new"), squared ReLU, SwiGLU
ACTIVATIONS = ("gelu", "gelu_tanh", "relu2", "swiglu")
POSITIONS = ("learned", "rotary")  # a learned embedding per position (GPT-2), or rotary embeddings inside attention
NORMS = ("layernorm", "rmsnorm")
OPTIMIZERS = ("adamw", "muon")  # muon: Muon for the blocks' matrices, AdamW for the rest
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


class SettingText(str):
    """A text (an error message, a help line) that names settings: as a str it names each one as the Python API
    does ("chat_loss applies to chat data"; a switch as the keyword argument that turns it on: "use resume=True
    to continue it", see SWITCHES); `spelled(flag)` names them as the caller spells them, which is how
    the command line says "--chat_loss applies to chat data". Only tinygpt.cli words settings as flags.

    The template marks each setting it names with backquotes, and lists them after it (only listed names are
    replaced, so a backquote in a path or a prompt stays as it is):

        raise ConfigError(SettingText("`chat_loss` applies to chat data", "chat_loss"))

    The errors stay what they are (ConfigError, RunError, DataError, ...); their message is a SettingText, so
    `str(error)` reads as the library speaks and the command line asks the message for its flags. Joining
    keeps the names: SettingText(...) + " more" is a SettingText.
    """

    template: str
    names: tuple[str, ...]

    def __new__(cls, template: str, *names: str) -> "SettingText":
        text = super().__new__(cls, _spell(template, names, python_name))
        text.template, text.names = template, names
        return text

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The text with each setting named as spell(name) says: spelled(lambda n: "--" + n) for flags."""
        return _spell(self.template, self.names, spell)

    def __add__(self, other: str) -> "SettingText":
        more = other.names if isinstance(other, SettingText) else ()
        return SettingText(self.template + getattr(other, "template", other), *self.names, *more)

    def __radd__(self, other: str) -> "SettingText":
        return SettingText(other + self.template, *self.names)


# Settings that are switched on, not given a value: a bare flag on the command line (`--resume`), a keyword
# argument set to True from Python (`train(..., resume=True)`), which is how str(SettingText) names them.
SWITCHES = frozenset({"resume", "overwrite", "change_data", "skip_bad_lines"})


def python_name(name: str) -> str:
    """A setting as a Python caller writes it: python_name("resume") == "resume=True", else the name itself."""
    return f"{name}=True" if name in SWITCHES else name


def _spell(template: str, names: Sequence[str], spell: Callable[[str], str]) -> str:
    for name in names:
        template = template.replace(f"`{name}`", spell(name))
    return template


class ConfigError(ValueError):
    """An invalid configuration value or key; the message is one line, fit for the CLI."""


DEFAULT_TEMPERATURE = 0.8  # sampling temperature of `tinygpt sample` and `tinygpt inspect` for text runs


@dataclass
class ModelConfig:
    """Architecture: what `build_model` needs. `vocab_size` comes from the tokenizer."""

    model: str = "gpt"
    vocab_size: int = 0
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    init_std: float = 0.02  # GPT weights start ~ N(0, init_std²), as GPT-2; small models learn faster with more
    activation: str = "gelu"  # the MLP's GELU: "gelu" (exact) or "gelu_tanh" (GPT-2's approximation, for its weights)
    # After GPT-2 (models/modern.py says what each fixes). The defaults are GPT-2's, so old checkpoints load.
    position: str = "learned"     # "rotary": rotary position embeddings instead of the learned wpe table
    rope_theta: float = 10000.0   # rotary's base: pair i turns by position * rope_theta^(-2i/head_size)
    norm: str = "layernorm"       # "rmsnorm": scale only, no centring and no shift
    qk_norm: bool = False         # RMSNorm on every head's queries and keys before their dot product
    tie_embeddings: bool = True   # False: the output head is a matrix of its own, not wte

    def __post_init__(self) -> None:
        _check_finite(self)
        if self.model not in MODEL_TYPES:
            raise ConfigError(f"model must be one of {', '.join(MODEL_TYPES)}, got {self.model!r}")
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            _check_positive(name, getattr(self, name))
        if self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be >= 0, got {self.vocab_size}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.init_std <= 1.0:  # also refuses NaN
            raise ConfigError(f"init_std must be in (0, 1], got {self.init_std}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.rope_theta <= 1.0:
            raise ConfigError(f"rope_theta must be > 1, got {self.rope_theta}")
        if self.position == "rotary" and self.head_size % 2:
            raise ConfigError(f"rotary position embeddings turn pairs of numbers: head size n_embd / n_head "
                              f"({self.head_size}) must be even")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        """A copy with the tokenizer's vocabulary size (validated like any other field)."""
        return dataclasses.replace(self, vocab_size=vocab_size)


@dataclass
class TrainConfig:
    """Optimisation, evaluation, logging and hardware settings for the one training loop."""

    batch_size: int = 32
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0 means "same as max_iters"
    decay_lr: bool = True
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    gradient_accumulation_steps: int = 1
    eval_interval: int = 250
    eval_iters: int = 100
    log_interval: int = 10
    val_fraction: float = 0.1
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    fsdp: bool = False           # under torchrun: shard weights, gradients and optimizer state over the processes
    seed: int = 1337
    optimizer: str = "adamw"     # "muon": Muon (optim.py) for the blocks' 2-D matrices, AdamW for everything else
    muon_lr: float = 0.02        # Muon's peak learning rate; it follows learning_rate's schedule in proportion
    muon_momentum: float = 0.95

    def __post_init__(self) -> None:
        _check_finite(self)
        if not 0 <= self.seed < 2 ** 63:
            raise ConfigError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval",
                     "gradient_accumulation_steps"):
            _check_positive(name, getattr(self, name))
        for name in ("warmup_iters", "lr_decay_iters"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate == 0:
            raise ConfigError("learning_rate must be > 0")
        if self.min_lr > self.learning_rate:
            raise ConfigError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.muon_lr <= 0:
            raise ConfigError(f"muon_lr must be > 0, got {self.muon_lr}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (cuda:N allowed), got {self.device!r}")

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


def _check_finite(cfg: Any) -> None:
    """Every float setting must be a number: inf and NaN are refused wherever they appear."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number, got {value}")


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


# Named recipes. Exact names only. shakespeare_char holds nanoGPT's Shakespeare-character numbers.
PRESETS: dict[str, dict[str, Any]] = {
    "shakespeare_char": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
        learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=5000, lr_decay_iters=5000,
        beta2=0.99, eval_interval=250, eval_iters=200, log_interval=10, gradient_accumulation_steps=1,
    ),
    # A model that learns visibly within a minute on a laptop CPU (the README tour's Shakespeare run).
    "tiny_char": dict(
        n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=32,
        learning_rate=2e-3, min_lr=2e-4, warmup_iters=50, max_iters=600,
        eval_interval=200, eval_iters=20, log_interval=10,
    ),
    # Every piece added since GPT-2 switched on (the last rung of `tinygpt ladder --modern`); sizes are unchanged.
    "modern": dict(
        position="rotary", norm="rmsnorm", activation="swiglu", qk_norm=True, bias=False, tie_embeddings=False,
        optimizer="muon",
    ),
}
# The CPU speedrun (docs/guides/modern.md): the modern GPT, small enough for 2
# cores, no dropout (0.2 only slowed it), high learning rates, short context, cheap evaluations, and 800 steps: past
# about step 800 the model learns tinyshakespeare by heart and its validation loss rises. `--preset speedrun_cpu`.
PRESETS["speedrun_cpu"] = dict(
    PRESETS["modern"], n_layer=4, n_head=4, n_embd=192, block_size=128, dropout=0.0, batch_size=64,
    learning_rate=2e-3, min_lr=2e-4, warmup_iters=50, muon_lr=0.02, max_iters=800, lr_decay_iters=800,
    eval_interval=200, eval_iters=20, log_interval=50,
)

MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
ALL_KEYS = MODEL_KEYS + TRAIN_KEYS
_FIELD_TYPES = {f.name: f.type for f in fields(ModelConfig) + fields(TrainConfig)}
DEFAULTS: dict[str, Any] = {**dataclasses.asdict(ModelConfig()), **dataclasses.asdict(TrainConfig())}  # no preset


def is_yes_no(key: str) -> bool:
    """Is `key` a yes/no setting (given bare on the command line, it means true)?"""
    return _FIELD_TYPES[key] == "bool"


# One line per setting for `tinygpt train --help` (the CLI adds each default, and spells the settings a
# SettingText names as flags).
HELP: dict[str, str] = {
    "model": f"architecture: {', '.join(MODEL_TYPES)} (the teaching ladder's rungs and the full GPT)",
    "block_size": "context length in tokens",
    "n_layer": "transformer blocks",
    "n_head": "attention heads per block (must divide n_embd)",
    "n_embd": "width of the residual stream",
    "dropout": "dropout probability in training",
    "bias": "biases in the linear layers and LayerNorms",
    "init_std": "standard deviation of the initial weights",
    "activation": f"the MLP's nonlinearity: {', '.join(ACTIVATIONS)}",
    "position": f"position information: {', '.join(POSITIONS)}",
    "rope_theta": "rotary embeddings' base",
    "norm": f"normalisation: {', '.join(NORMS)}",
    "qk_norm": "RMS-normalise queries and keys per head",
    "tie_embeddings": "the output head shares the token embedding matrix",
    "batch_size": "sequences per micro-batch (per process under torchrun)",
    "max_iters": "optimizer steps in all",
    "learning_rate": "peak learning rate (AdamW)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "steps of linear warmup",
    "lr_decay_iters": "steps of cosine decay (0: max_iters)",
    "decay_lr": "decay the learning rate (false: constant after the warmup)",
    "beta1": "AdamW's beta1",
    "beta2": "AdamW's beta2",
    "weight_decay": "AdamW's weight decay (matrices and embeddings only)",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "eval_interval": "steps between evaluations (and checkpoints)",
    "eval_iters": "batches per evaluation of each split",
    "log_interval": "steps between log lines",
    "val_fraction": "share of the text held out for validation (fixed when data is prepared)",
    "device": f"{', '.join(DEVICES)} (cuda:N allowed); auto: cuda > mps > cpu",
    "dtype": SettingText(f"{', '.join(DTYPES)}; auto: bf16 on CUDA (fp16 where bf16 is missing), fp32 on MPS and "
                         "on CPUs without bf16 units, and on CPUs with them the faster of fp32 and bf16, timed on the "
                         "model at hand (bf16 untimed when sharded with `fsdp`); a resumed run keeps the precision it "
                         "began with", "fsdp"),
    "compile": "torch.compile the model (compiling takes seconds to minutes)",
    "fsdp": "under torchrun: shard weights, gradients and optimizer state over the processes",
    "seed": "random seed of the run",
    "optimizer": f"{', '.join(OPTIMIZERS)}; muon: Muon for the blocks' matrices, AdamW for the rest",
    "muon_lr": "Muon's peak learning rate",
    "muon_momentum": "Muon's momentum",
}


def parse_value(key: str, raw: Any) -> Any:
    """Convert a raw CLI/TOML value to the field's type. `parse_value('dropout', '0.1') == 0.1`."""
    if key not in _FIELD_TYPES:
        raise ConfigError(unknown_key_message(key))
    kind = _FIELD_TYPES[key]
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, str):
                f = float(raw)  # accepts "2e3"
                if not f.is_integer():
                    raise ValueError
                return int(f)
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"invalid value for {key}: {raw!r} (expected {kind})") from None


def unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, ALL_KEYS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config key {key!r}{hint}"


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return d


def build_configs(overrides: dict[str, Any], preset: str | None = None, vocab_size: int = 0
                  ) -> tuple[ModelConfig, TrainConfig]:
    """defaults < preset < overrides; values are converted to the field types and validated. vocab_size comes
    from the tokenizer (0: not known yet; `with_vocab` sets it later, validated again)."""
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
        merged.update(PRESETS[preset])
    for k, v in overrides.items():
        merged[k] = parse_value(k, v)
    if "vocab_size" in merged:
        raise ConfigError("vocab_size is not a setting: it comes from the tokenizer")
    model = ModelConfig(**{k: v for k, v in merged.items() if k in MODEL_KEYS}, vocab_size=vocab_size)
    train = TrainConfig(**{k: v for k, v in merged.items() if k in TRAIN_KEYS})
    return model, train


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**{k: v for k, v in d.items() if k in MODEL_KEYS})


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in d.items() if k in TRAIN_KEYS})


def asdict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


__all__ = ["ModelConfig", "TrainConfig", "ConfigError", "SettingText", "PRESETS", "build_configs", "parse_value",
           "load_toml", "model_config_from_dict", "train_config_from_dict"]
