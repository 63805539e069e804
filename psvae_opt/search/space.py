"""Search spaces of the two stages (docs/design.md, "Search protocol"): grids, samplers, names,
and how a trial suggests its parameters and fills them into the study file. The record of each
stage, which names these, is :mod:`psvae_opt.search.stages`.

Stage 1 searches alpha (and n_unsup) at beta = stage1.beta, for model seeds
stage1.model_seed, stage1.model_seed + 1, ...; stage 2 fixes alpha and n_unsup and runs every
(beta, model seed) pair as its own trial. Every grid point is one trial, so seeds run in
parallel and a crash costs one model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psvae_opt.config import Config, replace

if TYPE_CHECKING:  # optuna is imported where a sampler is made: the command line starts without it
    import optuna

STAGE_NUMBERS = (1, 2)  # the stages' numbers, light (the command line's choices); their records: search.stages
OBJECTIVES = {1: ("pixel_mse", "label_mse"), 2: ("zu_corr", "pixel_mse")}
DIRECTIONS = {1: ("minimize", "minimize"), 2: ("minimize", "minimize")}


def _grid_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    from optuna.samplers import RandomSampler

    # every parameter of a grid trial is fixed when it is enqueued; the sampler never draws
    return RandomSampler(seed=seed)


def _tpe_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    from optuna.samplers import TPESampler

    return TPESampler(seed=seed, multivariate=True)


def _nsga2_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    from optuna.samplers import NSGAIISampler

    return NSGAIISampler(seed=seed, population_size=8)


SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "grid": _grid_sampler,
    "tpe": _tpe_sampler,
    "nsga2": _nsga2_sampler,
}


def study_name(config: Config, stage: int) -> str:
    return f"{config.study.name}-stage{stage}"


def stage1_seeds(config: Config, seeds: int) -> list[int]:
    """The model seeds of stage 1: ``seeds`` of them from stage1.model_seed on."""
    return [config.stage1.model_seed + s for s in range(seeds)]


def stage1_grid(config: Config, seeds: int = 1) -> list[dict[str, Any]]:
    """alpha x n_unsup (the study file's lists) x model seeds."""
    s1 = config.stage1
    return [
        {"alpha": a, "n_unsup": n, "seed": s}
        for a in s1.alphas
        for n in s1.n_unsup
        for s in stage1_seeds(config, seeds)
    ]


def stage2_grid(config: Config, seeds: int) -> list[dict[str, Any]]:
    """beta x model seeds 0..seeds-1, one trial each."""
    return [{"beta": b, "seed": s} for b in config.stage2.betas for s in range(seeds)]


def suggest_stage1(trial: optuna.Trial, config: Config, sampler: str, seed_upper: int) -> dict[str, Any]:
    """Stage 1's parameters: alpha, n_unsup and seed, fixed for grid points, drawn for adaptive search.

    Args:
        seed_upper: the largest model seed the study may hold (the range of the ``seed``
            parameter's distribution; grid points fix the value).
    """
    s1 = config.stage1
    if sampler == "grid":
        alpha = trial.suggest_categorical("alpha", list(s1.alphas))
    else:
        alpha = trial.suggest_float("alpha", s1.alpha_min, s1.alpha_max, log=True)
    n_unsup = int(trial.suggest_categorical("n_unsup", list(s1.n_unsup)))
    seed = trial.suggest_int("seed", s1.model_seed, max(seed_upper, s1.model_seed))
    return {"alpha": float(alpha), "n_unsup": n_unsup, "seed": int(seed)}


def suggest_stage2(trial: optuna.Trial, config: Config, sampler: str, seed_upper: int) -> dict[str, Any]:
    """Stage 2's parameters: beta and seed (always grid points: ``sampler`` is not read)."""
    return {
        "beta": float(trial.suggest_categorical("beta", list(config.stage2.betas))),
        "seed": int(trial.suggest_int("seed", 0, max(seed_upper, 0))),
    }


def configure_stage1(config: Config, params: dict[str, Any], fixed: dict[str, Any]) -> Config:
    """The study file with one stage-1 trial's alpha, n_unsup and seed filled in (at beta = stage1.beta)."""
    return replace(
        config,
        loss={"alpha": params["alpha"], "beta": config.stage1.beta},
        model={"n_unsup": params["n_unsup"]},
        train={"model_seed": params.get("seed", config.stage1.model_seed)},
    )


def configure_stage2(config: Config, params: dict[str, Any], fixed: dict[str, Any]) -> Config:
    """The study file with one stage-2 trial's beta and seed and the stage's ``fixed`` alpha and n_unsup."""
    return replace(
        config,
        loss={"alpha": fixed["alpha"], "beta": params["beta"]},
        model={"n_unsup": fixed["n_unsup"]},
        train={"model_seed": params["seed"]},
    )
