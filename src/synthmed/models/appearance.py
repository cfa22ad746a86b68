"""Appearance clusters: the coarse look of a training image, as a condition beside its labels
(cluster-conditioned generation: Liu et al. 2020, self-conditioned GANs; Hu et al. 2023,
self-guided diffusion).

Why: a label says what is in an image, not how the slice looks (contrast, size, position). The
sets of a denoiser conditioned on labels alone showed their labels by brightness more than the
real images do and were less varied, and the classifiers trained on them missed part of the real
fold's looks. The hope: told each training image's look as well, and asked at sampling for the
looks in the real fold's own shares per label, the model covers them. Measured on br35h
(docs/diffusion-experiments.md, "Conditioning on the look of the image"): at the full CPU
preset's length the sets came closer in Inception features but the classifiers' gap stayed level,
and on the demo's smaller network and budget the labels weakened; so it is an option, off in
every preset.

Fitted once, when a run starts, on the real training fold: every image average-pooled to at most
16 x 16 px, projected on its first 32 principal components, and split into ``count`` clusters by
k-means (scikit-learn, seeded). ``count`` is an upper bound: k-means looks for at most one cluster
per ``MIN_CLUSTER_ROWS`` images, a cluster of fewer images than that is dissolved into its
neighbours, and each centre is then the mean of its images (k-means readily gives an outlier a
cluster of its own, whose centre would be that one image at 16 px). A small fold gets fewer
clusters, down to one (the same condition for every image: no clusters in effect). Training
conditions each image on its own cluster. Sampling draws each row's cluster from the share of each
cluster among the training rows with the same labels (among all training rows where those labels
never occur in training), with the sampling noise's generator, so a seed gives the same clusters.

What the fit keeps goes into the model's state dict (so into checkpoints and ``generator.pt``):
the pooled pixels' mean, the components, the cluster centres (each the mean of at least
``MIN_CLUSTER_ROWS`` training images) and, per label combination of the training fold, the
cluster shares. Like the network's weights, it is learnt from the real images: the run's files
are as confidential as the data, and only the synthetic set is made to be shared.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

POOLED_SIZE = 16  # px: the look, not the detail
COMPONENTS = 32  # principal components of the pooled pixels that k-means sees
KMEANS_RESTARTS = 10  # k-means starts; the best of them is kept (scikit-learn's n_init)
MIN_CLUSTER_ROWS = 20  # images per cluster at least: a centre is an average, never one image
FITTED = ("mean", "components", "centres", "combinations", "shares", "overall")


def pool(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] -> (N, C * s * s) pixels average-pooled to s = min(16, H)."""
    size = min(POOLED_SIZE, images.shape[-1])
    return F.adaptive_avg_pool2d(images.float(), size).flatten(1)


class AppearanceClusters(nn.Module):
    """Assigns images to ``count`` appearance clusters and draws clusters for rows of ``label_dim`` labels; ``fit``
    first."""

    def __init__(self, count: int, label_dim: int) -> None:
        super().__init__()
        self.count, self.label_dim = count, label_dim
        self.fitted: dict[str, torch.Tensor] = {}
        self._row_of: dict[tuple[int, ...], int] = {}  # label combination -> its row of ``shares``
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}  # the fit's copies where images are

    def fit(self, pooled: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        """Fit on the training fold: ``pooled`` (N, D) from ``pool``, ``labels`` (N, L) multi-hot."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from threadpoolctl import threadpool_limits

        features = pooled.double().cpu().numpy()
        wanted = max(1, min(self.count, len(features) // MIN_CLUSTER_ROWS))
        # one thread: k-means sums its chunks in thread order, so the centres would depend on the core count
        # errstate: a one-row fold has no variance to explain, which PCA reports (the components stand)
        with threadpool_limits(1), np.errstate(invalid="ignore", divide="ignore"):
            pca = PCA(min(COMPONENTS, *features.shape), svd_solver="full").fit(features)
            projected = pca.transform(features)
            kmeans = KMeans(wanted, n_init=KMEANS_RESTARTS, random_state=seed).fit(projected)
        centres = _without_small_clusters(torch.from_numpy(projected), torch.from_numpy(kmeans.cluster_centers_))
        self.fitted = {"mean": torch.tensor(pca.mean_, dtype=torch.float32),
                       "components": torch.tensor(pca.components_, dtype=torch.float32),
                       "centres": centres.float()}
        self._on_device = {}
        assigned = self._nearest(pooled.float().cpu())  # as training will assign them
        combinations, row = torch.unique(labels.cpu().round().to(torch.int64), dim=0, return_inverse=True)
        counts = torch.zeros(len(combinations), self.count, dtype=torch.float64)
        counts.index_put_((row, assigned), torch.ones(len(row), dtype=torch.float64), accumulate=True)
        self.set_extra_state({**self.fitted, "combinations": combinations,
                              "shares": counts / counts.sum(dim=1, keepdim=True),
                              "overall": counts.sum(dim=0) / counts.sum()})

    @property
    def fitted_count(self) -> int:
        """How many clusters the fit kept (at most ``count``; fewer where the fold is small or has outliers)."""
        self._check_fitted()
        return len(self.fitted["centres"])

    def assign(self, images: torch.Tensor) -> torch.Tensor:
        """The cluster of each image (N, C, H, W) in [-1, 1]: (N,) integers on the images' device."""
        return self._nearest(pool(images))

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A cluster per label row, from its labels' shares in the training fold, drawn with ``generator``
        (on its own device, so a CPU generator draws the same clusters for any device of ``labels``)."""
        self._check_fitted()
        shares, overall = self.fitted["shares"], self.fitted["overall"]
        rows = [self._row_of.get(tuple(row), -1) for row in labels.round().to(torch.int64).tolist()]
        probabilities = torch.stack([shares[r] if r >= 0 else overall for r in rows])
        drawn = torch.multinomial(probabilities.to(generator.device), 1, generator=generator)
        return drawn.squeeze(1).to(labels.device)

    def one_hot(self, clusters: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(clusters.long(), self.count).to(device=like.device, dtype=like.dtype)

    def _nearest(self, pooled: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        if pooled.device not in self._on_device:  # a copy per device, not a transfer per training step
            self._on_device[pooled.device] = {name: self.fitted[name].to(pooled.device)
                                              for name in ("mean", "components", "centres")}
        fit = self._on_device[pooled.device]
        return _nearest_centre((pooled - fit["mean"]) @ fit["components"].T, fit["centres"])

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the appearance clusters are not fitted: a run fits them on its training fold")

    # the fit travels in the state dict (torch's extra-state hook: tensors whose shapes depend on the data)
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return dict(self.fitted)

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if problem := _state_problem(state, self.count, self.label_dim):
            raise RuntimeError(f"the appearance clusters' state {problem}")
        self.fitted = {name: state[name].cpu() for name in FITTED}
        self._on_device = {}
        self._row_of = {tuple(c): i for i, c in enumerate(self.fitted["combinations"].tolist())}


def _nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The index of each point's nearest centre. Direct distances: cdist's matrix-product shortcut (taken above 25
    rows) could move a boundary image to another cluster in a batch than in the whole fold."""
    return torch.cdist(points, centres, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)


def _without_small_clusters(projected: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The centres after dissolving, smallest first, every cluster of fewer than ``MIN_CLUSTER_ROWS`` rows (its rows
    go to their nearest remaining centre), each then the mean of its rows: a centre is never a few images (unless
    the fold is that small, when the one centre left is its mean)."""
    nearest = _nearest_centre(projected, centres)
    while True:
        sizes = torch.bincount(nearest, minlength=len(centres))
        if sizes.min() >= MIN_CLUSTER_ROWS or len(centres) == 1:
            break
        centres = centres[torch.arange(len(centres)) != sizes.argmin()]
        nearest = _nearest_centre(projected, centres)
    return torch.stack([projected[nearest == c].mean(dim=0) for c in range(len(centres))])


def _state_problem(state, count: int, label_dim: int) -> str | None:
    """What is wrong with a saved fit for ``count`` clusters and ``label_dim`` labels, in words (to follow "the
    state"), or None."""
    if not isinstance(state, dict) or set(state) != set(FITTED):
        held = sorted(state) if isinstance(state, dict) else type(state).__name__
        return f"holds {held}, not a fit of {list(FITTED)}"
    if not all(isinstance(state[name], torch.Tensor) for name in FITTED):
        return "holds values that are not tensors"
    if not all(state[name].is_floating_point() and state[name].isfinite().all() for name in FITTED
               if name != "combinations"):
        return "holds values that are not finite floating-point numbers"
    mean, components, centres = state["mean"], state["components"], state["centres"]
    combinations, shares, overall = state["combinations"], state["shares"], state["overall"]
    shapes_fit = (mean.dim() == 1 and components.dim() == 2 and components.shape[1] == len(mean)
                  and centres.dim() == 2 and centres.shape[1] == len(components) and combinations.dim() == 2
                  and shares.shape == (len(combinations), count) and overall.shape == (count,))
    if not shapes_fit:
        return f"does not fit {count} clusters (shapes {[tuple(state[name].shape) for name in FITTED]})"
    if not 1 <= len(centres) <= count:
        return f"holds {len(centres)} cluster centres, the config {count} clusters"
    if combinations.shape[1] != label_dim:  # else every row would silently fall back to the overall shares
        return f"holds label combinations {combinations.shape[1]} wide, for a model of {label_dim} labels"
    return None
