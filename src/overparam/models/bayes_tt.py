"""Bayesian tensor-train linear layer with rank-adaptive priors (Hawkins & Zhang 2019).

The weight W (out x in) of a linear layer is held in TT-matrix format: with in = prod m_k and out = prod n_k,

    W[(j_1..j_d), (i_1..i_d)] = G_1[:, i_1, j_1, :] @ G_2[:, i_2, j_2, :] @ ... @ G_d[:, i_d, j_d, :],

core G_k of shape (r_{k-1}, m_k, n_k, r_k), r_0 = r_d = 1, multi-indices row-major (i_1 most significant),
the same convention as :class:`overparam.models.tt.TTLinear`.

**Prior (rank-adaptive).** Every internal rank index k = 1..d-1 carries a vector of variances
lambda_k in R^{r_k}, one per rank slice, and the core entries are independent Gaussians

    G_k[a, i, j, b] ~ N(0, lambda_{k-1}[a] * lambda_k[b]),     lambda_0 = lambda_d = 1,

so a small lambda_k[b] shrinks slice b of *both* cores it connects (G_k[..., b] and G_{k+1}[b, ...]);
once it is negligible the slice can be cut out and the TT rank r_k drops -- the automatic rank determination
of Hawkins & Zhang (arXiv 1905.10478, Sec. 3). The lambdas are point estimates (MAP under a hyper-prior:
``log-uniform`` p(lambda) ~ 1/lambda as in the Hawkins-Liu-Zhang code, ``gamma`` Gamma(a, b) on lambda, or
``none``: type-II maximum likelihood), set in closed form by :meth:`BayesianTTLinear.update_lambdas_`
(coordinate ascent) or learned by gradient like the other parameters.

**Posterior.** Mean-field Gaussian over every core entry, q(G_k[a,i,j,b]) = N(mu, sigma^2) with a mean and a
log-sigma per entry. A forward pass draws one sample of all cores by the reparameterization trick
G = mu + sigma * eps, eps ~ N(0, 1) (shared by the batch), and contracts it with the input by TTLinear's
contraction (:mod:`overparam.models.tt_contract`: the fastest plan for the shapes and batch). ``kl()`` is the
closed-form KL(q || p) of the Gaussians; the ELBO is E_q[log p(D | G)] - KL(q || p). The bias is a point
estimate (no prior).

Why hand-written and not Pyro: the layer stays a plain ``nn.Module`` (parameters, state_dict, our training
and measuring code work unchanged), the KL is exact rather than sampled, and Pyro is not installed (it would
pull its own torch requirement; see DESIGN.md, Dependencies).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from overparam.models.tt import TTLinear, tt_flops, tt_to_matrix
from overparam.models.tt_contract import Plan, check_contraction, tt_matmul

HYPERPRIORS = ("log-uniform", "gamma", "none")
_LOG_LAMBDA_RANGE = (-30.0, 10.0)
_LOG_SIGMA_RANGE = (-20.0, 5.0)


def _modes(name: str, modes: Sequence[int]) -> list[int]:
    out = [int(m) for m in modes]
    if not out or any(m < 1 for m in out):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(modes)}")
    return out


def full_ranks(ranks, d: int, in_modes: Sequence[int] | None = None,
               out_modes: Sequence[int] | None = None) -> list[int]:
    """Ranks as a list of d+1 entries [1, r_1, ..., r_{d-1}, 1] from an int (every internal rank),
    a list of the d-1 internal ranks, or the full list; with the modes given, each internal rank is clipped
    to its exact bound min(prod_{i<=k} m_i n_i, prod_{i>k} m_i n_i), as TTLinear does."""
    if isinstance(ranks, int):
        out = [1] + [int(ranks)] * (d - 1) + [1]
    else:
        ranks = [int(r) for r in ranks]
        if len(ranks) == d - 1:
            out = [1, *ranks, 1]
        elif len(ranks) == d + 1:
            out = ranks
        else:
            raise ValueError(f"ranks: need an int, {d - 1} internal ranks or {d + 1} ranks, got {ranks}")
    if out[0] != 1 or out[-1] != 1 or any(r < 1 for r in out):
        raise ValueError(f"ranks: boundary ranks must be 1 and internal ranks >= 1, got {out}")
    if in_modes is not None and out_modes is not None:
        sizes = [m * n for m, n in zip(in_modes, out_modes)]
        out = [1] + [min(out[k], math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, d)] + [1]
    return out


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor, prior_var: torch.Tensor) -> torch.Tensor:
    """Sum over entries of KL(N(mu, sigma^2) || N(0, prior_var)) = 1/2 [(sigma^2 + mu^2)/v - 1 - log(sigma^2/v)]."""
    var = torch.exp(2 * log_sigma)
    return 0.5 * torch.sum((var + mu ** 2) / prior_var - 1.0 - 2 * log_sigma + torch.log(prior_var))


class BayesianTTLinear(nn.Module):
    """TT-matrix linear layer with a mean-field Gaussian posterior and one prior variance per rank slice.

    Parameters: ``means[k]``, ``log_sigmas[k]`` of core k's shape; ``log_lambdas[k-1]`` (r_k,) for the internal
    rank k; ``bias`` (out,). ``forward`` samples the cores (``sampling = True``, the default, in train and eval
    mode alike: Monte-Carlo prediction averages several forward passes) or uses the posterior means
    (``sampling = False``; see :func:`set_sampling`). ``contraction`` as in :class:`~overparam.models.tt.TTLinear`.
    """

    def __init__(self, in_modes: Sequence[int], out_modes: Sequence[int], ranks, bias: bool = True,
                 hyperprior: str = "log-uniform", hyper_a: float = 1.0, hyper_b: float = 1.0,
                 init_sigma: float = 1e-2, gain: float = 2.0, contraction: str | Plan = "auto"):
        super().__init__()
        self.in_modes, self.out_modes = _modes("in_modes", in_modes), _modes("out_modes", out_modes)
        if len(self.in_modes) != len(self.out_modes):
            raise ValueError(f"in_modes {self.in_modes} and out_modes {self.out_modes} need the same length")
        if hyperprior not in HYPERPRIORS:
            raise ValueError(f"hyperprior: {hyperprior!r} is not allowed; choose one of: {', '.join(HYPERPRIORS)}")
        if hyper_a <= 0 or hyper_b <= 0 or init_sigma <= 0 or gain <= 0:
            raise ValueError("hyper_a, hyper_b, init_sigma and gain must be > 0")
        d = len(self.in_modes)
        self.ranks = full_ranks(ranks, d, self.in_modes, self.out_modes)
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self.hyperprior, self.hyper_a, self.hyper_b = hyperprior, float(hyper_a), float(hyper_b)
        self.sampling = True
        self.contraction = check_contraction(contraction)
        # Initial prior: every lambda equal to v, chosen so that W drawn from the prior has entry variance
        # gain / in (He): Var W = prod_k lambda_{k-1} lambda_k * prod r_k = v^(2(d-1)) * prod r_k.
        internal = math.prod(self.ranks[1:-1])
        target = gain / self.in_features
        v = (target / internal) ** (1.0 / (2 * (d - 1))) if d > 1 else 1.0
        self.log_lambdas = nn.ParameterList(
            [nn.Parameter(torch.full((r,), math.log(v))) for r in self.ranks[1:-1]])
        self.means, self.log_sigmas = nn.ParameterList(), nn.ParameterList()
        for k in range(d):
            shape = (self.ranks[k], self.in_modes[k], self.out_modes[k], self.ranks[k + 1])
            std = math.sqrt(target) if d == 1 else math.sqrt(v ** ((k > 0) + (k < d - 1)))
            self.means.append(nn.Parameter(torch.randn(shape) * std))
            self.log_sigmas.append(nn.Parameter(torch.full(shape, math.log(init_sigma * std))))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None

    # ----------------------------------------------------------------- prior
    def lambdas(self) -> list[torch.Tensor]:
        """[lambda_0 = (1,), lambda_1, ..., lambda_{d-1}, lambda_d = (1,)] (variances per rank slice)."""
        one = torch.ones(1, dtype=self.means[0].dtype, device=self.means[0].device)
        return [one, *[torch.exp(ll.clamp(*_LOG_LAMBDA_RANGE)) for ll in self.log_lambdas], one]

    def prior_variances(self) -> list[torch.Tensor]:
        """Prior variance of every core entry, broadcastable to core k's shape: lambda_{k-1}[a] * lambda_k[b]."""
        lam = self.lambdas()
        return [lam[k][:, None, None, None] * lam[k + 1][None, None, None, :] for k in range(len(self.means))]

    def sigmas(self) -> list[torch.Tensor]:
        return [torch.exp(ls.clamp(*_LOG_SIGMA_RANGE)) for ls in self.log_sigmas]

    def kl(self) -> torch.Tensor:
        """KL(q || p) summed over all core entries, in closed form (nats)."""
        total = self.means[0].new_zeros(())
        for mu, ls, v in zip(self.means, self.log_sigmas, self.prior_variances()):
            total = total + gaussian_kl(mu, ls.clamp(*_LOG_SIGMA_RANGE), v.expand_as(mu))
        return total

    def log_hyperprior(self) -> torch.Tensor:
        """log p(lambda) summed over the rank slices (up to a constant), lambda as the variable."""
        total = self.means[0].new_zeros(())
        if self.hyperprior == "none":
            return total
        for ll in self.log_lambdas:
            ll = ll.clamp(*_LOG_LAMBDA_RANGE)
            lam = torch.exp(ll)
            if self.hyperprior == "log-uniform":      # p(lambda) ~ 1 / lambda
                total = total - ll.sum()
            elif self.hyperprior == "gamma":          # lambda ~ Gamma(shape a, rate b)
                total = total + ((self.hyper_a - 1) * ll - self.hyper_b * lam).sum()
        return total

    @torch.no_grad()
    def update_lambdas_(self, sweeps: int = 1) -> None:
        """Set every lambda_k to its exact maximizer of E_q[log p(G | lambda)] + log p(lambda), the others fixed
        (coordinate ascent, k = 1..d-1, ``sweeps`` times) -- the M-step of type-II / MAP estimation.

        With E2 = mu^2 + sigma^2 and c = sum over the entries touching slice b of E2 / (the other lambda of the
        entry), n_b their number: lambda = c / n_b (none), c / (n_b + 2) (log-uniform), or the positive root of
        2 b lambda^2 + (n_b - 2a + 2) lambda - c = 0 (gamma)."""
        d = len(self.means)
        e2 = [mu ** 2 + s ** 2 for mu, s in zip(self.means, self.sigmas())]
        for _ in range(sweeps):
            for k in range(1, d):
                lam = self.lambdas()
                left = e2[k - 1] / lam[k - 1][:, None, None, None]        # core k-1 (0-based): slices on its last axis
                right = e2[k] / lam[k + 1][None, None, None, :]           # core k: slices on its first axis
                c = left.sum((0, 1, 2)) + right.sum((1, 2, 3))
                n_b = left.numel() // left.shape[-1] + right[0].numel()
                if self.hyperprior == "none":
                    new = c / n_b
                elif self.hyperprior == "log-uniform":
                    new = c / (n_b + 2)
                else:
                    lin = n_b - 2 * self.hyper_a + 2
                    new = (-lin + torch.sqrt(lin ** 2 + 8 * self.hyper_b * c)) / (4 * self.hyper_b)
                self.log_lambdas[k - 1].copy_(torch.log(new.clamp_min(math.exp(_LOG_LAMBDA_RANGE[0]))))

    # ----------------------------------------------------------------- posterior
    def sample_cores(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One reparameterized draw G = mu + sigma * eps of every core (differentiable in mu and log-sigma)."""
        out = []
        for mu, sigma in zip(self.means, self.sigmas()):
            eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
            out.append(mu + sigma * eps)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        cores = self.sample_cores() if self.sampling else list(self.means)
        y = tt_matmul(x, cores, self.contraction)
        return y if self.bias is None else y + self.bias

    def full_weight(self, cores: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Dense (out, in) weight of the posterior means (or of the given cores)."""
        return tt_to_matrix(list(self.means) if cores is None else cores).T

    # ----------------------------------------------------------------- ranks
    def keep_masks(self, threshold: float = 1e-3, relative: bool = True) -> list[torch.Tensor]:
        """For each internal rank k, which slices survive: lambda_k[r] >= threshold (times max_r lambda_k[r]
        if ``relative``). The relative rule is blind to the overall scale the cores settle at."""
        masks = []
        for lam in self.lambdas()[1:-1]:
            lam = lam.detach()
            cut = threshold * lam.max() if relative else threshold
            mask = lam >= cut
            if not mask.any():                       # keep at least the largest slice
                mask[int(torch.argmax(lam))] = True
            masks.append(mask)
        return masks

    def effective_ranks(self, threshold: float = 1e-3, relative: bool = True) -> list[int]:
        """[1, r_1', ..., r_{d-1}', 1]: the TT ranks left after cutting the slices ``keep_masks`` drops."""
        return [1, *[int(m.sum()) for m in self.keep_masks(threshold, relative)], 1]

    def parameter_count(self, ranks: Sequence[int] | None = None) -> int:
        """Parameters of the deployed (deterministic) layer at ``ranks`` (default: the current ones):
        sum_k r_{k-1} m_k n_k r_k plus the bias. The variational posterior stores twice the core entries."""
        r = self.ranks if ranks is None else full_ranks(list(ranks), len(self.in_modes))
        cores = sum(r[k] * m * n * r[k + 1] for k, (m, n) in enumerate(zip(self.in_modes, self.out_modes)))
        return cores + (self.out_features if self.bias is not None else 0)

    def flops(self, batch: int = 1, ranks: Sequence[int] | None = None) -> int:
        """Multiply-adds of the one-core-at-a-time contraction on a batch (as :meth:`TTLinear.flops`)."""
        r = self.ranks if ranks is None else full_ranks(list(ranks), len(self.in_modes))
        return tt_flops(self.in_modes, self.out_modes, r, batch)

    @torch.no_grad()
    def pruned(self, threshold: float = 1e-3, relative: bool = True) -> "BayesianTTLinear":
        """A copy with the dropped rank slices cut out of means, log-sigmas and lambdas."""
        masks = self.keep_masks(threshold, relative)
        new = BayesianTTLinear(self.in_modes, self.out_modes, [1, *[int(m.sum()) for m in masks], 1],
                               bias=self.bias is not None, hyperprior=self.hyperprior, hyper_a=self.hyper_a,
                               hyper_b=self.hyper_b, contraction=self.contraction)
        new.to(self.means[0].dtype)
        full = [None, *masks, None]
        for k in range(len(self.means)):
            left, right = full[k], full[k + 1]
            for src, dst in ((self.means[k], new.means[k]), (self.log_sigmas[k], new.log_sigmas[k])):
                t = src
                if left is not None:
                    t = t[left]
                if right is not None:
                    t = t[..., right]
                dst.copy_(t)
        for k, mask in enumerate(masks):
            new.log_lambdas[k].copy_(self.log_lambdas[k][mask])
        if self.bias is not None:
            new.bias.copy_(self.bias)
        new.sampling = self.sampling
        return new

    @torch.no_grad()
    def to_deterministic(self, threshold: float | None = None, relative: bool = True):
        """A :class:`overparam.models.tt.TTLinear` holding the posterior means (pruned first if ``threshold``)."""
        src = self if threshold is None else self.pruned(threshold, relative)
        layer = TTLinear(src.in_modes, src.out_modes, list(src.ranks), bias=src.bias is not None,
                         contraction=src.contraction)
        layer.to(src.means[0].dtype)
        for dst, mu in zip(layer.cores, src.means):
            if tuple(dst.shape) != tuple(mu.shape):
                raise RuntimeError(f"TTLinear core shape {tuple(dst.shape)} != {tuple(mu.shape)}")
            dst.copy_(mu)
        if src.bias is not None:
            layer.bias.copy_(src.bias)
        return layer

    def extra_repr(self) -> str:
        return (f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"hyperprior={self.hyperprior!r}, bias={self.bias is not None}")


# --------------------------------------------------------------------------- whole-model helpers
def bayes_layers(model: nn.Module) -> Iterator[BayesianTTLinear]:
    return (m for m in model.modules() if isinstance(m, BayesianTTLinear))


def set_sampling(model: nn.Module, sampling: bool) -> None:
    """Sample the cores in every BayesianTTLinear of ``model`` (True) or use the posterior means (False)."""
    for layer in bayes_layers(model):
        layer.sampling = bool(sampling)


def update_lambdas_(model: nn.Module, sweeps: int = 1) -> None:
    for layer in bayes_layers(model):
        layer.update_lambdas_(sweeps)


def model_kl(model: nn.Module) -> torch.Tensor:
    return sum((layer.kl() for layer in bayes_layers(model)), torch.zeros(()))


def model_log_hyperprior(model: nn.Module) -> torch.Tensor:
    return sum((layer.log_hyperprior() for layer in bayes_layers(model)), torch.zeros(()))


def elbo_loss(model: nn.Module, logits: torch.Tensor, y: torch.Tensor, n_train: int,
              kl_weight: float = 1.0) -> torch.Tensor:
    """Per-example negative ELBO of a minibatch (plus the lambdas' negative log hyper-prior):
    mean cross-entropy + kl_weight * (KL(q || p) - log p(lambda)) / n_train."""
    ce = nn.functional.cross_entropy(logits, y)
    return ce + kl_weight * (model_kl(model) - model_log_hyperprior(model)) / n_train


@torch.no_grad()
def mc_predict(model: nn.Module, X: torch.Tensor, samples: int = 20, batch_size: int = 4096) -> torch.Tensor:
    """Posterior predictive probabilities: the mean over ``samples`` forward passes of softmax(model(X)),
    each pass with freshly sampled cores (one draw per pass, shared by all of X)."""
    was = [layer.sampling for layer in bayes_layers(model)]
    set_sampling(model, True)
    total = None
    try:
        for _ in range(samples):
            probs = torch.cat([torch.softmax(model(X[i:i + batch_size]), 1) for i in range(0, len(X), batch_size)])
            total = probs if total is None else total + probs
    finally:
        for layer, s in zip(bayes_layers(model), was):
            layer.sampling = s
    return total / samples


@torch.no_grad()
def elbo_estimate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, samples: int = 8) -> float:
    """ELBO = E_q[sum_i log p(y_i | x_i, G)] - KL(q || p), the expectation by ``samples`` draws (nats)."""
    was = [layer.sampling for layer in bayes_layers(model)]
    set_sampling(model, True)
    try:
        loglik = 0.0
        for _ in range(samples):
            loglik += -float(nn.functional.cross_entropy(model(X), y, reduction="sum"))
    finally:
        for layer, s in zip(bayes_layers(model), was):
            layer.sampling = s
    return loglik / samples - float(model_kl(model))
