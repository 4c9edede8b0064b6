"""`overparam measure hessian`: the Hessian spectrum of your own model on your own data.

    overparam measure hessian --model mynet.py:build --weights net.pt --data train.npz --k 10 --density --json

The model comes from a factory (``pkg.module:factory`` or ``file.py:factory``); the weights load with
``torch.load(weights_only=True)``, so a checkpoint can never run code. Every problem is one line, exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from overparam.commands.argtypes import positive_int, seed_int
from overparam.commands.usermodel_args import add_model_args, check_memory, load_inputs, measuring

NAME = "hessian"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="Hessian eigenvalues (and spectral density, trace) of your model's loss")
    add_model_args(p)
    p.add_argument("--k", type=positive_int, default=10, help="number of eigenvalues (default 10)")
    p.add_argument("--which", default="largest", choices=("largest", "smallest", "both"))
    p.add_argument("--method", default="auto", choices=("auto", "lanczos", "eigsh", "dense"),
                   help="auto: lanczos (stops as soon as the eigenvalues are accurate), dense for tiny models")
    p.add_argument("--curvature", default="hessian", choices=("hessian", "ggn", "residual"),
                   help="the Hessian, its Gauss-Newton part G, or H - G")
    p.add_argument("--density", action="store_true", help="also the spectral density by SLQ (Ghorbani et al. 2019)")
    p.add_argument("--trace", action="store_true", help="also the trace (Hutch++, 99 products)")
    p.add_argument("--seed", type=seed_int, default=0)


def run(args, store) -> int:
    from overparam.measure.hessian import CurvatureError, curvature_operator, hessian_density, hessian_eigs, hessian_trace
    from overparam.usermodel import UserModelError

    model, X, y = load_inputs(args)
    dtype = getattr(torch, args.dtype)
    try:
        op = curvature_operator(model, args.loss, (X, y), curvature=args.curvature, dtype=dtype,
                                batch_size=args.batch_size)
    except (CurvatureError, ValueError) as exc:
        raise UserModelError(str(exc)) from None
    op.num_threads = args.threads or (1 if op.dim < 20_000 else None)
    k = min(args.k, op.dim)
    itemsize = 8 if args.dtype == "float64" else 4
    if args.method == "dense" or k >= op.dim - 1:  # the P x P matrix, its eigenvectors and LAPACK's work space
        check_memory(3 * 8 * op.dim ** 2, f"--method dense on {op.dim} parameters")
    else:                                          # Krylov vectors: about 2k + 20 of them
        check_memory(8 * (2 * k + 20) * op.dim * (2 if args.which == "both" else 1), f"--k {args.k}")
    check_memory(itemsize * 100 * op.dim, f"{op.dim} parameters")
    with measuring("the Hessian"):
        loss, grad = op.loss_and_grad()
        eigs = hessian_eigs(op, k=k, which=args.which, method=args.method, seed=args.seed)
        dens = hessian_density(op, seed=args.seed) if args.density else None
        trace = hessian_trace(op, seed=args.seed) if args.trace else None
    result = {
        "model": args.model, "weights": args.weights, "data": args.data, "loss_fn": args.loss,
        "curvature": args.curvature, "dtype": args.dtype, "n_params": op.dim, "n_examples": int(len(X)),
        "loss": loss, "grad_norm": float(grad.norm()),
        "which": args.which, "method": eigs.method, "eigenvalues": eigs.values.tolist(),
        "residuals": eigs.residuals.tolist(), "converged": eigs.converged,
        "n_matvecs": eigs.n_matvecs, "seconds": eigs.seconds,
    }
    if dens is not None:
        result["density"] = {"n_vectors": dens.n_vectors, "n_steps": dens.n_steps, "sigma": dens.sigma,
                             "fraction_negative": dens.mass_below(-1e-8 * float(np.abs(dens.nodes).max())),
                             "grid": dens.grid.tolist(), "density": dens.density.tolist(),
                             "nodes": dens.nodes.tolist(), "weights": dens.weights.tolist(),
                             "n_matvecs": dens.n_matvecs, "seconds": dens.seconds}
    if trace is not None:
        result["trace"] = {"estimate": trace.estimate, "method": trace.method, "n_matvecs": trace.n_matvecs}
    if args.json:
        from overparam.store import to_jsonable

        print(json.dumps(to_jsonable(result), indent=2))
        return 0
    print(f"{args.curvature} of {args.loss} loss: {op.dim} parameters, {len(X)} examples, {args.dtype}")
    print(f"loss {loss:.6g}, gradient norm {float(grad.norm()):.3g}")
    label = {"largest": "largest", "smallest": "smallest", "both": "extreme"}[args.which]
    print(f"{label} {len(eigs.values)} eigenvalues ({eigs.method}, {eigs.n_matvecs} matvecs, {eigs.seconds:.2f} s"
          + ("" if eigs.converged else ", NOT converged") + "):")
    for i, (v, r) in enumerate(zip(eigs.values, eigs.residuals), 1):
        print(f"  {i:3d}  {v: .10g}   (residual {r:.1e})")
    if dens is not None:
        top = dens.nodes.max()
        print(f"density (SLQ {dens.n_vectors}x{dens.n_steps}, {dens.n_matvecs} matvecs): eigenvalues in "
              f"[{dens.nodes.min():.4g}, {top:.4g}], fraction negative ~ {result['density']['fraction_negative']:.3f}, "
              f"fraction above 1% of the top ~ {dens.mass_above(0.01 * top):.4f}")
    if trace is not None:
        print(f"trace ~ {trace.estimate:.6g} (Hutch++, {trace.n_matvecs} matvecs)")
    return 0
