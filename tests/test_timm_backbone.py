"""backbone=timm: any timm model as the trunk. Every head and loss on four families (timm's own tiny
``test_*`` models of the ResNet, ConvNeXt, EfficientNet and ViT classes, built offline, no weights),
parameter counts equal to timm's, tokens folded into their grid, strides, weights files, one-line errors."""

import pytest
import timm
import torch
import torch.nn.functional as F

from lgm_gcp.assemble import build_network, check_network
from lgm_gcp.errors import ConfigError
from lgm_gcp.models.backbones.timm_trunk import TimmBackbone
from lgm_gcp.models.build import build_model

from conftest import conf_options, resolved
from helpers import assert_every_parameter_learns

# test_vit is built for 160-pixel images; at 32 its 16-pixel patches make a 2x2 grid. timm's ResNet starts
# each block's last BatchNorm at zero (zero_init_last), which leaves the block's other layers without a
# gradient at step 0; the wiring check starts it as torchvision's ResNet does.
FAMILIES = {"test_resnet": ["+backbone.kwargs.zero_init_last=false"], "test_convnext": [], "test_efficientnet": [],
            "test_vit": ["+backbone.kwargs.img_size=32"]}
SIDE = {"test_vit": 32}  # the others: 64 px, a 2x2 map after their stride 32


def timm_cfg(name, *overrides, side=None):
    side = side or SIDE.get(name, 64)
    family = [o.replace("img_size=32", f"img_size={side}") for o in FAMILIES.get(name, [])]
    return resolved("backbone=timm", f"backbone.name={name}", "dataset=synthetic", f"dataset.image_size={side}",
                    *family, *overrides)


# issue 40's heads: with softmax on every family and with every loss on the ViT in the fast tier, the rest slow
SECOND_ORDER = {"bcnn", "cbp", "dropcov", "dropcov128", "dropcov_vit", "isice", "sot"}


def family_head_loss_params():
    return [pytest.param(name, head, loss, id=f"{name}-{head}-{loss}",
                         marks=[pytest.mark.slow] if head in SECOND_ORDER and loss != "softmax"
                         and name != "test_vit" else [])
            for name in FAMILIES for head in conf_options("head") for loss in conf_options("loss")]


@pytest.mark.parametrize("name,head,loss", family_head_loss_params())
def test_every_head_and_loss_on_four_timm_families_trains_every_parameter(name, head, loss):
    """One training step of 4 images reaches every parameter of trunk, head and classifier (GCP at
    d = 8 to stay small; 3G's zero-initialised gate would leave its inner convs without gradient at step 0,
    so it starts from kaiming; L-GM on 3G only with its pull terms off, as conf/ refuses it otherwise; DropCov
    and iSICE at d = 8 too, DropCov on the 7x7 map it needs: 224 px, 112 for the ViT's 16-pixel patches)."""
    extra = ["head.dim=8"] if head.startswith(("gcp", "dropcov", "isice", "3g")) and head != "dropcov_vit" else []
    side = (112 if name == "test_vit" else 224) if head.startswith("dropcov") and head != "dropcov_vit" else None
    if head == "flatten":  # the 2x2 map whole: a 7x7 grid would repeat its positions, which the check refuses
        extra.append("head.size=2")
    if head == "3g":
        extra.append("head.gate_init=kaiming")
        if loss == "lgm":
            extra += ["loss.likelihood_weight=0", "loss.margin.value=0", "loss.margin.max=0"]
    cfg = timm_cfg(name, f"head={head}", f"loss={loss}", *extra, side=side)
    check_network(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, 7, 3).train()
    side = cfg["dataset"]["image_size"]
    value, logits, _ = model(torch.randn(4, 3, side, side), torch.tensor([0, 1, 2, 3]), step=100)
    assert logits.shape == (4, 7) and torch.isfinite(value)
    value.backward()
    assert_every_parameter_learns(model)


# timm's own count of each model without its classifier (num_classes=0), less what runs only after pooling:
# ConvNeXt normalises the pooled vector (head.norm, a LayerNorm of 2·num_features parameters), which a
# trunk does not run. The real-size models are the ones users start from.
@pytest.mark.parametrize("name", [*FAMILIES, "resnet18", "convnext_atto", "efficientnet_b0", "vit_tiny_patch16_224"])
def test_trunk_parameters_equal_timms_model_without_classifier(name):
    reference = timm.create_model(name, num_classes=0)
    after_pooling = sum(p.numel() for p in reference.head.norm.parameters()) if "convnext" in name else 0
    if "convnext" in name:
        assert after_pooling == 2 * reference.num_features
    trunk = TimmBackbone(name)
    assert sum(p.numel() for p in trunk.parameters()) == sum(p.numel() for p in reference.parameters()) - after_pooling
    assert trunk.out_channels == reference.num_features


def test_vit_patch_tokens_fold_into_their_grid_without_class_or_register_tokens():
    """Token 1 + r + i·w + j (after the class token and r register tokens) is the map's position (i, j)."""
    torch.manual_seed(0)
    trunk = TimmBackbone("test_vit", {"img_size": 32, "reg_tokens": 2}).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = trunk.model.forward_features(images)  # (2, 1 + 2 + 4, C), final norm applied
    maps = trunk(images)
    assert tokens.shape[1] == 7 and maps.shape == (2, 64, 2, 2)
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(maps[:, :, i, j], tokens[:, 3 + 2 * i + j])


def test_an_average_pooled_vits_fc_norm_normalises_every_token():
    """timm's avg-pooled ViT skips the final norm and normalises the pooled vector (fc_norm); the trunk
    applies fc_norm to each token instead, so nothing is left unused."""
    torch.manual_seed(0)
    trunk = TimmBackbone("test_vit", {"img_size": 32, "global_pool": "avg"})
    assert isinstance(trunk.model.norm, torch.nn.Identity)
    raw = trunk.model.forward_features(torch.ones(1, 3, 32, 32))
    expected = F.layer_norm(raw[:, 1:], raw.shape[-1:], trunk.model.fc_norm.weight, trunk.model.fc_norm.bias,
                            trunk.model.fc_norm.eps)
    torch.testing.assert_close(trunk(torch.ones(1, 3, 32, 32)).flatten(2).transpose(1, 2), expected)


def test_a_channels_last_trunk_is_permuted_to_channels_first():
    trunk = TimmBackbone("test_mambaout").eval()
    images = torch.randn(1, 3, 64, 64)
    nhwc = trunk.model.forward_features(images)
    torch.testing.assert_close(trunk(images), nhwc.permute(0, 3, 1, 2))


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_last_stride_one_doubles_the_map_of_a_conv_trunk(name):
    images = torch.randn(1, 3, 64, 64)
    assert TimmBackbone(name).eval()(images).shape[-1] == 2
    assert TimmBackbone(name, last_stride=1).eval()(images).shape[-1] == 4


@pytest.mark.parametrize("name,why", [("test_convnext", "patch merging"), ("test_vit", "no downsampling")])
def test_last_stride_one_is_refused_where_there_is_no_stride_to_drop(name, why):
    with pytest.raises(ConfigError, match=f"backbone.last_stride=1: timm's {name} .*{why}"):
        TimmBackbone(name, last_stride=1)


def test_an_unknown_model_name_lists_close_matches():
    with pytest.raises(ConfigError, match="backbone.name=convnext_atoo is not a timm model .*close matches: "
                                          "convnext_atto"):
        build_model(timm_cfg("convnext_atoo"), 10, 3)


def test_kwargs_timm_refuses_and_keys_lgm_gcp_sets_are_one_line():
    with pytest.raises(ConfigError, match=r"backbone.kwargs=\{'bogus': 1\}: timm's test_resnet refuses them"):
        TimmBackbone("test_resnet", {"bogus": 1})
    with pytest.raises(ConfigError, match="backbone.kwargs.num_classes: lgm-gcp sets it itself"):
        TimmBackbone("test_resnet", {"num_classes": 5})


def test_a_new_kwargs_key_without_plus_is_one_line_showing_the_plus():
    with pytest.raises(ConfigError, match=r"backbone.kwargs is a mapping, and Hydra adds a key to one with \+, e\.g\. "
                                          r"\+backbone.kwargs.img_size=VALUE"):
        resolved("backbone=timm", "backbone.name=test_vit", "backbone.kwargs.img_size=32")


def test_the_heads_dropout_auto_takes_the_models_drop_rate():
    model = build_model(timm_cfg("test_resnet", "+backbone.kwargs.drop_rate=0.3"), 10, 3)
    assert [m.p for m in model.head.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
    assert not any(isinstance(m, torch.nn.Dropout) for m in build_model(timm_cfg("test_resnet"), 10, 3).modules())


def test_a_stride_32_trunk_refuses_28_pixel_images_naming_the_smallest_size():
    """ConvNeXt's 4x4 stem and three 2x2 merges leave floor(28/32) = 0 positions; 32 px gives one, which GAP
    takes; GCP needs two, and 33..63 px still give 1x1, so 64 px (2x2) is the smallest."""
    grey = ["dataset=fashion_mnist", "dataset.root=/nonexistent"]
    with pytest.raises(ConfigError, match="backbone.name=test_convnext leaves 0 position.* of a 28x28 image, and "
                                          "GAPHead needs 1; it takes images of at least 32x32: set dataset.input_size"):
        check_network(timm_cfg("test_convnext", *grey, side=28))
    with pytest.raises(ConfigError, match="at least 64x64"):
        check_network(timm_cfg("test_convnext", *grey, "head=gcp", side=28))
    check_network(timm_cfg("test_convnext", *grey, "head=gcp", "dataset.input_size=64", side=28))


def test_a_vit_built_for_another_size_is_one_line():
    """vit_tiny_patch16_224 takes 224x224 images only (timm's img_size, no dynamic_img_size)."""
    name = "vit_tiny_patch16_224"
    with pytest.raises(ConfigError, match=f"backbone.name={name} does not take 64x64 images .*kwargs.img_size"):
        check_network(resolved("backbone=timm", f"backbone.name={name}", "dataset=synthetic", "dataset.image_size=64"))
    check_network(resolved("backbone=timm", f"backbone.name={name}", "dataset=synthetic", "dataset.image_size=64",
                           "+backbone.kwargs.img_size=64"))


def test_a_grey_trunk_takes_one_channel():
    trunk = TimmBackbone("test_convnext", in_channels=1)
    assert trunk(torch.randn(2, 1, 64, 64)).shape == (2, 64, 2, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_weights_file_fills_the_trunk_and_leaves_its_classifier_out(tmp_path, suffix):
    """A timm state dict (classifier and ConvNeXt's head norm included) fills every trunk tensor; with
    in_channels=1 the stem is adapted after loading: the RGB kernel summed (timm's rule)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("test_convnext", num_classes=1000)
    path = tmp_path / f"convnext{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    cfg = timm_cfg("test_convnext", f"backbone.weights={path}", "dataset.in_channels=1", "dataset.mean=[0.5]",
                   "dataset.std=[0.25]")
    model, _ = build_network(cfg, 10, 1)
    trunk = model.backbone.model.state_dict()
    for key, value in trunk.items():
        expected = state[key].sum(1, keepdim=True) if key == "stem.0.weight" else state[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert set(state) - set(trunk) == {"head.norm.weight", "head.norm.bias", "head.fc.weight", "head.fc.bias"}


def test_a_file_of_another_model_is_one_line_naming_it(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(ConfigError, match=f"backbone.weights={path} does not fit this backbone"):
        build_network(timm_cfg("test_convnext", f"backbone.weights={path}"), 10, 3)


@pytest.mark.parametrize("name,head,loss", [("test_convnext", "gcp", "lgm"), ("test_vit", "gap", "softmax")])
def test_a_timm_trunk_trains_and_evaluates_through_the_trainer(name, head, loss, tmp_path):
    """The trainer end to end: 28-pixel grey images resized to 64 (ConvNeXt) or a ViT built for 28-pixel
    images with 7-pixel patches (a 4x4 grid); the loss falls from its first epoch to its third."""
    import json

    from lgm_gcp.engine.train import run

    size = ["dataset.input_size=64"] if "convnext" in name else ["+backbone.kwargs.img_size=28",
                                                                 "+backbone.kwargs.patch_size=7"]
    cfg = resolved("backbone=timm", f"backbone.name={name}", f"head={head}", f"loss={loss}", "dataset=synthetic",
                   "dataset.image_size=28", "dataset.in_channels=1", "dataset.mean=[0.5]", "dataset.std=[0.29]",
                   "dataset.train_size=64", "dataset.test_size=16", "dataset.num_classes=4", "head.dim=8"
                   if head == "gcp" else "head.dropout=0.0", *size, "trainer.max_epochs=3", "trainer.batch_size=16",
                   "trainer.progress=false", "optimizer=adamw", "lr_policy=constant", "lr_policy.base_lr=1e-3")
    check_network(cfg)
    run(cfg, tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_an_average_pooled_vits_weights_file_fills_its_fc_norm(tmp_path):
    """fc_norm, which the trunk applies to every token, is the file's fc_norm: named once, loaded."""
    torch.manual_seed(0)
    source = timm.create_model("test_vit", num_classes=10, img_size=32, global_pool="avg")
    with torch.no_grad():
        source.fc_norm.weight.normal_()  # not the ones a new norm starts from
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model, _ = build_network(timm_cfg("test_vit", "+backbone.kwargs.global_pool=avg", f"backbone.weights={path}"),
                             10, 3)
    torch.testing.assert_close(model.backbone.model.fc_norm.weight, source.fc_norm.weight)
    assert not any("token_norm" in key for key in model.state_dict())


def test_sot_on_a_vit_reads_its_class_token_and_on_a_cnn_the_mean_token():
    """head=sot on a ViT: the trunk hands over (map, class token) and the pooled vector starts with the class
    token as forward_features gives it (after the final norm); on ConvNeXt, with no class token, the mean of
    the map's positions stands in."""
    torch.manual_seed(0)
    vit = build_model(timm_cfg("test_vit", "head=sot"), 7, 3).eval()
    assert vit.backbone.return_class_token
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = vit.backbone.model.forward_features(images)
        pooled = vit.head.pool(vit.backbone(images))
    torch.testing.assert_close(pooled[:, :tokens.shape[-1]], tokens[:, 0])
    cnn = build_model(timm_cfg("test_convnext", "head=sot"), 7, 3).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = cnn.backbone(images)
        torch.testing.assert_close(cnn.head.pool(maps)[:, :maps.shape[1]], maps.mean((2, 3)))
