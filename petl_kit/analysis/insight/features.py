"""How well the pooled features the head sees separate the classes (linear probing)."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def pooled_features(model, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, D], labels [N] or [N, C])``: the pooled representation the head sees
    (on ``device``, default: where the model is)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    feats, labels = [], []
    try:
        for batch in loader:
            mask = batch.get("attention_mask")
            hidden, frames = model.encode(
                batch["input_values"].to(device), None if mask is None else mask.to(device)
            )
            feats.append(model.pool(hidden, frames).float().cpu())
            labels.append(batch["labels"])
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def separability(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Accuracy of two simple classifiers fitted on ``train`` features, scored on ``test``.

    ``logistic``: L2 logistic regression on standardised features (a well-converged linear
    probe); ``nearest_centroid``: class means, no training at all. Multiclass labels only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xte, yte) = train, test
    out = {}
    for name, clf in (
        ("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        ("nearest_centroid", make_pipeline(StandardScaler(), NearestCentroid())),
    ):
        out[name] = float((clf.fit(xtr, ytr).predict(xte) == yte).mean())
    return out


def project_2d(features: np.ndarray) -> np.ndarray:
    """PCA of ``[N, D]`` standardised features to ``[N, 2]``."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    return PCA(n_components=2).fit_transform(StandardScaler().fit_transform(features))
