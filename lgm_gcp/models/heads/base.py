"""What every pooling head shares: optional MLP and dropout after pooling (the recipes' classifier stems)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Sequence, Union

import torch
from torch import nn

from lgm_gcp.options.fields import COUNT, DROP_RATE, RECIPE

# the parameters every head takes, as its signature writes them (lgm_gcp/options/fields.py): RECIPE ones
# default to `auto` in a config, the backbone's recipe (its classifier stem), else the value given here
DropRate = Annotated[float, DROP_RATE, RECIPE]
MLPWidths = Annotated[Sequence[int], RECIPE]  # hidden widths after pooling (the VGG recipes)
MLPNorm = Annotated[Union[bool, float], RECIPE]  # BatchNorm1d in the MLP: true, or its eps
Bottleneck = Annotated[Optional[int], COUNT]  # a last Linear to this many features (2-D plots)
Activation = Annotated[Literal["relu", "relu6"], RECIPE]  # of the 1x1 reduction (ReLU6: MobileNetV2, ShuffleNetV2)
ReduceInit = Annotated[Literal["kaiming", "default"], RECIPE]  # the 1x1 reduction conv's init


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or as it is if already float32 or float64: the matrix parts of the second-order heads
    run there with autocast off (a trace-normalised eigenvalue of ~1/d is poorly held by fp16)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class PoolingHead(nn.Module):
    """Subclasses set ``self.pool`` (maps -> (B, pooled_features)) and call ``_finish(pooled_features)``.

    ``mlp``: hidden widths of Linear-ReLU-Dropout blocks after pooling (the VGG recipes);
    ``mlp_norm``: insert BatchNorm1d before each ReLU, and no dropout (the large-margin "VGG-16 mod");
    ``true`` for PyTorch's eps 1e-5, or the eps itself (that recipe uses 1e-4).
    ``dropout``: with an MLP, after each hidden ReLU (VGG's classifier); without one, on the pooled
    vector, which then goes to the bottleneck if there is one, else to the classifier.
    ``bottleneck``: a last Linear to this many features with no activation (the L-GM paper's 2-D
    features for its feature plots).
    """

    preferred_last_stride: int = 2  # what `backbone.last_stride: auto` resolves to for this head
    min_positions: int = 1  # the fewest map positions (h·w) it pools (lgm_gcp.models.build.check_map_size)

    def _finish(self, pooled_features: int, dropout: float = 0.0, mlp: Sequence[int] = (),
                mlp_norm: bool = False, bottleneck: int | None = None) -> None:
        layers, d = [], pooled_features
        for width in mlp or ():
            layers.append(nn.Linear(d, width))
            if mlp_norm:
                eps = 1e-5 if isinstance(mlp_norm, bool) else float(mlp_norm)
                layers.append(nn.BatchNorm1d(width, eps=eps))
            layers.append(nn.ReLU(inplace=True))
            if dropout and not mlp_norm:
                layers.append(nn.Dropout(dropout))
            d = width
        if dropout and not mlp:
            layers.append(nn.Dropout(dropout))
        if bottleneck:
            layers.append(nn.Linear(d, bottleneck))
            d = bottleneck
        self.post = nn.Sequential(*layers)
        self.out_features = d
        for m in self.post.modules():
            if isinstance(m, nn.Linear) and m.out_features != bottleneck:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.post(self.pool(maps))
