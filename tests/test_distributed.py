"""Training in two CPU processes (torchrun, gloo): DDP and FSDP take the steps one process takes on the same global
batch, FSDP writes ordinary checkpoints, and resuming (FSDP from FSDP, FSDP from DDP, one process from FSDP) works.
One torchrun launch trains every two-process run (tests/distributed_runs.py); the tests read what it wrote.

Tolerances: the processes compute the same sums in another order (two half batches instead of one batch, gradients
averaged by a collective, the clipping norm summed from shards), so float32 rounding differs at about 1e-7 relative
per operation. Over 6 AdamW steps (peak learning rate 3e-3) the weights measured 2e-6 apart at most; 2e-5 is ten
times that, and still 150 times smaller than one step's update. What a real fault moves is far larger: the same
steps on rank 0's half of the data alone end 2e-2 away, and the same run without gradient clipping 2e-3 away.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinygpt.cli.args import error_text
from tinygpt.training import distributed
from tinygpt.training.checkpoint import load_state
from tinygpt.training.run import load_checkpoint, read_metrics
from tinygpt.training.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from distributed_runs import BATCH, RANKS, STEPS, AsOneBatch, setup, torchrun  # noqa: E402

WEIGHTS_ATOL, LOSS_ATOL = 2e-5, 1e-5
pytestmark = pytest.mark.slow  # one torchrun launch of two processes trains every run the tests read


@pytest.fixture(scope="module")
def runs(tmp_path_factory, play) -> tuple[Path, str]:
    """(directory, torchrun's stderr): the two-process runs, and "one", the known answer: one process taking
    each step on the rows both processes drew."""
    root = tmp_path_factory.mktemp("distributed")
    text = root / "input.txt"
    text.write_text(play, encoding="utf-8")
    stderr = torchrun([str(Path(__file__).parent / "distributed_runs.py"), str(root), str(text)], root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits, and stalls on a busy machine
    try:
        model_cfg, cfg, data, tok = setup(play, STEPS, BATCH * RANKS)
        train(model_cfg, cfg, AsOneBatch(data), tok, root / "one")
    finally:
        torch.set_num_threads(threads)
    return root, stderr


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run, "latest")[0].state_dict()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _val_losses(run: Path) -> list[float]:
    return [ln["val_loss"] for ln in read_metrics(run) if "val_loss" in ln]


def test_ddp_and_fsdp_take_the_steps_of_one_process(runs):
    root, _ = runs
    one = _weights(root / "one")
    assert one["transformer.wpe.weight"].shape[0] % RANKS == 1  # 15 positions: the shards are uneven
    assert _val_losses(root / "one")[-1] < _val_losses(root / "one")[0] - 0.2  # it learned something
    for name in ("ddp", "fsdp"):
        assert load_state(root / name / "latest")["world_size"] == RANKS, name
        assert _max_diff(_weights(root / name), one) < WEIGHTS_ATOL, name
        assert _val_losses(root / name) == pytest.approx(_val_losses(root / "one"), abs=LOSS_ATOL), name


def test_fsdp_writes_the_checkpoint_one_process_writes(runs):
    root, _ = runs
    files = {name: load_file(str(root / name / "latest/model.safetensors")) for name in ("one", "fsdp")}
    assert {k: v.shape for k, v in files["fsdp"].items()} == {k: v.shape for k, v in files["one"].items()}
    opt = {name: load_state(root / name / "latest")["optimizer"] for name in ("one", "fsdp")}
    assert opt["fsdp"]["param_groups"] == opt["one"]["param_groups"]
    shapes = {name: {i: {k: v.shape for k, v in s.items()} for i, s in o["state"].items()} for name, o in opt.items()}
    assert shapes["fsdp"] == shapes["one"]
    assert all(type(v) is torch.Tensor for s in opt["fsdp"]["state"].values() for v in s.values())  # no shards


def test_resuming_across_ddp_fsdp_and_one_process(runs, tmp_path):
    root, _ = runs
    # FSDP stopped at step 3 and resumed is FSDP straight, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(_weights(root / "fsdp").values(),
                                                   _weights(root / "fsdp_split").values()))
    losses = {name: [(ln["step"], ln["train_loss"], ln.get("val_loss")) for ln in read_metrics(root / name)]
              for name in ("fsdp", "fsdp_split")}
    assert losses["fsdp_split"] == losses["fsdp"]
    # DDP's checkpoint resumed under FSDP (whole optimizer state cut into shards) gives the known answer
    assert _max_diff(_weights(root / "ddp_then_fsdp"), _weights(root / "one")) < WEIGHTS_ATOL
    # and an FSDP run goes on in one process (--fsdp then has nothing to shard over)
    shutil.copytree(root / "fsdp", tmp_path / "fsdp")
    model_cfg, cfg, data, tok = setup((root / "input.txt").read_text(encoding="utf-8"), STEPS + 1, BATCH, fsdp=True)
    assert train(model_cfg, cfg, data, tok, tmp_path / "fsdp", resume=True).step == STEPS + 1


def test_fsdp_stop_when_sees_a_whole_model(runs):
    root, _ = runs
    last = read_metrics(root / "fsdp_stop")[-1]
    assert last["step"] == 3 and last["finished_early"] == "step 3, 0 sharded weights"


def test_fsdp_refuses_float16():
    from tinygpt.config import ModelConfig
    from tinygpt.models import build_model

    model = build_model(ModelConfig(vocab_size=8, n_layer=1, n_head=1, n_embd=8, block_size=4))
    with pytest.raises(ValueError, match="^fsdp does not support float16.*dtype=bfloat16") as e:  # the library's
        distributed.shard(model, distributed.World(True, 0, 0, 2), "cuda:0", torch.float16)  # words: setting names
    assert error_text(e.value).startswith("--fsdp does not support float16")  # the command line's: flags


def test_cli_trains_sharded_undertorchrun(runs, cli):
    root, stderr = runs
    assert "sharded over 2 processes (FSDP)" in stderr
    assert stderr.count("tokenizer: built a character vocabulary") == 1  # the run's notes once, not per process
    assert json.loads((root / "cli/latest/config.json").read_text())["train"]["fsdp"] is True
    code, text, err = cli("sample", root / "cli", "--prompt", "ROMEO:", "--max_new_tokens", "5", "--greedy")
    assert code == 0 and text.startswith("ROMEO:"), err


def test_fsdp_in_one_process_trains_unsharded(tmp_path, text_file, cli):
    code, _, err = cli("train", "--fsdp", "--data", text_file, "--out", tmp_path / "run", "--max_iters=2",
                       "--n_layer=1", "--n_head=1", "--n_embd=16", "--block_size=16", "--batch_size=2",
                       "--eval_iters=1", "--device=cpu", "--quiet")
    assert code == 0, err
    assert "with one process this run trains unsharded" in err and "FSDP)" not in err
    assert read_metrics(tmp_path / "run")[-1]["step"] == 2
