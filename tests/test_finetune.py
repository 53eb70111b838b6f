"""Fine-tuning as fast-MPN-COV does it: the fixed centre-crop training transform, evaluation on the centre
crop and its mirror, and finetune=FILE (backbone and head from any checkpoint, a new classifier)."""

import json
import logging

import pytest
import torch
from PIL import Image

from lgm_gcp.assemble import build_network, check_network
from lgm_gcp.data.images import eval_transform, train_transform
from lgm_gcp.engine.train import run
from lgm_gcp.errors import CheckpointError, ConfigError
from lgm_gcp.models.build import build_model

from conftest import resolved

MEAN, STD = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


def gradient_image(width=24, height=16):
    """Red rises left to right (10·x), green top to bottom (10·y): a crop or a flip shows in the values."""
    pixels = [(10 * x, 10 * y, 0) for y in range(height) for x in range(width)]
    image = Image.new("RGB", (width, height))
    image.putdata(pixels)
    return image


@pytest.mark.parametrize("decoder", ["pil", "tensor"])
def test_center_crop_training_crops_the_same_window_and_only_flips(decoder):
    """Resize(16) keeps the 24x16 image (shorter side 16); CenterCrop(8) takes columns 8..15 and rows 4..11,
    so red starts at 80/255 or, flipped, at 150/255; green always starts at 40/255."""
    image = gradient_image()
    if decoder == "tensor":
        from torchvision.transforms.functional import pil_to_tensor

        image = pil_to_tensor(image)
    transform = train_transform(decoder, 8, MEAN, STD, crop="center", resize=16)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        out = transform(image)
        assert out.shape == (3, 8, 8)
        assert round(out[1, 0, 0].item() * 255) == 40
        seen.add(round(out[0, 0, 0].item() * 255))
    assert seen == {80, 150}


def test_mirror_evaluation_gives_the_centre_crop_and_its_mirror():
    crops = eval_transform("pil", 8, [16, 24], MEAN, STD, mirror=True)(gradient_image())
    assert crops.shape == (2, 3, 8, 8)
    torch.testing.assert_close(crops[1], crops[0].flip(-1))
    assert round(crops[0, 0, 0, 0].item() * 255) == 80  # the centre crop of the 24x16 image, as above


def test_mirror_and_ten_crop_together_are_one_line():
    from lgm_gcp.config.compose import compose

    with pytest.raises(ConfigError, match="eval.ten_crop=true and eval.mirror=true: choose one"):
        compose(["dataset=cub", "eval.ten_crop=true", "eval.mirror=true"])


def test_mirror_on_an_in_memory_dataset_is_one_line(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="eval.mirror=true needs an image-folder dataset"):
        run(tiny_cfg("eval.mirror=true"), tmp_path)


# ---------------------------------------------------------------------------------------- finetune=FILE


def source_checkpoint(tmp_path, *overrides):
    """A 10-class digits network's weights (GCP head, d = 8), as a run's checkpoint holds them."""
    torch.manual_seed(1)
    model = build_model(resolved("head=gcp", "head.dim=8", *overrides), 10, 1)
    path = tmp_path / "source.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_finetune_loads_backbone_and_head_and_starts_a_new_classifier(tmp_path):
    source, path = source_checkpoint(tmp_path)
    cfg = resolved("head=gcp", "head.dim=8", f"finetune={path}")
    check_network(cfg)
    torch.manual_seed(2)
    model, info = build_network(cfg, 4, 1)  # 4 classes now
    fresh = build_model(cfg, 4, 1)
    for key, value in model.state_dict().items():
        if key.startswith(("backbone.", "head.")):
            torch.testing.assert_close(value, source.state_dict()[key], msg=key)
    assert model.criterion.fc.weight.shape == (4, 36)  # d(d+1)/2 = 36 inputs, 4 classes
    assert not torch.equal(model.criterion.fc.weight, source.criterion.fc.weight[:4])
    assert info["source"] == "finetune" and info["new"] == ["criterion.fc.weight", "criterion.fc.bias"]
    assert info["left_out"] == ["criterion.fc.weight 10x36", "criterion.fc.bias 10"]
    assert "new: criterion.fc.weight, criterion.fc.bias; left out of the file: criterion.fc.weight 10x36" \
        in info["summary"]
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())


def test_finetune_leaves_out_head_tensors_of_another_shape(tmp_path):
    """The file's reduction to d = 8 cannot fill a d = 4 head: the head starts new, the backbone loads."""
    source, path = source_checkpoint(tmp_path)
    model, info = build_network(resolved("head=gcp", "head.dim=4", f"finetune={path}"), 10, 1)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, source.backbone.state_dict()[key], msg=key)
    assert {"head.reduce.0.weight", "head.reduce.1.weight"} <= set(info["new"])
    assert "head.reduce.0.weight 8x128x1x1" in info["left_out"]


def test_finetune_from_another_backbone_is_one_line(tmp_path):
    _, path = source_checkpoint(tmp_path, "backbone.widths=[8,16]")
    with pytest.raises(CheckpointError, match=f"finetune={path} does not fill this backbone .*shapes differ"):
        check_network(resolved("head=gcp", "head.dim=8", f"finetune={path}"))


def test_weights_and_finetune_together_are_one_line():
    from lgm_gcp.config.compose import compose

    with pytest.raises(ConfigError, match="weights=FILE and finetune=FILE: choose one"):
        compose(["weights=a.pt", "finetune=b.pt"])


def test_a_finetuning_run_logs_what_it_loaded_and_records_it(tiny_cfg, tmp_path, caplog):
    """Train 10 digit classes, then fine-tune that run's checkpoint into a fresh run."""
    first = tmp_path / "first"
    run(tiny_cfg("trainer.max_epochs=1"), first)
    second = tmp_path / "second"
    caplog.set_level(logging.INFO, logger="lgm_gcp")
    run(tiny_cfg("trainer.max_epochs=1", f"finetune={first / 'checkpoints' / 'last.pt'}"), second)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["weights"]["source"] == "finetune" and "summary" not in metrics["weights"]
    assert metrics["weights"]["new"] == ["criterion.fc.weight", "criterion.fc.bias"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finetune=")]
    assert len(lines) == 1 and "loaded" in lines[0] and "new: criterion.fc.weight" in lines[0]
