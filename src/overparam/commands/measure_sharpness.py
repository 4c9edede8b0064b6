"""`overparam measure sharpness`: how fast the loss rises around your model's weights.

    overparam measure sharpness --model mynet.py:build --weights net.pt --data train.npz --eps 1e-3 --json

Keskar et al. 2016's box sharpness 100 (max L - L) / (1 + L) over |delta_i| <= eps (|w_i| + 1) (full space, or a
random ``--subspace P``-dimensional one), solved with L-BFGS-B, next to the top Hessian eigenvalue and Jiang et
al. 2019's magnitude-aware PAC-Bayes sigma (see :mod:`overparam.measure.sharpness`).
"""

from __future__ import annotations

from overparam.commands.argtypes import float_in, positive_int, seed_int
from overparam.commands.usermodel_args import add_model_args, check_memory, load_inputs, measuring, print_json, threads

NAME = "sharpness"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="Keskar et al.'s box sharpness, the top Hessian eigenvalue and the "
                                         "PAC-Bayes sigma of your model")
    add_model_args(p)
    p.add_argument("--eps", type=float_in(0, 100, low_open=True), default=1e-3,
                   help="box half-width factor (default 1e-3)")
    p.add_argument("--subspace", type=positive_int, metavar="P",
                   help="maximize in a random P-dimensional subspace (default: the full space)")
    p.add_argument("--maxiter", type=positive_int, default=100, help="L-BFGS-B iterations (default 100)")
    p.add_argument("--no-hessian", action="store_true", help="skip the top Hessian eigenvalue")
    p.add_argument("--no-pacbayes", action="store_true", help="skip the magnitude-aware PAC-Bayes sigma")
    p.add_argument("--mode", default="eval", choices=("eval", "train"),
                   help="evaluate Dropout/BatchNorm in eval (default) or train mode")
    p.add_argument("--seed", type=seed_int, default=0, help="start point in the box, subspace and PAC-Bayes noise")


def run(args, store) -> int:
    import torch

    from overparam.measure.sharpness import sharpness
    from overparam.models import count_parameters
    from overparam.usermodel import UserModelError

    model, X, y = load_inputs(args)
    n_params = count_parameters(model)
    if args.subspace is not None and args.subspace > n_params:
        raise UserModelError(f"--subspace {args.subspace} exceeds the model's {n_params} parameters")
    if args.subspace is not None:   # the random basis and its pseudo-inverse, float64
        check_memory(3 * 8 * n_params * args.subspace, f"--subspace {args.subspace}")
    with measuring("sharpness"):
        s = sharpness(model, args.loss, (X, y), eps=args.eps, subspace=args.subspace, seed=args.seed,
                      maxiter=args.maxiter, hessian=not args.no_hessian, pacbayes=not args.no_pacbayes,
                      dtype=getattr(torch, args.dtype), batch_size=args.batch_size, mode=args.mode,
                      num_threads=threads(args, model))
    pb = s.pacbayes
    result = {
        "model": args.model, "weights": args.weights, "data": args.data, "loss_fn": args.loss, "dtype": args.dtype,
        "n_params": s.n_params, "n_examples": int(len(X)),
        "sharpness": s.sharpness, "loss": s.loss, "max_loss": s.max_loss, "eps": s.eps, "subspace": s.subspace,
        "delta_norm": s.delta_norm, "at_bound": s.at_bound, "top_eigenvalue": s.top_eigenvalue,
        "pacbayes": None if pb is None else {
            "sigma": pb.sigma, "flatness": pb.flatness, "magnitude": pb.magnitude, "deviation": pb.deviation,
            "tolerance": pb.tolerance, "on": pb.on, "eps": pb.eps, "n_samples": pb.n_samples},
        "n_iterations": s.n_iterations, "n_loss_evals": s.n_loss_evals, "converged": s.converged,
        "message": s.message, "seconds": s.seconds,
    }
    if args.json:
        print_json(result)
        return 0
    space = "full space" if s.subspace is None else f"random {s.subspace}-dimensional subspace"
    print(f"sharpness of {args.loss} loss: {s.n_params} parameters, {len(X)} examples, {args.dtype}, {space}")
    print(f"loss {s.loss:.6g}; largest loss in the box (eps {s.eps:g}) {s.max_loss:.6g}")
    print(f"Keskar sharpness 100 (max L - L) / (1 + L) = {s.sharpness:.6g}  "
          f"({s.n_iterations} L-BFGS-B iterations, {s.at_bound:.0%} of coordinates at the box"
          + ("" if s.converged else ", NOT converged") + ")")
    if s.top_eigenvalue is not None:
        print(f"top Hessian eigenvalue {s.top_eigenvalue:.6g}")
    if pb is not None:
        print(f"PAC-Bayes (magnitude-aware) sigma {pb.sigma:.4g} -> flatness 1/sigma^2 = {pb.flatness:.4g}")
    print(f"{s.seconds:.2f} s")
    return 0
