"""GPT2Config and hparams.json: every field checked, bad files named."""

import pytest

from minigpt2 import GPT2Config


@pytest.mark.parametrize("eps", [-1.0, 0.0, float("nan"), float("inf"), "1e-5", True, None])
def test_every_config_field_is_checked(eps):
    with pytest.raises(ValueError, match="layer_norm_epsilon must be a positive finite number"):
        GPT2Config(layer_norm_epsilon=eps)
    assert GPT2Config(layer_norm_epsilon=1).layer_norm_epsilon == 1.0


@pytest.mark.parametrize("text, message", [
    ('{"n_vocab": 10, "n_ctx": 8, "n_embd": 4, "n_head": 2, "n_layer": 1, "layer_norm_epsilon": "tiny"}',
     "layer_norm_epsilon"),
    ("[1, 2]", "holds a JSON list"), ("7", "holds a JSON int"), ("[" * 10000, "not valid JSON"),
])
def test_bad_hparams_json_is_named(tmp_path, text, message):
    (tmp_path / "hparams.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        GPT2Config.from_hparams(tmp_path / "hparams.json")
