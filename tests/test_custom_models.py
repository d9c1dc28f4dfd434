"""Layer spec, presets and the Keras-style summary, with parameter counts checked by hand."""

import pytest
import torch

from cnnarena.errors import UserError
from cnnarena.models.custom import PRESETS, build_layers, load_spec
from cnnarena.models.registry import create_model
from cnnarena.models.summary import summarize


def make(name, c=1, h=28, w=28, k=10):
    return create_model(name, num_classes=k, in_chans=c, data_size=(h, w), classes=[str(i) for i in range(k)])


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_simple_2conv_matches_hand_count():
    # conv 1->32: 320, BN 64, conv 32->64: 18,496, BN 128, dense 3136->128: 401,536, 128->64: 8,256, 64->10: 650
    assert trainable(make("simple-2conv")) == 429_450


def test_simple_3conv_5x5_hand_count():
    # convs 5x5 pad 2: 832 + 51,264 + 204,928; BN 64+128+256; 28->14->7->3: dense 1152->64 = 73,792; 64->10 = 650
    assert trainable(make("simple-3conv-5x5")) == 832 + 64 + 51_264 + 128 + 204_928 + 256 + 73_792 + 650


def test_simple_3conv_dense512_hand_count():
    # 28->14->7 then conv at 7x7: flatten 128*49 = 6272 -> 512
    expected = 320 + 64 + 18_496 + 128 + 73_856 + 256 + (6272 * 512 + 512) + (512 * 10 + 10)
    assert trainable(make("simple-3conv-dense512")) == expected


def test_fast_large_hand_count():
    # 28 -(pool)-> 14 -(pool)-> 7 -(pool)-> 3: conv 1->32 320, 32->40 11,560, 40->40 14,440, 40->80 28,880,
    # 80->80 57,680, 80->128 on the 3x3 grid 92,288; BN 64+80+80+160+160+256; flatten 128*9 = 1,152 -> 10: 11,530
    expected = 320 + 11_560 + 14_440 + 28_880 + 57_680 + 92_288 + 64 + 80 + 80 + 160 + 160 + 256 + 11_530
    assert trainable(make("fast-large")) == expected


def test_tuned_presets_bring_their_recipe_and_options_still_win():
    from cnnarena.config import build_config

    large = build_config(None, {"data": "digits", "model": "fast-large"}).train
    assert (large.optimizer, large.epochs, large.tta, large.tta_shift) == ("sgd", 30, True, 1)
    assert build_config(None, {"data": "digits", "model": "fast"}).train.tta_shift == 0
    assert build_config(None, {"data": "digits", "model": "fast-large", "epochs": 3}).train.epochs == 3
    assert build_config(None, {"data": "digits", "model": "simple-2conv"}).train.optimizer == "adam"


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_presets_adapt_to_input_and_classes(name, shape):
    model = make(name, *shape, k=7)
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)


def test_summary_table_totals_and_keras_count():
    text = summarize(make("simple-2conv"), (1, 28, 28))
    assert "Total params: 429,450" in text
    assert "Trainable params: 429,450" in text
    assert "Non-trainable params: 0" in text
    assert "429,642 in total" in text  # what Keras prints, BN moving stats included
    assert "(None, 32, 28, 28)" in text and "(None, 10)" in text


def test_spec_file_yaml(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text("layers:\n  - conv: {filters: 8, kernel: 3, stride: 2}\n  - gelu\n  - gap\n  - dense: 16\n"
                    "  - dropout: 0.2\n")
    model = make(str(spec), 3, 32, 32, k=4)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 4)
    # conv 3*8*9+8=224, dense 8*16+16=144, head 16*4+4=68
    assert trainable(model) == 224 + 144 + 68
    assert model.meta.name == "net"


@pytest.mark.parametrize("spec, message", [
    ([{"conv": 8}, "flatten", "maxpool"], "needs a feature map"),
    ([{"conv": 8}, {"dense": 4}], "flatten"),
    (["wobble"], "unknown layer 'wobble'"),
    ([{"conv": {"filters": 8, "colour": 3}}], "unknown option"),
    ([{"conv": 8}, "maxpool", "maxpool", "maxpool", "maxpool"], "too small"),
    ([], "non-empty list"),
])
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        build_layers(spec, (1, 8, 8), 3)


def test_unreadable_spec_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [conv: {")
    with pytest.raises(UserError, match="cannot parse"):
        load_spec(bad)
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
