import pytest
import torch

from tinygpt.training import checkpoint
from tinygpt.training.checkpoint import CheckpointError, save_checkpoint
from tinygpt.training.run import RunError, load_checkpoint
from tinygpt.config import ModelConfig
from tinygpt.models import GPT
from tinygpt.tokenizers import CharTokenizer


def _model(seed):
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=8))


def test_round_trip_needs_nothing_else(tmp_path):
    m, tok = _model(0), CharTokenizer.train("abc")
    save_checkpoint(tmp_path / "ck", m, tok, {"step": 3})
    back, tok2, cfg = load_checkpoint(tmp_path / "ck")
    assert tok2 == tok and cfg["step"] == 3 and cfg["model"]["n_embd"] == 8
    for (k, a), b in zip(m.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
    assert back.lm_head.weight is back.transformer.wte.weight  # tying survives


def test_a_failed_save_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    tok = CharTokenizer.train("abc")
    save_checkpoint(tmp_path / "ck", _model(0), tok, {"step": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write .*ck: No space left on device$"):
        save_checkpoint(tmp_path / "ck", _model(1), tok, {"step": 2})
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary left behind


def test_crash_between_renames_is_recovered(tmp_path):
    tok = CharTokenizer.train("abc")
    saved = _model(0)
    save_checkpoint(tmp_path / "latest", saved, tok, {"step": 1})
    (tmp_path / "latest").rename(tmp_path / ".old-latest")  # the state right after the first rename
    m, _, cfg = load_checkpoint(tmp_path, "latest")
    assert cfg["step"] == 1 and cfg["path"] == str(tmp_path / ".old-latest")
    for (k, a), b in zip(saved.state_dict().items(), m.state_dict().values()):
        assert torch.equal(a, b), k


def test_no_checkpoint(tmp_path):
    with pytest.raises(RunError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)
