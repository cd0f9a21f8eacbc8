import pytest

from tinygpt.config import PRESETS, ConfigError, build_configs, parse_value


def test_defaults_preset_overrides_precedence():
    m, t = build_configs({"n_layer": "3", "compile": "False", "max_iters": "2e3"}, "shakespeare_char")
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (3, 6, 384, 256, 0.2)
    assert (t.batch_size, t.learning_rate, t.min_lr, t.warmup_iters, t.beta2, t.eval_interval) == (64, 1e-3, 1e-4, 100, 0.99, 250)
    assert t.compile is False and t.max_iters == 2000


def test_shakespeare_char_holds_nanogpt_numbers():
    p = PRESETS["shakespeare_char"]
    assert (p["n_layer"], p["n_head"], p["n_embd"], p["block_size"], p["batch_size"], p["dropout"]) == (6, 6, 384, 256, 64, 0.2)


@pytest.mark.parametrize("overrides, match", [
    ({"n_embd": 100, "n_head": 3}, "divisible"),
    ({"dropout": 1.5}, "dropout"),
    ({"batch_size": 0}, "batch_size"),
    ({"n_lyer": 2}, "did you mean n_layer"),
    ({"max_iters": "ten"}, "invalid value for max_iters"),
    ({"max_iters": "2.5"}, "invalid value for max_iters"),
    ({"compile": "maybe"}, "invalid value for compile"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"device": "tpu"}, "device must be one of"),
    ({"min_lr": 1.0}, "min_lr"),
])
def test_invalid_values_are_one_line_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_configs(overrides)
    assert "\n" not in str(e.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_configs({}, "shakespeare")


def test_parse_value_types():
    assert parse_value("dropout", "0.1") == 0.1
    assert parse_value("compile", "true") is True
    assert parse_value("seed", 7) == 7
    with pytest.raises(ConfigError):
        parse_value("seed", True)
