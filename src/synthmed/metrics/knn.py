"""The one exact nearest-neighbour engine of synthmed: fidelity's k-NN balls and privacy's closest records.

Everything is float64 and done on tiles of ``block`` queries x ``block`` references, so peak memory
is O(block**2) (about 130 MB a tile at the default) beyond a float64 copy of the inputs and block x k
x dim for the recomputed neighbours, whatever the number of rows: 100k+ references are fine. A tile holds cosine distances (1 - cosine similarity;
a zero vector has distance 1 to everything, as in scikit-learn) or squared euclidean distances by
the expansion ||q||^2 - 2 q.r + ||r||^2, which a matrix product computes fast but with an error of
about the dimension times the float64 epsilon times the squared norms. The interesting distances
(copies, ball edges) are tiny differences of large dot products, so the answers are made exact
where that error could matter: ``nearest_neighbours`` recomputes the euclidean winners as
||q - r||, and ``balls_holding`` decides the pairs that close to a radius by ||q - r|| too.
``nearest_neighbours`` matches scikit-learn's ``NearestNeighbors`` and the balls equal the
brute-force definitions of precision, recall, density and coverage (tests/test_knn.py, tests/test_fidelity.py).
"""

from __future__ import annotations

import numpy as np

from synthmed.metrics.arrays import Features, as_matrix

BLOCK = 4096  # queries and references per tile
METRICS = ("cosine", "euclidean")


def _pair(queries: Features, references: Features) -> tuple[np.ndarray, np.ndarray]:
    q, r = as_matrix("queries", queries), as_matrix("references", references)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features, references {r.shape[1]}")
    return q, r


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)


def _tile(q: np.ndarray, r: np.ndarray, q_sq: np.ndarray | None, r_sq: np.ndarray | None) -> np.ndarray:
    """Distances of rows ``q`` to rows ``r``: cosine when the rows are unit vectors and no squared norms
    are given, else squared euclidean by the expansion; never below zero."""
    d = q @ r.T  # turned into distances in place: each pass over a tile costs
    if q_sq is None:
        np.subtract(1.0, d, out=d)
    else:
        d *= -2.0
        d += q_sq[:, None]
        d += r_sq[None, :]
    np.maximum(d, 0.0, out=d)  # rounding can dip below zero for identical rows
    return d


def nearest_neighbours(
    queries: Features,
    references: Features,
    metric: str = "cosine",
    k: int = 1,
    block: int = BLOCK,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references of every query: ``(distances (Q, k), indices (Q, k))``.

    ``metric`` is "cosine" or "euclidean". Rows are sorted by distance. The running top-k of each
    tile is merged; euclidean winners are recomputed as ||q - r||, since the square root would
    magnify the expansion's rounding. Among equal distances the lower reference index comes first,
    except that a tie across the k-th place may keep any of the tied ones. ``exclude_self``: the
    queries are the references, and each row's own index is no neighbour of it (a duplicate row is).
    """
    q, r = _pair(queries, references)
    if exclude_self and q.shape != r.shape:
        raise ValueError(f"exclude_self needs the queries to be the references, got shapes {q.shape} and {r.shape}")
    candidates = len(r) - 1 if exclude_self else len(r)
    if not 1 <= k <= candidates:
        raise ValueError(f"k must be in [1, {candidates}], got {k}")
    if metric == "cosine":
        q, r = _unit_rows(q), _unit_rows(r)
        q_sq = r_sq = None
    elif metric == "euclidean":
        q_sq, r_sq = _squared_norms(q), _squared_norms(r)
    else:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")

    distances = np.empty((len(q), k))
    indices = np.empty((len(q), k), dtype=np.int64)
    for qs in range(0, len(q), block):
        qb = q[qs : qs + block]
        best_d = np.full((len(qb), k), np.inf)
        best_i = np.full((len(qb), k), -1, dtype=np.int64)
        for rs in range(0, len(r), block):
            d = _tile(qb, r[rs : rs + block], None if q_sq is None else q_sq[qs : qs + block],
                      None if r_sq is None else r_sq[rs : rs + block])
            if exclude_self:  # the tile's diagonal entries q_i = r_i, where the two ranges overlap
                own = np.arange(max(qs, rs), min(qs + len(qb), rs + d.shape[1]))
                d[own - qs, own - rs] = np.inf
            kk = min(k, d.shape[1])
            # argmin (first, i.e. lowest, index on ties) is several times faster than a partition
            part = d.argmin(axis=1)[:, None] if kk == 1 else np.argpartition(d, kk - 1, axis=1)[:, :kk]
            # Old candidates first so that a stable sort keeps lower indices ahead on ties.
            cand_d = np.concatenate([best_d, np.take_along_axis(d, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + rs], axis=1)
            order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(cand_d, order, axis=1)
            best_i = np.take_along_axis(cand_i, order, axis=1)
        if metric == "euclidean":
            # The expansion loses ~1e-8 x norm after the square root; recompute the winners'
            # distances directly so near-copies get their true, tiny distance.
            best_d = np.linalg.norm(qb[:, None, :] - r[best_i], axis=2)
            order = np.argsort(best_d, axis=1, kind="stable")
            best_d, best_i = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)
        distances[qs : qs + block], indices[qs : qs + block] = best_d, best_i
    return distances, indices


def knn_radii(x: Features, k: int, block: int = BLOCK) -> np.ndarray:
    """Euclidean distance from each row of ``x`` to its k-th nearest other row (itself excluded by index,
    not by value: a duplicate row is at distance 0)."""
    return nearest_neighbours(x, x, metric="euclidean", k=k, block=block, exclude_self=True)[0][:, -1]


def balls_holding(points: Features, centres: Features, radii: np.ndarray,
                  block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For the closed euclidean balls (``centres[j]``, ``radii[j]``): how many balls hold each point, and how
    many points each ball holds; ``||p - c|| <= r`` decided as ``np.linalg.norm(p - c)`` would decide it."""
    p, c = _pair(points, centres)
    radii = np.asarray(radii, dtype=np.float64)
    if radii.shape != (len(c),):
        raise ValueError(f"expected {len(c)} radii, one per centre, got shape {radii.shape}")
    p_sq, c_sq, r_sq = _squared_norms(p), _squared_norms(c), radii**2
    # The expansion is off by at most about (D + 3) eps (|p|^2 + |c|^2) (a dot product's rounding bound),
    # ||p - c||^2 by as much again twice over and a squared radius by 2 eps r^2: within this band of the
    # radius a tile cannot decide a pair, so the direct distance does.
    eps = np.finfo(np.float64).eps
    per_point, per_centre = np.zeros(len(p), np.int64), np.zeros(len(c), np.int64)
    for ps in range(0, len(p), block):
        pb, pb_sq = p[ps : ps + block], p_sq[ps : ps + block]
        for cs in range(0, len(c), block):
            cb, cb_sq, rb, rb_sq = (a[cs : cs + block] for a in (c, c_sq, radii, r_sq))
            d = _tile(pb, cb, pb_sq, cb_sq)
            band = 4 * (p.shape[1] + 3) * eps * (pb_sq.max() + cb_sq.max()) + 4 * eps * rb_sq
            gap = d - rb_sq
            undecided = np.abs(gap, out=gap) <= band
            inside = d <= rb_sq
            i, j = np.nonzero(undecided)
            for s in range(0, len(i), block):  # a block of pairs at a time: a tile of duplicates is all undecided
                ii, jj = i[s : s + block], j[s : s + block]
                inside[ii, jj] = np.linalg.norm(pb[ii] - cb[jj], axis=1) <= rb[jj]
            per_point[ps : ps + len(pb)] += inside.sum(axis=1)
            per_centre[cs : cs + len(cb)] += inside.sum(axis=0)
    return per_point, per_centre
