"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images with 17 grey levels, 10 classes.

Ships inside scikit-learn's wheel, so the demo and the tests run offline. The split is a fixed,
stratified train/test split (``test_fraction``, ``split_seed``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from lgm_gcp.data.in_memory import InMemoryData
from lgm_gcp.options.fields import Index, Range


class Digits(InMemoryData):
    def __init__(self, test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.25,
                 split_seed: Index = 0, **kwargs):
        self.test_fraction, self.split_seed = test_fraction, split_seed
        super().__init__(**kwargs)

    def load(self):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
        tr_x, te_x, tr_y, te_y = train_test_split(
            images, digits.target, test_size=self.test_fraction, random_state=self.split_seed, stratify=digits.target
        )
        as_tensor = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
        return (as_tensor(tr_x, torch.uint8), as_tensor(tr_y, torch.int64),
                as_tensor(te_x, torch.uint8), as_tensor(te_y, torch.int64))
