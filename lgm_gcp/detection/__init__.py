"""Abnormal-input detection (lgm-gcp-detect): detectors (L-GM's likelihood, kernel density and
pytorch-ood's), the inputs they separate from clean test images (attacks, out-of-distribution and
open-set images) and the field's metrics (AUROC, AUPR-IN, AUPR-OUT, FPR@95TPR)."""
