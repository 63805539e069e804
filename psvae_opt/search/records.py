"""The recommendation a stage stores, parsed once into frozen records.

A stage stores its recommendation on its study (the user attribute ``recommendation``) as a
plain dict, the form a database and a JSON file hold. :func:`parse_recommendation` is the one
reader of that dict: everything after it (the printouts, ``status``, the charts, the study note,
the model card) reads a :class:`Stage1Recommendation` or a :class:`Stage2Recommendation`, and
:meth:`stored` writes one back. ``version`` says which form is stored: :data:`VERSION` now;
a dict without one was stored by psvae-opt before the field (read the same way, its missing
keys as None: a stage-2 recommendation without ``p_best`` predates P(best)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from psvae_opt.search.rules import GUIDE  # a stored pick's criterion when it names none

VERSION = 2  # of the stored recommendation; 1: stored before it had a version


@dataclass(frozen=True)
class Stage1Recommendation:
    """Stage 1's recommendation: the knee of the front of seed means (rules.Stage1Choice, stored)."""

    alpha: float
    n_unsup: int
    n_seeds: int
    trial: int
    run_dir: str | None
    pixel_mse: float | None
    label_mse: float | None
    n_points: int
    n_trials: int
    version: int = VERSION

    def stored(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredPick:
    """One criterion's choice in stage 2 (rules.Pick, stored): ``p_best`` None when recorded
    before P(best) existed."""

    criterion: str
    beta: float
    trial: int
    seed: int | None
    run_dir: str | None
    score: float | None
    zu_corr: float | None
    mig: float | None
    collapsed: bool
    betas: tuple[float, ...]
    p_best: tuple[float, ...] | None
    means: tuple[float, ...]
    n_collapsed: tuple[int, ...]
    n_seeds: int | None
    resolved: bool
    p_value: float | None = None  # the randomisation test's (None: not recorded, or one beta or seed)
    alpha: float | None = None  # the level of that look
    frames: dict[str, str] | None = None  # which frames each figure comes from (score, zu_corr, mig)

    def p_best_of(self, beta: float) -> float | None:
        return None if self.p_best is None else self.p_best[self.betas.index(beta)]

    def stored(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(StoredPick)}
        return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v for k, v in out.items()}


@dataclass(frozen=True)
class Stage2Recommendation(StoredPick):
    """Stage 2's recommendation: the study criterion's pick, the guide's beside it (None when the
    criterion is the guide's), whether they differ, warnings, and the chosen beta's seed statistics."""

    guide: StoredPick | None = None
    differs: bool = False
    warnings: tuple[str, ...] = ()
    n_points: int | None = None
    n_trials: int | None = None
    n_healthy: int | None = None
    zu_corr_mean: float | None = None
    zu_corr_low: float | None = None
    zu_corr_high: float | None = None
    fallback: str | None = None  # why the study's criterion chose nothing and the guide's rule did
    version: int = VERSION

    def stored(self) -> dict[str, Any]:
        out = super().stored()
        out.update(
            guide=None if self.guide is None else self.guide.stored(),
            differs=self.differs,
            warnings=list(self.warnings),
            n_points=self.n_points,
            n_trials=self.n_trials,
            n_healthy=self.n_healthy,
            zu_corr_mean=self.zu_corr_mean,
            zu_corr_low=self.zu_corr_low,
            zu_corr_high=self.zu_corr_high,
            fallback=self.fallback,
            version=self.version,
        )
        return out


Recommendation = Stage1Recommendation | Stage2Recommendation


def parse_recommendation(stored: Mapping[str, Any] | None) -> Recommendation | None:
    """The record of a stored recommendation (None for none): stage 2's holds a ``beta``."""
    if not stored:
        return None
    if "beta" in stored:
        return Stage2Recommendation(
            **_pick_fields(stored),
            guide=_pick(stored.get("guide")),
            differs=bool(stored.get("differs")),
            warnings=tuple(stored.get("warnings") or ()),
            n_points=stored.get("n_points"),
            n_trials=stored.get("n_trials"),
            n_healthy=stored.get("n_healthy"),
            zu_corr_mean=stored.get("zu_corr_mean"),
            zu_corr_low=stored.get("zu_corr_low"),
            zu_corr_high=stored.get("zu_corr_high"),
            fallback=stored.get("fallback"),
            version=int(stored.get("version", 1)),
        )
    return Stage1Recommendation(
        alpha=float(stored["alpha"]),
        n_unsup=int(stored["n_unsup"]),
        n_seeds=int(stored.get("n_seeds", 1)),
        trial=int(stored["trial"]),
        run_dir=stored.get("run_dir"),
        pixel_mse=stored.get("pixel_mse"),
        label_mse=stored.get("label_mse"),
        n_points=stored.get("n_points"),
        n_trials=stored.get("n_trials"),
        version=int(stored.get("version", 1)),
    )


def _pick(stored: Mapping[str, Any] | None) -> StoredPick | None:
    return None if not stored else StoredPick(**_pick_fields(stored))


def _pick_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
    p_best = stored.get("p_best")
    return {
        "criterion": str(stored.get("criterion") or GUIDE),
        "beta": float(stored["beta"]),
        "trial": int(stored["trial"]),
        "seed": stored.get("seed"),
        "run_dir": stored.get("run_dir"),
        "score": stored.get("score"),
        "zu_corr": stored.get("zu_corr"),
        "mig": stored.get("mig"),
        "collapsed": bool(stored.get("collapsed")),
        "betas": tuple(stored.get("betas") or ()),
        "p_best": None if p_best is None else tuple(p_best),
        "means": tuple(stored.get("means") or ()),
        "n_collapsed": tuple(stored.get("n_collapsed") or ()),
        "n_seeds": stored.get("n_seeds"),
        "resolved": bool(stored.get("resolved")),
        "p_value": stored.get("p_value"),
        "alpha": stored.get("alpha"),
        "frames": dict(stored["frames"]) if stored.get("frames") else None,
    }


def stored_recommendation(user_attrs: Mapping[str, Any]) -> Recommendation | None:
    """The recommendation a study stores (its user attributes), parsed."""
    return parse_recommendation(user_attrs.get("recommendation"))
