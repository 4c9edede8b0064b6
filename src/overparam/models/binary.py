"""Binary-weight layers (BinaryConnect, Courbariaux, Bengio & David 2015) and their "quasi" network
(Zhang, Yin & Wang, arXiv 2206.05916).

BinaryConnect keeps real-valued *latent* weights w and uses binary weights w_b ∈ {−1, +1} in the
forward pass:

* ``mode="sign"``        w_b = sign(w) (sign(0) = +1), deterministic;
* ``mode="stochastic"``  w_b = +1 with probability hard_sigmoid(w) = clip((w + 1)/2, 0, 1), else −1;
* ``mode="real"``        no binarization (w_b = clip(w, −1, 1)): the vanilla control with the very same
  parameterization, so "binary vs vanilla" differs in nothing but the binarization.

The layer computes y = scale · x w_bᵀ + b with scale = 1/sqrt(fan_in) by default (a ±1 matrix has
entries of size 1; the constant keeps pre-activations O(1) at any width, i.e. the NTK parameterization).
Biases stay real.

Backward: the straight-through estimator (STE), a ``torch.autograd.Function`` with static
forward / setup_context / backward / jvp (new style, vmap-able). ``ste="identity"`` passes the gradient
through unchanged (∂w_b/∂w := 1); ``ste="clipped"`` (default, BinaryConnect / Hubara et al. 2016) masks
it where |w| > 1, i.e. the gradient of hard-tanh(w).

Clipping: the latent weights live in [−1, 1]. ``BinaryLinear.clip_()`` (or :func:`clip_binary_`) clamps
them in place; call it after each optimizer step. With ``auto_clip=True`` (default) the layer also
clamps its own latent weights at the start of every training-mode forward pass with gradients on, so
the project's standard ``train()`` loop (which has no hook) keeps them clipped: the clip of step t
happens right before the forward of step t + 1, which is the same trajectory. Forward values never
depend on whether the clip happened (sign and hard_sigmoid see clip(w) anyway).

Evaluation (``model.eval()``): ``eval_weights="binary"`` uses w_b (a fresh draw in stochastic mode),
``"mean"`` uses E[w_b] = clip(w, −1, 1) (BinaryConnect's test-time option for stochastic rounding).
Default: "binary" for sign, "mean" for stochastic.

The quasi network. Under stochastic rounding E[w_b] = w and Var[w_b] = 1 − w² for w ∈ [−1, 1], the
draws independent. :meth:`BinaryLinear.moments` propagates the mean μ and variance v of its inputs
(treated as independent) exactly through the layer:
    mean = scale · μ E[w_b]ᵀ + b,     var = scale² · Σ_j (E[w_b²](μ_j² + v_j) − E[w_b]² μ_j²),
and :func:`relu_moments` pushes a Gaussian N(m, σ²) (the CLT approximation of a wide pre-activation)
through ReLU in closed form -- the "Gaussian-smoothed ReLU". :class:`QuasiNetwork` chains these and
returns the output mean: a deterministic, smooth function of the latent weights. Its NTK (via
``overparam.measure.ntk.ntk_gram(QuasiNetwork(net), X)``) is what the thesis calls the NTK of the
binary-weight network. By contrast, ``ntk_gram(net, X)`` on the binary net itself gives the
"straight-through NTK" (gradients of the STE at the sampled/sign weights), a different object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

MODES = ("sign", "stochastic", "real")
STES = ("clipped", "identity")


class BinarizeSTE(torch.autograd.Function):
    """w_b = +1 where w ≥ threshold else −1; straight-through gradient (masked where |w| > 1 if clipped).

    threshold 0 gives sign(w); threshold 2u − 1 with u ~ U(0, 1) gives stochastic rounding with
    P(+1) = clip((w + 1)/2, 0, 1).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(w: torch.Tensor, threshold: torch.Tensor, clipped: bool) -> torch.Tensor:
        return torch.where(w >= threshold, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        w, _, clipped = inputs
        ctx.clipped = clipped
        if clipped:
            ctx.save_for_backward(w)
            ctx.save_for_forward(w)

    @staticmethod
    def backward(ctx, grad):
        if ctx.clipped:
            (w,) = ctx.saved_tensors
            grad = grad * (w.abs() <= 1).to(grad.dtype)
        return grad, None, None

    @staticmethod
    def jvp(ctx, w_t, _threshold_t, _clipped_t):
        if ctx.clipped:
            (w,) = ctx.saved_tensors
            return w_t * (w.abs() <= 1).to(w_t.dtype)
        return w_t


def binarize(w: torch.Tensor, mode: str = "sign", ste: str = "clipped",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary weights of latent ``w`` with a straight-through gradient (see :class:`BinarizeSTE`)."""
    if mode == "real":
        return w.clamp(-1.0, 1.0)
    if mode == "sign":
        threshold = torch.zeros((), dtype=w.dtype)
    elif mode == "stochastic":
        threshold = 2.0 * torch.rand(w.shape, generator=generator, dtype=w.dtype) - 1.0
    else:
        raise ValueError(f"mode: {mode!r} is not allowed; choose one of: {', '.join(MODES)}")
    return BinarizeSTE.apply(w, threshold, ste == "clipped")


def weight_moments(w: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """E[w_b] and E[w_b²] of the forward weights, elementwise, as differentiable functions of ``w``."""
    if mode == "stochastic":
        mean = w.clamp(-1.0, 1.0)                  # 2·hard_sigmoid(w) − 1
        return mean, torch.ones_like(w)
    if mode == "sign":
        # deterministic and piecewise constant: zero derivative almost everywhere
        s = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        return s, torch.ones_like(w)
    mean = w.clamp(-1.0, 1.0)
    return mean, mean * mean


class BinaryLinear(nn.Module):
    """A linear layer with binary weights in the forward pass (BinaryConnect); see the module docstring."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "sign",
                 scale: str | float | None = "fan_in", ste: str = "clipped", eval_weights: str | None = None,
                 auto_clip: bool = True, seed: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not allowed; choose one of: {', '.join(MODES)}")
        if ste not in STES:
            raise ValueError(f"ste: {ste!r} is not allowed; choose one of: {', '.join(STES)}")
        if eval_weights not in (None, "binary", "mean"):
            raise ValueError(f"eval_weights: {eval_weights!r} is not allowed; choose binary or mean")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"sizes must be >= 1, got in={in_features}, out={out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.mode, self.ste, self.auto_clip = mode, ste, auto_clip
        self.eval_weights = eval_weights or ("mean" if mode == "stochastic" else "binary")
        if scale == "fan_in":
            self.scale = 1.0 / math.sqrt(in_features)
        elif scale is None:
            self.scale = 1.0
        elif isinstance(scale, (int, float)) and scale > 0:
            self.scale = float(scale)
        else:
            raise ValueError(f"scale: expected 'fan_in', None or a positive number, got {scale!r}")
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1.0, 1.0))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-self.scale, self.scale)) if bias else None
        self._seed = seed
        self._generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, "
                f"scale={self.scale:.4g}, ste={self.ste}, bias={self.bias is not None}")

    @property
    def generator(self) -> torch.Generator | None:
        """Draws of stochastic rounding; seeded when the layer was built with ``seed``."""
        if self._generator is None and self._seed is not None:
            self._generator = torch.Generator().manual_seed(self._seed)
        return self._generator

    @torch.no_grad()
    def clip_(self) -> "BinaryLinear":
        """Clamp the latent weights to [−1, 1] in place (call after each optimizer step)."""
        self.weight.clamp_(-1.0, 1.0)
        return self

    def binary_weight(self) -> torch.Tensor:
        """The weights the forward pass uses now (without the scale)."""
        if not self.training and self.eval_weights == "mean":
            return weight_moments(self.weight, self.mode)[0]
        return binarize(self.weight, self.mode, self.ste, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.auto_clip and self.training and torch.is_grad_enabled()
                and isinstance(self.weight, nn.Parameter)):  # not under functional_call's swapped tensors
            self.clip_()
        out = self.scale * (x @ self.binary_weight().T)
        return out if self.bias is None else out + self.bias

    def moments(self, mean: torch.Tensor, var: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the output given independent inputs of mean ``mean`` and variance ``var``
        (None = deterministic inputs), over the stochastic-rounding draws. Exact for a linear layer."""
        ew, ew2 = weight_moments(self.weight, self.mode)
        mu2 = mean * mean
        second = (mu2 if var is None else mu2 + var) @ ew2.T
        out_var = self.scale ** 2 * (second - mu2 @ (ew * ew).T)
        out_mean = self.scale * (mean @ ew.T)
        if self.bias is not None:
            out_mean = out_mean + self.bias
        return out_mean, out_var.clamp_min(0.0)


def relu_moments(m: torch.Tensor, var: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of relu(z) for z ~ N(m, var): the Gaussian-smoothed ReLU (closed form).

    E = m Φ(m/σ) + σ φ(m/σ);  E[relu²] = (m² + σ²) Φ(m/σ) + m σ φ(m/σ).
    """
    s = torch.sqrt(var + eps)
    a = m / s
    cdf = 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    e1 = m * cdf + s * pdf
    e2 = (m * m + s * s) * cdf + m * s * pdf
    return e1, (e2 - e1 * e1).clamp_min(0.0)


def _identity_moments(m, var):
    return m, var


MOMENT_ACTIVATIONS = {"relu": relu_moments, "identity": _identity_moments}
_ACTIVATIONS = {"relu": nn.ReLU, "identity": nn.Identity, "tanh": nn.Tanh}


class BinaryMLP(nn.Module):
    """in → widths... → out with :class:`BinaryLinear` layers (``binary_last=False`` keeps a real last layer)."""

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "relu",
                 bias: bool = True, mode: str = "sign", scale: str | float | None = "fan_in",
                 ste: str = "clipped", binary_last: bool = True, eval_weights: str | None = None,
                 seed: int | None = None):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(_ACTIVATIONS)}")
        sizes = [int(in_dim), *[int(w) for w in widths], int(out_dim)]
        self.in_dim, self.widths, self.out_dim, self.activation = sizes[0], sizes[1:-1], sizes[-1], activation
        self.mode = mode
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            layers.append(BinaryLinear(a, b, bias=bias, mode=mode if (binary_last or not last) else "real",
                                       scale=scale, ste=ste, eval_weights=eval_weights,
                                       seed=None if seed is None else seed * 1009 + i))
        self.layers = nn.ModuleList(layers)
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h

    def clip_(self) -> "BinaryMLP":
        return clip_binary_(self)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output mean and variance over stochastic-rounding draws (Gaussian approximation between layers)."""
        if self.activation not in MOMENT_ACTIVATIONS:
            raise ValueError(f"moments: activation {self.activation!r} has no closed form; use relu or identity")
        act = MOMENT_ACTIVATIONS[self.activation]
        mean, var = x.flatten(1), None
        for i, layer in enumerate(self.layers):
            mean, var = layer.moments(mean, var)
            if i < len(self.layers) - 1:
                mean, var = act(mean, var)
        return mean, var


class QuasiNetwork(nn.Module):
    """The deterministic "quasi neural network" of a :class:`BinaryMLP`: x ↦ E[f(x)] by moment propagation.

    It shares the binary net's parameters (same names, prefixed ``net.``), so ``ntk_gram(QuasiNetwork(net), X)``
    is the binary network's NTK in the sense of Zhang, Yin & Wang (arXiv 2206.05916).
    """

    def __init__(self, net: BinaryMLP):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.moments(x)[0]


@torch.no_grad()
def clip_binary_(model: nn.Module) -> nn.Module:
    """Clamp the latent weights of every :class:`BinaryLinear` in ``model`` to [−1, 1]."""
    for m in model.modules():
        if isinstance(m, BinaryLinear):
            m.clip_()
    return model


def binary_mlp(in_dim: int, widths: Sequence[int], out_dim: int, *, activation: str = "relu", bias: bool = True,
               mode: str = "sign", scale: str | float | None = "fan_in", ste: str = "clipped",
               binary_last: bool = True, eval_weights: str | None = None, seed: int | None = None) -> BinaryMLP:
    """A BinaryConnect MLP; ``binary_mlp(40, [h, h], 10, mode="stochastic")`` mirrors ``MLP(40, [h, h], 10)``.

    Parameters are drawn from the global RNG (wrap in ``overparam.models.seeded`` for a seed);
    ``seed`` seeds the stochastic-rounding draws.
    """
    return BinaryMLP(in_dim, widths, out_dim, activation=activation, bias=bias, mode=mode, scale=scale, ste=ste,
                     binary_last=binary_last, eval_weights=eval_weights, seed=seed)


__all__ = ["BinarizeSTE", "BinaryLinear", "BinaryMLP", "QuasiNetwork", "binarize", "binary_mlp", "clip_binary_",
           "relu_moments", "weight_moments"]
