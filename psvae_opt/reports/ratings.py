"""Human rating of stage-2 traversals (the guide's last step) with optuna-dashboard's forms.

A stage-2 trial has finished before anyone can watch its traversal movie, and a finished
trial cannot take a rating: optuna refuses user attributes on finished trials, and
optuna-dashboard (0.21) shows its user-attribute form as editable on RUNNING trials only.
So every finished stage-2 trial gets a *twin* in the companion study ``<stage-2 study>-rating``:
a trial left RUNNING (never told, so the form stays open and a rating can be revised) with
the same ``beta`` and ``seed``, the stage-2 trial's number and metrics as user attributes, its
traversal image and movie as artifacts, and the rating form. Ratings submitted there are the
twin's user attributes (:data:`RATING_ATTRS`); the stage-2 export joins them back by trial
number (:func:`ratings_by_trial`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import upload_artifact
from optuna_dashboard import ChoiceWidget, SliderWidget, TextInputWidget, register_user_attr_form_widgets, save_note

from psvae_opt.search import trial_queue

SINGLE_FEATURE = "rating_single_feature_dims"
SUPERVISED_CLEAN = "rating_supervised_clean"
NOTE = "rating_note"
RATING_ATTRS = (SINGLE_FEATURE, SUPERVISED_CLEAN, NOTE)
TWIN_OF = "stage2_trial"  # user attribute of a twin: the number of its stage-2 trial
COPIED_ATTRS = ("train_zu_corr", "val_pixel_mse", "val_label_mse", "mig", "run_dir")
TWIN_NOTE = (
    "Rating of **{study}** trial {number} ({params}). Watch traversal.mp4 (every dimension swept "
    "lower -> upper -> lower from a few base frames) and traversal.png, then submit the form."
)
FORM_KEY = "dashboard:form_widgets:v2"  # optuna_dashboard's study system attribute of the form


def rating_study_name(stage2_name: str) -> str:
    return f"{stage2_name}-rating"


def rating_widgets(n_unsup: int) -> list:
    """The rating form: a slider, a three-way choice and a free note."""
    return [
        SliderWidget(
            min=0,
            max=max(int(n_unsup), 1),
            step=1,
            user_attr_key=SINGLE_FEATURE,
            labels=[(float(i), str(i)) for i in range(max(int(n_unsup), 1) + 1)],
            description=f"How many of the {n_unsup} unsupervised dimensions show one single behavioural "
            "feature each (watch traversal.mp4)?",
        ),
        ChoiceWidget(
            choices=["yes", "partly", "no"],
            values=[1.0, 0.5, 0.0],
            user_attr_key=SUPERVISED_CLEAN,
            description="Does each supervised dimension move only its own label?",
        ),
        TextInputWidget(description="Note: what each dimension shows", user_attr_key=NOTE, optional=True),
    ]


def open_rating_study(storage: optuna.storages.BaseStorage, stage2: optuna.Study, n_unsup: int) -> optuna.Study:
    """Create (or load) the rating study of a stage-2 study, its form registered once."""
    study = optuna.create_study(
        storage=storage,
        study_name=rating_study_name(stage2.study_name),
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    if FORM_KEY not in trial_queue.study_system_attrs(study):
        register_user_attr_form_widgets(study, rating_widgets(n_unsup))
        study.set_user_attr("rates", stage2.study_name)
    return study


def find_twin(rating: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    """The twin of stage-2 trial ``number``, if it has one."""
    return next((t for t in rating.get_trials(deepcopy=False) if t.user_attrs.get(TWIN_OF) == number), None)


def add_twin(
    rating: optuna.Study, trial: optuna.Trial, files: Sequence[Path], store: optuna.artifacts.FileSystemArtifactStore
) -> int:
    """Open the rating twin of a stage-2 trial (once) with its traversal files; returns its number.

    The twin takes the trial's parameters with their stage-2 distributions, so the dashboard
    lists beta and seed; a twin that cannot be completed is failed, not left open.
    """
    old = find_twin(rating, trial.number)
    if old is not None:
        return old.number
    with warnings.catch_warnings():  # a twin is not optimised: ignore the sampler's remarks
        warnings.simplefilter("ignore", UserWarning)
        twin = rating.ask()
    try:
        for name, dist in trial.distributions.items():
            trial_queue.set_trial_param(rating, twin, name, trial.params[name], dist)
        twin.set_user_attr(TWIN_OF, trial.number)
        params = ", ".join(f"{k} = {v:g}" for k, v in sorted(trial.params.items()))
        save_note(twin, TWIN_NOTE.format(study=trial.study.study_name, number=trial.number, params=params))
        attrs = trial.user_attrs
        for key in COPIED_ATTRS:
            if attrs.get(key) is not None:
                twin.set_user_attr(key, attrs[key])
        for path in files:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=twin)
    except Exception:
        rating.tell(twin, state=optuna.trial.TrialState.FAIL)
        raise
    return twin.number


def ratings_by_trial(storage: optuna.storages.BaseStorage, stage2: optuna.Study) -> dict[int, dict[str, Any]]:
    """Submitted ratings by stage-2 trial number ({} when nothing was rated); ``storage`` holds both studies."""
    name = rating_study_name(stage2.study_name)
    if name not in {s.study_name for s in storage.get_all_studies()}:
        return {}
    rating = optuna.load_study(study_name=name, storage=storage)
    out: dict[int, dict[str, Any]] = {}
    for t in rating.get_trials(deepcopy=False):
        rated = {k: t.user_attrs[k] for k in RATING_ATTRS if k in t.user_attrs}
        if rated and t.user_attrs.get(TWIN_OF) is not None:
            out[int(t.user_attrs[TWIN_OF])] = rated
    return out
