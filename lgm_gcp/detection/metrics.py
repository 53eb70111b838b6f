"""The OOD-detection metrics as pytorch-ood and OpenOOD report them.

Convention (named in every table): scores are *outlier* scores, higher = more abnormal; the abnormal
inputs (OOD or adversarial) are the positive class.

- AUROC: P(s_abnormal > s_clean), ties counted half.
- AUPR-OUT: area under precision(recall) with the abnormal inputs positive, by the trapezoid rule over
  scikit-learn's curve (not average precision); AUPR-IN the same with the clean inputs positive and the
  scores negated.
- FPR@95TPR: the fraction of clean inputs flagged at the first threshold that flags >= 95 % of the
  abnormal ones (pytorch-ood's and OpenOOD's FPR95). Lee et al.'s "TNR at 95 % TPR" is a different
  quantity (clean inputs as the positives); it is not reported.
Values are fractions in [0, 1]; tables print them x 100.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")


def _labelled(clean: torch.Tensor, abnormal: torch.Tensor) -> tuple:
    """(labels, 1 = abnormal; scores with ±inf made the largest finite floats) as numpy arrays."""
    y = np.r_[np.zeros(len(clean)), np.ones(len(abnormal))]
    s = torch.cat([clean.double().cpu(), abnormal.double().cpu()]).numpy()
    if np.isnan(s).any():
        raise ValueError("a detector returned NaN scores")
    return y, np.nan_to_num(s, posinf=1e300, neginf=-1e300)


def ood_metrics(clean: torch.Tensor, abnormal: torch.Tensor) -> dict:
    """Scores (N,) of clean and (M,) of abnormal inputs -> {AUROC, AUPR-IN, AUPR-OUT, FPR95}."""
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

    y, s = _labelled(clean, abnormal)
    precision, recall, _ = precision_recall_curve(y, s)
    precision_in, recall_in, _ = precision_recall_curve(1 - y, -s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"AUROC": float(roc_auc_score(y, s)), "AUPR-IN": float(auc(recall_in, precision_in)),
            "AUPR-OUT": float(auc(recall, precision)), "FPR95": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}


def roc(clean: torch.Tensor, abnormal: torch.Tensor) -> tuple:
    """(false positive rate, true positive rate) with the abnormal inputs positive, for the plots."""
    from sklearn.metrics import roc_curve

    return roc_curve(*_labelled(clean, abnormal))[:2]
