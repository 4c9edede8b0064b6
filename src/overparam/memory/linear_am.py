"""A neuron's weighted sum read as a linear associative memory (AM).

Stored pairs (x_i, y_i), i = 1..n, with x_i in R^d; recall is y_hat = x W. Three storage rules:

- ``pinv`` (Kohonen & Ruohonen 1973, the optimal linear AM): W = X^+ Y, the minimum-norm solution of
  X W = Y. Exact recall for n <= d (generic patterns); least-squares recall beyond.
- ``hebbian`` (Kohonen 1972, correlation-matrix memory): W = X^T Y. Every recall carries crosstalk
  from the other n - 1 stored patterns.
- ``sgd``: gradient descent on 0.5 ||X W - Y||^2 / n from W = 0 (full batch by default, so it is
  deterministic). It converges to the pseudo-inverse solution; stopped early it behaves like a ridge.

``normalize=True`` rescales every input (stored and recalled) to unit length -- the essay's "input of
constant vector length". Input noise (``recall(..., noise_std=s)``) is added to the input the memory
sees, i.e. after normalization: each of the d entries gets independent N(0, s^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RULES = ("pinv", "hebbian", "sgd")


def normalize_rows(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row scaled to unit Euclidean length (zero rows stay zero)."""
    X = np.asarray(X, dtype=float)
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    return X / np.maximum(norms, eps)


def random_patterns(n: int, d: int, seed: int = 0, kind: str = "sphere") -> np.ndarray:
    """n random patterns in R^d: ``sphere`` (uniform on the unit sphere) or ``gaussian`` (entries N(0, 1/d),
    so the expected squared length is 1)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    if kind == "sphere":
        return normalize_rows(Z)
    if kind == "gaussian":
        return Z / np.sqrt(d)
    raise ValueError(f"kind: {kind!r} is not allowed; choose one of: sphere, gaussian")


def random_targets(n: int, m: int | None = None, seed: int = 0, kind: str = "binary") -> np.ndarray:
    """Zero-mean unit-variance targets: ``binary`` (+-1) or ``gaussian``; shape (n,) if m is None else (n, m)."""
    rng = np.random.default_rng(seed)
    shape = (n,) if m is None else (n, m)
    if kind == "binary":
        return rng.choice([-1.0, 1.0], size=shape)
    if kind == "gaussian":
        return rng.standard_normal(shape)
    raise ValueError(f"kind: {kind!r} is not allowed; choose one of: binary, gaussian")


@dataclass
class LinearAM:
    """Linear associative memory over d-dimensional inputs.

    >>> am = LinearAM(64, rule="pinv").store(random_patterns(32, 64), random_targets(32))
    >>> y_hat = am.recall(random_patterns(32, 64), noise_std=0.01, seed=1)
    """

    d: int
    rule: str = "pinv"
    normalize: bool = True
    lr: float | None = None    # sgd: step size; None = 1 / lambda_max(X^T X) (stable, fastest uniform rate)
    epochs: int = 200          # sgd: passes over the stored pairs
    batch_size: int | None = None   # sgd: None = full batch (deterministic gradient descent)
    seed: int = 0              # sgd with minibatches: order of the pairs
    W: np.ndarray | None = field(default=None, repr=False)   # (d, m) after store

    def __post_init__(self):
        if not isinstance(self.d, (int, np.integer)) or self.d < 1:
            raise ValueError(f"d: must be a positive integer, got {self.d!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule: {self.rule!r} is not allowed; choose one of: {', '.join(RULES)}")
        if (self.lr is not None and self.lr <= 0) or self.epochs < 0:
            raise ValueError("lr must be > 0 and epochs >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1 or None, got {self.batch_size}")

    # -- inputs ---------------------------------------------------------------------------------
    def prepare(self, X: np.ndarray) -> np.ndarray:
        """The input the memory sees: a float (n, d) array, unit-length rows if ``normalize``."""
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(f"X: expected shape (n, {self.d}), got {np.shape(X)}")
        return normalize_rows(X) if self.normalize else X

    # -- storing ---------------------------------------------------------------------------------
    def store(self, X: np.ndarray, Y: np.ndarray) -> "LinearAM":
        """Store n pairs: X (n, d), Y (n,) scalar targets or (n, m) vector targets. Returns self."""
        X = self.prepare(X)
        Y = np.asarray(Y, dtype=float)
        if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y: expected shape ({X.shape[0]},) or ({X.shape[0]}, m), got {Y.shape}")
        self._scalar = Y.ndim == 1
        Y2 = Y[:, None] if self._scalar else Y
        if self.rule == "pinv":
            self.W = np.linalg.pinv(X) @ Y2
        elif self.rule == "hebbian":
            self.W = X.T @ Y2
        else:
            self.W = self._gradient_descent(X, Y2)
        return self

    def _gradient_descent(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        # Loss 0.5 ||X W - Y||^2 (a sum, not a mean): one step multiplies the error along the k-th
        # singular direction by (1 - lr * s_k^2), the form used by theory.gd_recall_error.
        n = X.shape[0]
        W = np.zeros((self.d, Y.shape[1]))
        self.lr_used = float(self.lr) if self.lr is not None else 1.0 / max(np.linalg.norm(X, 2) ** 2, 1e-300)
        lr = self.lr_used
        if self.batch_size is None or self.batch_size >= n:
            for _ in range(self.epochs):
                W -= lr * (X.T @ (X @ W - Y))
            return W
        rng = np.random.default_rng(self.seed)
        scale = n / self.batch_size   # an unbiased estimate of the full-batch gradient
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                W -= lr * scale * (X[idx].T @ (X[idx] @ W - Y[idx]))
        return W

    # -- recalling -------------------------------------------------------------------------------
    def recall(self, X: np.ndarray, noise_std: float = 0.0, seed: int | None = None) -> np.ndarray:
        """Recall from inputs X (n, d), with N(0, noise_std^2) added to every input entry (after
        normalization). Returns (n,) for scalar memories, (n, m) for vector ones."""
        if self.W is None:
            raise RuntimeError("recall before store: call .store(X, Y) first")
        if noise_std < 0:
            raise ValueError(f"noise_std: must be >= 0, got {noise_std}")
        X = self.prepare(X)
        if noise_std > 0:
            X = X + noise_std * np.random.default_rng(seed).standard_normal(X.shape)
        out = X @ self.W
        return out[:, 0] if self._scalar else out

    @property
    def weight_norm2(self) -> float:
        """||W||_F^2 (per output column: divide by m). The output noise variance is noise_std^2 * this."""
        return float(np.sum(self.W ** 2))


def recall_stats(am: LinearAM, X: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """Relative recall MSE, signal gain (slope of recall on target) and crosstalk variance of stored pairs.

    crosstalk = y_hat - a * y with a = <y_hat, y> / <y, y>: the part of the recall not explained by the target.
    """
    Y = np.asarray(Y, dtype=float)
    Yh = am.recall(X)
    err = Yh - Y
    a = float(np.sum(Yh * Y) / np.sum(Y * Y))
    cross = Yh - a * Y
    return {"relative_mse": float(np.mean(err ** 2) / np.mean(Y ** 2)), "signal_gain": a,
            "crosstalk_var": float(np.mean(cross ** 2) / np.mean(Y ** 2))}


def cosine_to_targets(Y_hat: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Row-wise cosine between vector recalls and their targets."""
    num = np.sum(Y_hat * Y, axis=1)
    den = np.linalg.norm(Y_hat, axis=1) * np.linalg.norm(Y, axis=1)
    return num / np.maximum(den, 1e-300)
