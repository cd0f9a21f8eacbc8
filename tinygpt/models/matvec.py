"""Matrix-vector products for decoding on a CPU: the weights of a linear layer times a few rows of inputs (up to
MAX_ROWS), reading each weight once per 4 rows (matvec.cpp), where PyTorch's general matrix product reads them
at a fraction of the machine's memory bandwidth.

Why: decoding one token multiplies a single row of activations by every weight matrix of the model, so its
speed is set by how fast the weights come from memory. A GPT-2 124M model reads 0.5 GB of fp32 weights per
token; on a 2-core AMD EPYC that reads memory at about 60 GB/s, PyTorch 2.13's products for one row (MKL's
or its own) read them at 11 to 27 GB/s (docs/LOG.md). The kernel here streams each weight row once,
multiplies it by every input row while it is in registers, and shares the rows out among PyTorch's threads.

    y = matvec(x, weight)                 # x (..., K) with at most MAX_ROWS rows; weight (N, K): x @ weight.T
    y = matvec(x, q, scales)              # int8 weights: x @ (q * scales[:, None]).T
    y = matvec_reference(x, weight)       # the same product in plain PyTorch: what the tests compare with

    with decoding_with_matvec(model):     # every nn.Linear of the model takes the kernel for small inputs
        logits = model(idx)

The kernel is C++ compiled for the machine at hand the first time it is needed (torch.utils.cpp_extension:
a C++ compiler, and ninja, a dependency of tinygpt), once per machine: the library is cached in tinygpt's
cache folder. Where it cannot be built (no compiler, another platform) or does not apply (not a CPU tensor,
more than MAX_ROWS rows, in_features not a multiple of LANES, autograd recording), the ordinary product runs;
nothing changes but the speed. Whether it is faster is measured, not assumed (`faster_here`): for each weight
shape, dtype and number of rows, once per process. The sums run in another order than PyTorch's, so results
agree to fp32 rounding, not bit for bit. With int8 weights on a CPU with AVX2 or AVX-512BW, each input row is
first rounded to 16-bit integers (to a 1/65534 of its largest value, far below the int8 rounding of the
weights themselves) and multiplied as integers, which is twice as fast as turning every weight into a float;
tests bound the difference.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn

from tinygpt.cache import cache_dir

MAX_ROWS = 16  # the kernel reads the weights once per 4 rows; for more rows than this, PyTorch's matrix product
LANES = 16  # the kernel sums 16 numbers side by side: in_features must be a multiple of this
MIN_MODEL_BYTES = 16 * 2 ** 20  # smaller models' weights sit in the CPU's caches: nothing to win, nothing built
SOURCE = Path(__file__).with_name("matvec.cpp")

_FLOATS = (torch.float32, torch.bfloat16)  # the inputs the kernel takes
_WEIGHTS = (torch.float32, torch.bfloat16, torch.int8)  # and the weights

_built: dict[str, Callable | None] = {}
_why_not: list[str] = []


def matvec_reference(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ (weight * scales[:, None]).T in fp32: (..., N). The slow, obvious path."""
    w = weight.float() if scales is None else weight.float() * scales.float()[:, None]
    return x.float() @ w.T


def kernels() -> Callable | None:
    """The compiled kernel, torch.ops.tinygpt.matvec(x, weight, scales), built on first use (once per machine,
    cached on disk), or None where it cannot be built here (`unavailable_reason` says why)."""
    if "module" not in _built:
        _built["module"] = _build()
    return _built["module"]


def unavailable_reason() -> str | None:
    """Why kernels() is None, in one line; None when the kernel is built (or not yet asked for)."""
    return _why_not[0] if _why_not else None


def _build() -> Callable | None:
    if platform.system() != "Linux":
        _why_not.append(f"the decoding kernel is built on Linux only, not {platform.system()}")
        return None
    try:
        from torch.utils import cpp_extension

        with ninja_on_path():
            return _compile(cpp_extension)
    except Exception as e:  # no compiler, no ninja, a failed build: the ordinary product serves
        _why_not.append(f"the decoding kernel could not be built here ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no message'})")
        return None


@contextlib.contextmanager
def ninja_on_path() -> Iterator[None]:
    """Inside, PATH starts with the folder of the `ninja` that pip installed with tinygpt, which is not on PATH
    when the environment is used without being activated (.venv/bin/tinygpt); PATH as it was afterwards."""
    try:
        import ninja
    except ImportError:  # then a ninja on PATH, if any, serves
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _compile(cpp_extension) -> Callable:
    """Build (or load from the cache) the kernel for this machine; torch.ops.tinygpt.matvec."""
    cpp_extension.verify_ninja_availability()
    source = SOURCE.read_text(encoding="utf-8")
    tag = hashlib.sha1(f"{source}{torch.__version__}{platform.machine()}{_cpu_model()}".encode()).hexdigest()
    name = f"tinygpt_matvec_{tag[:12]}"
    folder = cache_dir("kernels", name)
    if not any(folder.glob("*.so")):
        print(f"tinygpt: building the decoding kernel for this machine, once (C++, cached in {folder})",
              file=sys.stderr, flush=True)
    cpp_extension.load(name, sources=[str(SOURCE)], extra_cflags=["-O3", "-march=native", "-fopenmp"],
                       extra_ldflags=["-fopenmp"], build_directory=str(folder), is_python_module=False,
                       verbose=False)
    return torch.ops.tinygpt.matvec


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((ln for ln in f if ln.startswith(("model name", "flags"))), "")
    except OSError:
        return ""


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernel can compute x @ weight.T: CPU tensors, at most MAX_ROWS rows, fp32/bf16/int8
    weights with in_features a multiple of LANES, and nothing for autograd to record."""
    return (x.device.type == "cpu" and weight.device.type == "cpu" and weight.dim() == 2
            and x.numel() <= MAX_ROWS * x.size(-1) and weight.size(1) % LANES == 0
            and weight.dtype in _WEIGHTS and x.dtype in _FLOATS
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def matvec(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ (weight * scales[:, None]).T through the kernel, in x's dtype: (..., N). The caller checks
    `applies` and that kernels() is not None."""
    rows = x.reshape(-1, x.size(-1))
    if rows.dtype != torch.float32 or not rows.is_contiguous():
        rows = rows.float().contiguous()
    y = kernels()(rows, weight if weight.is_contiguous() else weight.contiguous(),
                  _NO_SCALES if scales is None else scales.float().contiguous())
    return (y if x.dtype == torch.float32 else y.to(x.dtype)).view(*x.shape[:-1], weight.size(0))


_NO_SCALES = torch.empty(0)


# --- a model's linear layers through the kernel --------------------------------------------------------------

def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The model's linear layers the kernel can stand in for, each once: nn.Linear (fp32 or bf16 weights) and
    quantize.Int8Linear (int8 weights and scales). A tied head shares its matrix, not its layer."""
    from tinygpt.models.quantize import Int8Linear

    seen: dict[int, nn.Module] = {}
    for m in model.modules():
        if type(m) is nn.Linear or isinstance(m, Int8Linear):
            seen.setdefault(id(m), m)
    return list(seen.values())


_patches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [(layer, its kernel forward)]


def _patches_of(model: nn.Module) -> list[tuple[nn.Module, Callable]]:
    """The model's linear layers with their kernel forwards, found once per model (a decoding step enters
    decoding_with_matvec every time: walking the model each time would cost more than the kernel saves). A
    layer put in later (quantize(model, inplace=True)) is not among them and runs its own forward: correct, and
    only slower."""
    if model not in _patches:
        _patches[model] = [(layer, _kernel_forward(layer)) for layer in linear_layers(model)]
    return _patches[model]


def _kernel_forward(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward of a layer while decoding: through the kernel where it `applies`, else the layer's own. It
    reads the layer's tensors at every call (they may have moved or changed since it was made)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        w = layer.weight
        if not applies(x, w):
            return type(layer).forward(layer, x)
        y = matvec(x, w, _scales(layer))
        bias = layer.bias
        return y if bias is None else y + (bias if bias.dtype == y.dtype else bias.to(y.dtype))
    return forward


def _scales(layer: nn.Module) -> torch.Tensor | None:
    return getattr(layer, "scales", None) if layer.weight.dtype == torch.int8 else None


def matvec_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `layer` computes for x, through the kernel where it applies, else through the layer's own forward."""
    return _kernel_forward(layer)(x)


_faster: dict[tuple, bool] = {}


def faster_here(layer: nn.Module, rows: int = 1) -> bool:
    """Whether the kernel beats the layer's own forward for `rows` input rows, on this machine, for this weight
    shape and dtype: timed once per process (the median of 5 alternating rounds of each), then remembered.
    False where the kernel cannot be built or does not apply."""
    w = layer.weight
    key = (type(layer).__name__, tuple(w.shape), w.dtype, rows)
    if key not in _faster:
        dtype = w.dtype if w.dtype != torch.int8 else torch.float32
        x = torch.randn(rows, w.size(1), generator=torch.Generator().manual_seed(0)).to(dtype)
        with torch.inference_mode():  # as decoding runs: nothing for autograd to record
            if not applies(x, w) or kernels() is None:
                _faster[key] = False
            else:
                ours, theirs = [], []
                for _ in range(5):
                    ours.append(_seconds(lambda: matvec_forward(layer, x)))
                    theirs.append(_seconds(lambda: type(layer).forward(layer, x)))
                _faster[key] = sorted(ours)[2] < sorted(theirs)[2]
    return _faster[key]


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_worth: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {rows: bool}


def worth_using(model: nn.Module, rows: int = 1) -> bool:
    """Whether decoding_with_matvec speeds up a decoding pass of `rows` rows of this model here: at most MAX_ROWS
    rows, linear weights on the CPU taking at least MIN_MODEL_BYTES, and the kernel measured faster on the
    model's largest matrix for that many rows. Decided once per model and number of rows; the first decision
    on a machine builds the kernel (10–15 s on 2 cores, once: it is cached on disk)."""
    decided = _worth.setdefault(model, {})
    if rows not in decided:
        layers = linear_layers(model)
        total = sum(layer.weight.nbytes for layer in layers)
        decided[rows] = bool(layers and 0 < rows <= MAX_ROWS and total >= MIN_MODEL_BYTES
                             and all(layer.weight.device.type == "cpu" for layer in layers)
                             and faster_here(max(layers, key=lambda layer: layer.weight.numel()), rows))
    return decided[rows]


@contextlib.contextmanager
def decoding_with_matvec(model: nn.Module) -> Iterator[None]:
    """Inside, every linear layer of the model (linear_layers) computes inputs of at most MAX_ROWS rows with the
    kernel, and larger ones, or anything autograd records, its own way; on leaving, the layers are as they
    were. The kernel must be available (check worth_using, or kernels(), first)."""
    patches = _patches_of(model)
    for layer, forward in patches:  # an instance attribute shadows the class's forward (set past nn.Module's checks)
        object.__setattr__(layer, "forward", forward)
    try:
        yield
    finally:
        for layer, _ in patches:
            layer.__dict__.pop("forward", None)


__all__ = ["MAX_ROWS", "LANES", "MIN_MODEL_BYTES", "matvec_reference", "kernels", "unavailable_reason", "applies",
           "matvec", "ninja_on_path", "linear_layers", "matvec_forward", "faster_here", "worth_using",
           "decoding_with_matvec"]
