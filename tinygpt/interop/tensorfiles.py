"""Weight files of other tools, one tensor at a time: read safetensors and PyTorch `.bin` files (sharded or not,
never unpickling code), and write safetensors without holding every tensor in memory at once.

Reading is lazy. A safetensors file is checked whole when opened (by the safetensors library), then each
tensor is read from the file with plain reads when asked for: converting a model tensor by tensor needs
one tensor of working memory, not a second copy of the model. A `.bin` file in PyTorch's zip format is
memory-mapped (`torch.load(mmap=True, weights_only=True)`): its pages count as resident once read, though
the kernel can drop them; a legacy (pre-zip) `.bin` file is read whole.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors import SafetensorError, safe_open

# The files a Hugging Face model folder may hold its weights in, in order of preference.
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}

DTYPES_BY_NAME = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


class TensorFileError(ValueError):
    """A weight file that is missing, damaged or unsafe to read; the message is one line, fit for the CLI."""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class TensorReader:
    """The tensors of a model folder by name, each read only when asked for.

        with TensorReader("gpt2") as weights:
            shape = weights.shape("h.0.attn.c_attn.weight")   # from the file's header: nothing is read yet
            t = weights.get("h.0.attn.c_attn.weight")          # this one tensor, in memory
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        found = next((self.folder / f for f in WEIGHT_FILES if (self.folder / f).is_file()), None)
        if found is None:
            raise TensorFileError(f"{self.folder} holds no weights (expected {' or '.join(WEIGHT_FILES[1::2])}, "
                                  f"or a sharded .index.json)")
        self.files = self._shards(found) if found.name.endswith(".index.json") else [found]
        self._where: dict[str, Path] = {}  # tensor name -> its file
        self._open: dict[Path, Any] = {}   # file -> safe_open handle, or the dict a .bin file held
        for f in self.files:
            for name in self._names_in(f):
                if name in self._where:
                    raise TensorFileError(f"tensor {name} appears twice ({self._where[name].name} and {f.name})")
                self._where[name] = f

    def _shards(self, index: Path) -> list[Path]:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise TensorFileError(f"{index} is not a valid index of weight shards") from None
        shards = []
        for name in names:
            if not isinstance(name, str) or Path(name).name != name:  # a shard outside the folder is refused
                raise TensorFileError(f"{index} names a shard outside its folder: {name!r}")
            if not (self.folder / name).is_file():
                raise TensorFileError(f"{index} lists the shard {name}, which is missing from {self.folder}")
            shards.append(self.folder / name)
        return shards

    def _names_in(self, f: Path) -> list[str]:
        if f.suffix == ".safetensors":
            handle = _SafetensorsFile(f)
            self._open[f] = handle
            return list(handle.entries)
        tensors = _load_bin(f)
        self._open[f] = tensors
        return list(tensors)

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        handle = self._open[self._where[name]]
        return tuple(handle[name].shape) if isinstance(handle, dict) else handle.shape(name)

    def get(self, name: str) -> torch.Tensor:
        handle = self._open[self._where[name]]
        return handle[name] if isinstance(handle, dict) else handle.get(name)

    def close(self) -> None:
        self._open.clear()  # memory maps are released with their last reference

    def __enter__(self) -> "TensorReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _SafetensorsFile:
    """One safetensors file: validated whole on opening, then read one tensor at a time with plain reads (a
    memory map would leave every page it touched resident)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with safe_open(str(path), framework="pt"):  # checks the header, dtypes, shapes and that the offsets
                pass                                    # cover the data exactly
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (SafetensorError, OSError, ValueError, struct.error) as e:
            raise TensorFileError(f"{path} is corrupted: {_first_line(e)}") from None
        self.start = 8 + n
        self.entries = {k: v for k, v in header.items() if k != "__metadata__"}
        unknown = next((e["dtype"] for e in self.entries.values() if e["dtype"] not in DTYPES_BY_NAME), None)
        if unknown is not None:
            raise TensorFileError(f"{path} holds tensors of dtype {unknown}, which tinygpt does not read")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def get(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        begin, end = e["data_offsets"]
        raw = torch.empty(end - begin, dtype=torch.uint8)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.start + begin)
                got = f.readinto(memoryview(raw.numpy()))
        except OSError as err:
            raise TensorFileError(f"{self.path}: cannot read {name}: {err.strerror or err}") from None
        if got != end - begin:
            raise TensorFileError(f"{self.path} is corrupted: {name} is cut short (the file changed?)")
        return raw.view(DTYPES_BY_NAME[e["dtype"]]).reshape(e["shape"])


def _load_bin(f: Path) -> dict[str, torch.Tensor]:
    """A PyTorch `.bin` state dict, read with weights_only=True: only tensors and plain containers are rebuilt,
    so a file that would run code when unpickled is refused instead of obeyed."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            data = torch.load(f, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(f))
    except pickle.UnpicklingError:
        raise TensorFileError(f"{f} holds more than tensors: reading it would unpickle arbitrary objects, which "
                              f"can run code, so it is refused (only plain tensors are read)") from None
    except Exception as e:  # torch reports a damaged file with several types (RuntimeError, EOFError, ...)
        raise TensorFileError(f"{f} is corrupted: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise TensorFileError(f"{f} is not a state dict (a mapping of names to tensors)")
    return data


def write_safetensors(path: str | os.PathLike, specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
                      get: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file tensor by tensor: `specs` (name, dtype, shape) make the header, then `get(name)`
    supplies each tensor in turn, checked against its spec, and it is written before the next one is asked
    for. Peak memory: the largest tensor, not the sum of them."""
    specs = list(specs)
    header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, dtype, shape in specs:
        if dtype not in SAFETENSORS_DTYPES:
            raise TensorFileError(f"cannot write {name}: dtype {dtype} has no safetensors name")
        size = dtype.itemsize * _numel(shape)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for name, dtype, shape in specs:
            t = get(name)
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise TensorFileError(f"{name}: got {t.dtype} {list(t.shape)}, the header says {dtype} {list(shape)}")
            out.write(memoryview(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


__all__ = ["TensorFileError", "TensorReader", "WEIGHT_FILES", "write_safetensors"]
