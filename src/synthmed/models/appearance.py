"""Appearance clusters: the coarse look of a training image, as a condition beside its labels
(cluster-conditioned generation: Liu et al. 2020, self-conditioned GANs; Hu et al. 2023,
self-guided diffusion).

Why: a label says what is in an image, not how the slice looks (contrast, size, position). A
denoiser conditioned on labels alone made every tumour image a little brighter and more alike
than the real ones, and the classifiers trained on its images missed the real fold's other
looks. Told each training image's look as well, and asked at sampling for the looks in the real
fold's own shares per label, the model covers them (docs/diffusion-experiments.md,
"Conditioning on the look of the image").

Fitted once, when a run starts, on the real training fold: every image average-pooled to at most
16 x 16 px, projected on its first 32 principal components, and split into ``count`` clusters by
k-means (scikit-learn, seeded). Training conditions each image on its own cluster. Sampling draws
each row's cluster from the share of each cluster among the training rows with the same labels
(among all training rows where those labels never occur in training), with the sampling noise's
generator, so a seed gives the same clusters.

What the fit keeps goes into the model's state dict (so into checkpoints and ``generator.pt``):
the pooled pixels' mean, the components, the cluster centres and, per label combination, the
cluster shares. All are averages over many training images; no image or row of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLED_SIZE = 16  # px: the look, not the detail
COMPONENTS = 32  # principal components of the pooled pixels that k-means sees
KMEANS_RESTARTS = 10  # k-means starts; the best of them is kept (scikit-learn's n_init)
FITTED = ("mean", "components", "centres", "combinations", "shares", "overall")


def pool(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] -> (N, C * s * s) pixels average-pooled to s = min(16, H)."""
    size = min(POOLED_SIZE, images.shape[-1])
    return F.adaptive_avg_pool2d(images.float(), size).flatten(1)


class AppearanceClusters(nn.Module):
    """Assigns images to ``count`` appearance clusters and draws clusters for label rows; ``fit`` first."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.fitted: dict[str, torch.Tensor] = {}
        self._row_of: dict[tuple[int, ...], int] = {}  # label combination -> its row of ``shares``

    def fit(self, pooled: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        """Fit on the training fold: ``pooled`` (N, D) from ``pool``, ``labels`` (N, L) multi-hot."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from threadpoolctl import threadpool_limits

        if len(pooled) < self.count:
            raise ValueError(f"{self.count} appearance clusters need at least as many training rows, "
                             f"got {len(pooled)}")
        features = pooled.double().cpu().numpy()
        # one thread: k-means sums its chunks in thread order, so the centres would depend on the core count
        with threadpool_limits(1):
            pca = PCA(min(COMPONENTS, *features.shape), svd_solver="full").fit(features)
            kmeans = KMeans(self.count, n_init=KMEANS_RESTARTS, random_state=seed).fit(pca.transform(features))
        self.fitted = {"mean": torch.tensor(pca.mean_, dtype=torch.float32),
                       "components": torch.tensor(pca.components_, dtype=torch.float32),
                       "centres": torch.tensor(kmeans.cluster_centers_, dtype=torch.float32)}
        assigned = self._nearest(pooled.float().cpu())  # as training will assign them
        combinations, row = torch.unique(labels.cpu().round().to(torch.int64), dim=0, return_inverse=True)
        counts = torch.zeros(len(combinations), self.count, dtype=torch.float64)
        counts.index_put_((row, assigned), torch.ones(len(row), dtype=torch.float64), accumulate=True)
        self.set_extra_state({**self.fitted, "combinations": combinations,
                              "shares": counts / counts.sum(dim=1, keepdim=True),
                              "overall": counts.sum(dim=0) / counts.sum()})

    def assign(self, images: torch.Tensor) -> torch.Tensor:
        """The cluster of each image (N, C, H, W) in [-1, 1]: (N,) integers on the images' device."""
        return self._nearest(pool(images).cpu()).to(images.device)

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
        projected = (pooled - self.fitted["mean"]) @ self.fitted["components"].T
        return torch.cdist(projected, self.fitted["centres"]).argmin(dim=1)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the appearance clusters are not fitted: a run fits them on its training fold")

    # the fit travels in the state dict (torch's extra-state hook: tensors whose shapes depend on the data)
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return dict(self.fitted)

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if not state:  # an unfitted model's state: nothing to load
            self.fitted, self._row_of = {}, {}
            return
        if not isinstance(state, dict) or set(state) != set(FITTED) or len(state["centres"]) != self.count:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise RuntimeError(f"the appearance clusters' state does not fit {self.count} clusters (it holds {keys})")
        self.fitted = {name: state[name].cpu() for name in FITTED}
        self._row_of = {tuple(c): i for i, c in enumerate(self.fitted["combinations"].tolist())}
