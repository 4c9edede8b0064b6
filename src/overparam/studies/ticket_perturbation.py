"""Does a winning ticket need the rest of its network? Perturb or re-draw the weights outside the ticket.

The escape-dimensions challenge (Martinelli et al., EPFL, "Puzzling success of overparameterization: lottery
tickets or escape dimensions?"): if over-parameterization helped only because a big network contains a winning
ticket (Frankle & Carbin 2019), the ticket should keep working whatever happens to the weights outside it. If
instead the extra width helps by adding directions to escape bad minima, the ticket's success is a property of
the whole network, and a ticket fails when the rest of the network is perturbed.

Setup, exactly. theta0 = initialization of an in-300-100-10 MLP; M = the IMP ticket found from theta0 (prune the
remaining weights by magnitude each round, rewind to theta0); theta' = an independent fresh initialization of
the same network; sigma = the perturbation scale. Every variant starts from

    w = theta0 * M + sigma * theta' * (1 - M)      (biases from theta0, never pruned)

and trains for the same budget with the same data order:

- ``ticket``: sigma = 0 and the weights outside M frozen (the usual winning ticket, trained alone);
- ``frozen(sigma)``: the weights outside M frozen at sigma * theta', only the ticket trains;
- ``embedded(sigma)``: every weight trains (sigma = 0: the rest starts at zero but may grow);
- ``dense``: theta0 itself, every weight trains (the network the ticket came from);
- ``random ticket``: the mask M on a fresh initialization, the rest at 0 (the re-init control);
- ``scratch(width)``: dense networks of several widths from fresh initializations (no ticket at all).

After training, ``embedded`` networks are also evaluated with the weights outside M set to zero, to see whether
the ticket inside still works on its own. sigma = 1 is a full re-draw of the rest at the initialization scale.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, param
from overparam.interventions.prune import (apply_masks, dense_masks, fit_masked_ensemble, fraction_remaining,
                                           magnitude_prune, stack_masks)
from overparam.models import MLP, mlp_parameter_count, seeded
from overparam.studies.base import Check, RunContext, Study, StudyResult, register
from overparam.studies.lottery_ticket import TicketTrainingConfig, early_stop, ticket_setup
from overparam.train import Ensemble, evaluate_ensemble

MARTINELLI = "Martinelli et al. (EPFL), 'Lottery tickets or escape dimensions?'"
FC2019 = "Frankle & Carbin 2019 (ICLR), Sec. 2, Fig. 4"


@dataclass
class TicketPerturbationConfig(TicketTrainingConfig):
    rounds: int = param(6, "IMP rounds that find the ticket", min=1, max=40)
    fraction: float = param(0.25, "fraction of the remaining hidden weights pruned per IMP round", min=0.01, max=0.9)
    output_fraction: float = param(0.125, "same for the output layer", min=0.0, max=0.9)
    scales: list[float] = param([0.0, 0.1, 0.3, 1.0], "perturbation scales sigma of the weights outside the ticket",
                                min=0.0, max=10.0)
    width_factors: list[float] = param([0.1, 0.25, 0.5, 1.0], "scratch networks: hidden widths times these",
                                       min=0.001, max=10.0)
    seeds: int = param(2, "independent initializations", min=1, max=32)
    tol: float = param(0.01, "accuracy within this of the reference counts as 'matching'", min=0.0, max=0.5)
    margin: float = param(0.02, "accuracy lower by at least this counts as 'failing'", min=0.0, max=0.5)

    def validate(self) -> None:
        super().validate()
        if sorted(self.scales) != list(self.scales) or self.scales[0] != 0.0 or 1.0 not in self.scales:
            raise ConfigError("scales: must increase, start at 0 and contain 1 (the full re-draw), e.g. 0,0.1,0.3,1")
        if sorted(self.width_factors) != list(self.width_factors) or len(self.width_factors) < 2:
            raise ConfigError("width_factors: at least two, increasing, e.g. 0.1,0.25,0.5,1")


PRESETS = {
    # MNIST-1D, 40-300-100-10, ticket after 6 rounds of 25% (~18% of the weights), 2 seeds, 500 SGD steps per run.
    "quick": {},
    # LeNet-300-100 on MNIST, F&C's 20% per round to ~7% of the weights, 5 seeds, finer scales and widths.
    "paper": {"dataset": "mnist", "n_train": 55000, "n_val": 5000, "n_test": 10000, "batch_size": 60,
              "steps": 50000, "eval_every": 100, "rounds": 12, "fraction": 0.2, "output_fraction": 0.1,
              "scales": [0.0, 0.03, 0.1, 0.3, 0.6, 1.0, 2.0], "width_factors": [0.05, 0.1, 0.25, 0.5, 1.0, 2.0],
              "seeds": 5},
}


def run(cfg: TicketPerturbationConfig, ctx: RunContext) -> StudyResult:
    X, y, n_in, n_out, build, tcfg, evals, inits, names = ticket_setup(cfg)
    S = cfg.seeds
    data_seeds = [cfg.seed * 7919 + s for s in range(S)]
    layer_fractions = {names[-1]: cfg.output_fraction}

    # 1. the ticket: IMP with rewinding to theta0, all seeds in one ensemble per round
    masks = [dense_masks(m) for m in inits]
    dense_acc = None
    for level in range(cfg.rounds + 1):
        ens = Ensemble([copy.deepcopy(m) for m in inits])
        tr = fit_masked_ensemble(ens, stack_masks(masks), X, y, tcfg, evals, n_out, cfg.eval_every, data_seeds,
                                 progress=ctx.progress,
                                 desc=f"IMP round {level}/{cfg.rounds} ({100 * fraction_remaining(masks[0]):.1f}%)")
        if level == 0:
            dense_acc = early_stop(tr.step, tr.loss["val"], tr.error["test"])[1]
        if level < cfg.rounds:
            masks = [magnitude_prune({n: ens.params[n][s].detach() for n in names}, masks[s], cfg.fraction, "global",
                                     layer_fractions) for s in range(S)]
    ticket_acc_imp = early_stop(tr.step, tr.loss["val"], tr.error["test"])[1]
    remaining = fraction_remaining(masks[0])
    ticket_weights = sum(int(m.sum()) for m in masks[0].values())
    ticket_params = ticket_weights + sum(p.numel() for n, p in inits[0].named_parameters() if n not in masks[0])

    # 2. the perturbation variants, all seeds in one ensemble
    jobs = []   # (variant, scale, seed, model, trainable mask)
    for s in range(S):
        fresh = seeded(build, 10**6 + cfg.seed * 1000 + s)
        full = dense_masks(inits[s])
        for sigma in cfg.scales:
            model = _embed(inits[s], fresh, masks[s], sigma)
            jobs.append(("frozen", sigma, s, model, masks[s]))     # sigma = 0: the ticket alone
            jobs.append(("embedded", sigma, s, copy.deepcopy(model), full))
        jobs.append(("random_ticket", 0.0, s, apply_masks(copy.deepcopy(fresh), masks[s]), masks[s]))
    ens = Ensemble([j[3] for j in jobs])
    held = {n: p.detach().clone() for n, p in ens.params.items()}
    tr = fit_masked_ensemble(ens, stack_masks([j[4] for j in jobs]), X, y, tcfg, evals, n_out, cfg.eval_every,
                             [data_seeds[j[2]] for j in jobs], held=held, progress=ctx.progress,
                             desc=f"ticket variants x{len(jobs)}")
    _, acc_r = early_stop(tr.step, tr.loss["val"], tr.error["test"])
    # the trained embedded networks with the weights outside the ticket zeroed
    stacked_ticket = stack_masks([masks[j[2]] for j in jobs])
    with torch.no_grad():
        for n, m in stacked_ticket.items():
            ens.params[n].mul_(m)
    Xt, yt = evals["test"]
    inner = 1.0 - evaluate_ensemble(ens, Xt.to(torch.float32), yt, "cross_entropy", n_out)[1]
    K = len(cfg.scales)
    frozen = np.array([[acc_r[r] for r, j in enumerate(jobs) if j[0] == "frozen" and j[2] == s] for s in range(S)])
    embedded = np.array([[acc_r[r] for r, j in enumerate(jobs) if j[0] == "embedded" and j[2] == s] for s in range(S)])
    embedded_inner = np.array([[inner[r] for r, j in enumerate(jobs) if j[0] == "embedded" and j[2] == s]
                               for s in range(S)])
    random_ticket = np.array([acc_r[r] for r, j in enumerate(jobs) if j[0] == "random_ticket"])
    assert frozen.shape == (S, K)

    # 3. dense networks from scratch at several widths (no ticket)
    scratch, scratch_params = [], []
    for f in cfg.width_factors:
        hidden = [max(1, int(round(f * w))) for w in cfg.widths]
        models = [seeded(lambda: MLP(n_in, hidden, n_out), 2 * 10**6 + cfg.seed * 1000 + s) for s in range(S)]
        ens = Ensemble(models)
        tr = fit_masked_ensemble(ens, {}, X, y, tcfg, evals, n_out, cfg.eval_every, data_seeds,
                                 progress=ctx.progress, desc=f"scratch {'-'.join(map(str, hidden))}")
        scratch.append(early_stop(tr.step, tr.loss["val"], tr.error["test"])[1])
        scratch_params.append(mlp_parameter_count(n_in, hidden, n_out))
    return summarize(cfg, remaining, ticket_params, dense_acc, ticket_acc_imp, frozen, embedded, embedded_inner,
                     random_ticket, np.array(scratch).T, np.array(scratch_params))


def _embed(init, fresh, mask, sigma: float):
    """theta0 * M + sigma * theta' * (1 - M) on the masked tensors; everything else from theta0."""
    model = copy.deepcopy(init)
    fp = dict(fresh.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in mask:
                p.copy_(torch.where(mask[n], p, sigma * fp[n]))
    return model


def summarize(cfg, remaining, ticket_params, dense, ticket_imp, frozen, embedded, embedded_inner, random_ticket,
              scratch, scratch_params) -> StudyResult:
    """Accuracies at early stopping; frozen/embedded/embedded_inner: (seeds, scales); scratch: (seeds, widths).

    ticket_params: the ticket's kept weights plus the biases (which are never pruned), comparable to
    scratch_params."""
    scales = np.asarray(cfg.scales)
    d, rt = float(np.mean(dense)), float(np.mean(random_ticket))
    fz, em, emi = frozen.mean(0), embedded.mean(0), embedded_inner.mean(0)
    sc = scratch.mean(0)
    ticket = fz[0]
    j = int(np.flatnonzero(scales == 1.0)[0])     # the full re-draw at the initialization scale
    checks = [
        Check("the ticket wins on its own",
              f"ticket alone >= dense - {100 * cfg.tol:g} points and >= random-init ticket + {100 * cfg.margin:g}",
              f"ticket {100 * ticket:.1f}%, dense {100 * d:.1f}%, random-init ticket {100 * rt:.1f}% "
              f"({100 * remaining:.1f}% of the weights)",
              ticket >= d - cfg.tol and ticket >= rt + cfg.margin, FC2019),
        Check("escape dimensions: the ticket fails when the frozen rest is re-drawn",
              f"frozen rest re-drawn (sigma=1): accuracy <= ticket alone - {100 * cfg.margin:g} points",
              f"{100 * fz[j]:.1f}% vs ticket alone {100 * ticket:.1f}% ({100 * (fz[j] - ticket):+.1f})",
              fz[j] <= ticket - cfg.margin, MARTINELLI),
        Check("lottery view: the ticket keeps its accuracy inside a re-drawn, trainable network",
              f"embedded in a re-drawn rest (sigma=1), all weights trained: accuracy >= ticket alone - "
              f"{100 * cfg.tol:g}",
              f"{100 * em[j]:.1f}% vs ticket alone {100 * ticket:.1f}%",
              em[j] >= ticket - cfg.tol, FC2019 + " (a ticket is a sufficient subnetwork)"),
        Check("width helps networks with no ticket planted",
              f"scratch accuracy at the largest width >= the smallest width's + {100 * cfg.margin:g} points",
              f"{100 * sc[-1]:.1f}% at {scratch_params[-1]} params vs {100 * sc[0]:.1f}% at {scratch_params[0]}",
              sc[-1] >= sc[0] + cfg.margin, MARTINELLI + " (extra width adds escape directions)"),
    ]
    match = [int(p) for p, a in zip(scratch_params, sc) if a >= ticket - cfg.tol]
    depends = bool(fz[j] <= ticket - cfg.margin or em[j] < ticket - cfg.tol)
    metrics = {"remaining": float(remaining), "ticket_params": int(ticket_params), "dense_accuracy": d,
               "ticket_accuracy_in_imp": float(np.mean(ticket_imp)), "random_ticket_accuracy": rt,
               "scales": scales.tolist(), "frozen_accuracy": fz.tolist(), "embedded_accuracy": em.tolist(),
               "embedded_ticket_only_accuracy": emi.tolist(), "scratch_params": scratch_params.tolist(),
               "scratch_accuracy": sc.tolist(), "ticket_depends_on_rest": bool(depends),
               "scratch_params_matching_ticket": match[0] if match else None}
    arrays = {"scales": scales, "frozen": frozen, "embedded": embedded, "embedded_inner": embedded_inner,
              "random_ticket": random_ticket, "dense": np.asarray(dense), "scratch": scratch,
              "scratch_params": scratch_params}
    notes = (f"Ticket ({100 * remaining:.1f}% of the weights) alone {100 * ticket:.1f}% vs dense {100 * d:.1f}% and "
             f"random-init ticket {100 * rt:.1f}%. With the rest frozen at sigma=" + ", ".join(
                 f"{s:g}: {100 * a:.1f}%" for s, a in zip(scales, fz))
             + "; all weights trained: " + ", ".join(f"{s:g}: {100 * a:.1f}%" for s, a in zip(scales, em))
             + (f". The smallest dense net from scratch (of the widths tried) within {100 * cfg.tol:g} point(s) of the "
                f"ticket has {match[0]} parameters (the ticket: {int(ticket_params)}). " if match else
                f". No dense net from scratch (up to {int(scratch_params[-1])} parameters) comes within "
                f"{100 * cfg.tol:g} point(s) of the ticket ({int(ticket_params)} parameters). ")
             + ("The ticket's success depends on the rest of the network."
                       if depends else "The ticket's success does not depend on the rest of the network here."))
    return StudyResult(metrics, checks, arrays,
                       {"ticket_perturbation": _figure(cfg, scales, fz, em, emi, ticket, d, rt, sc, scratch_params,
                                                       ticket_params)}, notes=notes)


def _figure(cfg, scales, fz, em, emi, ticket, d, rt, sc, scratch_params, ticket_params):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    x = np.where(scales > 0, scales, scales[1] / 3)   # sigma = 0 drawn left of the smallest positive scale
    a1.plot(x, 100 * fz, "o-", label="ticket trains, rest frozen at sigma*theta'")
    a1.plot(x, 100 * em, "s-", label="all weights train")
    a1.plot(x, 100 * emi, "^--", label="all trained, then rest zeroed")
    for v, ls, lab in ((ticket, ":", "ticket alone"), (d, "--", "dense (theta0)"), (rt, "-.", "random-init ticket")):
        a1.axhline(100 * v, ls=ls, color="0.4", lw=1)
        a1.annotate(lab, (x[0], 100 * v), fontsize=7, va="bottom")
    a1.set_xscale("log")
    a1.xaxis.set_minor_formatter(NullFormatter())
    a1.set_xlabel("scale sigma of the weights outside the ticket (leftmost point: 0)")
    a1.set_ylabel("test accuracy at early stop (%)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.plot(scratch_params, 100 * sc, "o-", label="dense from scratch")
    a2.plot([ticket_params], [100 * ticket], "*", ms=14, label="ticket (kept weights + biases)")
    a2.axhline(100 * d, ls="--", color="0.4", lw=1)
    a2.set_xscale("log")
    a2.xaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("parameters")
    a2.set_ylabel("test accuracy (%)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle(f"Ticket perturbation ({cfg.dataset}, MLP {'-'.join(map(str, cfg.widths))})", fontsize=10)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="ticket-perturbation",
    description="Keep a winning ticket, perturb or re-draw the rest of the network: does the ticket still win?",
    paper="Martinelli et al. (escape dimensions); Frankle & Carbin 2019",
    config=TicketPerturbationConfig, presets=PRESETS, run=run))
