"""Image-set metrics on the torch-fidelity pattern: plain arrays in, numbers out, one module per metric.

- ``fid``: Fréchet distance and the streaming feature statistics behind it;
- ``kid``: Kernel Inception Distance;
- ``precision_recall`` and ``density_coverage``: k-nearest-neighbour manifold metrics;
- ``auroc``: per-label AUROC of a classifier, undefined labels named;
- ``knn``: the one exact nearest-neighbour engine (also behind the privacy audit);
- ``extractors``: the image feature extractors (Inception, pixels, a trained classifier) and their registry.

``training`` (the FID stopping rule) and ``evaluation`` (fidelity, privacy, utility) import this
package; it imports neither.
"""
