"""The stages of the search, one record each: what the service, the reports and the commands
consult instead of testing a stage's number.

A :class:`Stage` says what its trials search (grid, suggestion, the study file they train
with), what its study minimises, how its seeds are grouped, how it recommends, and what its
files and printouts add. :data:`STAGES` holds them by number; a new stage is a new record here
(with its grid and suggestion in :mod:`psvae_opt.search.space` and its rule in
:mod:`psvae_opt.search.rules`), its command-line options and printouts in ``commands/service.py`` and its
study start in ``service/stage_run.py``.

:data:`psvae_opt.search.space.STAGE_NUMBERS` is the light list of the numbers (the command
line's choices, read before optuna is imported), and the stages' objectives live there beside
them, for the studies of :mod:`psvae_opt.search.study`; a test checks that the numbers match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from psvae_opt.config import Config
from psvae_opt.search import recommendation, space
from psvae_opt.search.rules import GROUPS, group_summary


@dataclass(frozen=True)
class Stage:
    """One stage of the search.

    Attributes:
        number: 1 or 2, as on the command line (``stage1``, ``--stage 2``).
        weight: the loss weight the stage searches (``alpha``, ``beta``).
        params: the trial parameters a printout shows, in order.
        objectives, directions: the study's two objectives, in this order, and their directions.
        group_by: the parameters whose seeds are summarised together.
        skip_collapsed: seed statistics leave out trials whose latents collapsed.
        adaptive: the stage may draw its points with an adaptive sampler (``--sampler``).
        follows: the stage whose recommendation it starts from (its fixed parameters), or None.
        rated: people rate its traversals (rating studies, ``ratings.csv``, twin trials).
        explains_choice: its recommendation is put in words (the printout, ``recommendation.txt``,
            the dashboard's note); the other's is one line.
        marks_means: its recommended point on the Pareto chart is the chosen group's seed means
            (else the chosen trial's objective values).
        factor_panels: the search summary has a panel per unlabelled factor (``factor_r_*``).
        summary_panels: the metrics of the search summary's panels.
        grid: (study file, seeds) -> the grid points.
        suggest: (trial, study file, sampler, largest seed) -> the trial's parameters.
        configure: (study file, parameters, fixed parameters) -> the trial's study file.
        first_seed: the lowest model seed of the stage's grid.
        recommend: (study, store) -> the recommendation (stored on the study unless ``store`` is False).
    """

    number: int
    weight: str
    params: tuple[str, ...]
    objectives: tuple[str, str]
    directions: tuple[str, str]
    group_by: tuple[str, ...]
    skip_collapsed: bool
    adaptive: bool
    follows: int | None
    rated: bool
    explains_choice: bool
    marks_means: bool
    factor_panels: bool
    summary_panels: tuple[str, ...]
    grid: Callable[[Config, int], list[dict[str, Any]]]
    suggest: Callable[[optuna.Trial, Config, str, int], dict[str, Any]]
    configure: Callable[[Config, dict[str, Any], dict[str, Any]], Config]
    first_seed: Callable[[Config], int]
    recommend: Callable[..., dict[str, Any] | None]

    @property
    def command(self) -> str:
        """The command that runs it: ``stage1``, ``stage2``."""
        return f"stage{self.number}"


STAGES: dict[int, Stage] = {
    1: Stage(
        number=1,
        weight="alpha",
        params=("alpha", "n_unsup", "seed"),
        objectives=space.OBJECTIVES[1],
        directions=space.DIRECTIONS[1],
        group_by=GROUPS[1],
        skip_collapsed=False,
        adaptive=True,
        follows=None,
        rated=False,
        explains_choice=False,
        marks_means=True,
        factor_panels=False,
        summary_panels=("val_pixel_mse", "val_label_mse"),
        grid=space.stage1_grid,
        suggest=space.suggest_stage1,
        configure=space.configure_stage1,
        first_seed=lambda config: config.stage1.model_seed,
        recommend=recommendation.recommend_stage1,
    ),
    2: Stage(
        number=2,
        weight="beta",
        params=("beta", "seed"),
        objectives=space.OBJECTIVES[2],
        directions=space.DIRECTIONS[2],
        group_by=GROUPS[2],
        skip_collapsed=True,
        adaptive=False,
        follows=1,
        rated=True,
        explains_choice=True,
        marks_means=False,
        factor_panels=True,
        summary_panels=(
            "val_pixel_mse",
            "val_label_mse",
            "val_icmi",
            "val_tc",
            "val_dwkl",
            "train_zu_corr",
            "max_label_leak",
        ),  # fmt: skip
        grid=space.stage2_grid,
        suggest=space.suggest_stage2,
        configure=space.configure_stage2,
        first_seed=lambda config: 0,
        recommend=recommendation.recommend_stage2,
    ),
}


def stage_of(study: optuna.Study, stage: int | None = None) -> Stage:
    """The stage ``stage``, else the one the study records (its ``stage`` attribute; 2 when none)."""
    return STAGES[int(stage or study.user_attrs.get("stage", 2))]


def seed_summary(study: optuna.Study, stage: int | None = None) -> list[dict[str, Any]]:
    """The stage's :func:`~psvae_opt.search.rules.group_summary` of its complete trials: grouped
    by :attr:`Stage.group_by` (stage 2 over healthy seeds); ``stage`` defaults to the study's."""
    record = stage_of(study, stage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return group_summary(complete, record.group_by, skip_collapsed=record.skip_collapsed)
