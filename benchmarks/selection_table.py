"""The selection benchmark's arithmetic (issues 15 and 27): how well each choice matches the truth.

Per search (one stage 2 on one dataset): each criterion chooses a beta by P(best) over the
paired seeds (:mod:`psvae_opt.search.selection_stats`) and, within it, its highest-scoring
healthy trial; the regret is MIG(best trial) - MIG(chosen trial), MIG and SAP measured on a
held-out session that no criterion reads. Spearman's rho compares the criterion's scores with
MIG over all trials twice: on the floored scores the choice reads (collapsed or unscored trials
tie at the bottom) and on the raw scores. Baselines that read no criterion sit beside them:
the lowest beta (any seed, or each criterion's seed), the highest beta, the lowest validation
pixel MSE, a random healthy trial (the guards alone) and a random trial. Over searches: the
median rho, the mean regret with a bootstrap interval over searches, the share within 10% of
the best MIG, and issue 15's pre-registered verdict against the guide's ``zu_corr``; for all
searches and per scene.

Everything is computed from ``trials.csv`` alone, so a kept run can be scored again:

    python benchmarks/selection_table.py benchmarks/results/NAME/trials.csv --out /tmp/rescored
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from psvae_opt.search.criteria import apply_guards, rank_columns
from psvae_opt.search.rules import choose_index

REFERENCE = "zu_corr"  # the guide's criterion: every verdict is against it
RHO_PASS, WIN_SHARE, REGRET_PASS, P_PASS = 0.5, 0.8, 0.10, 0.05  # issue 15, item 3 (8 of 10 searches = 80%)
BOOTSTRAP, LEVEL = 2000, 0.95  # resamples of the searches for every mean regret's interval
# the columns of trials.csv that are not a criterion's score
TRIAL_COLUMNS = ("search", "scene", "beta", "seed", "collapsed", "val_pixel_mse", "mig", "sap", "mig_val", "service")


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two 1-d arrays over the entries where both are not NaN (-inf ranks lowest)."""
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3:
        return float("nan")
    ranks = rank_columns(np.stack([x[keep], y[keep]], 1))
    ranks = _average_ties(np.stack([x[keep], y[keep]], 1), ranks)
    a, b = ranks[:, 0] - ranks[:, 0].mean(), ranks[:, 1] - ranks[:, 1].mean()
    denom = math.sqrt(float((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _average_ties(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Tied values share their average rank (the guards tie every excluded trial at -inf)."""
    out = ranks.copy()
    for col in range(values.shape[1]):
        for v in np.unique(values[:, col]):
            tied = values[:, col] == v
            out[tied, col] = ranks[tied, col].mean()
    return out


def wilcoxon_less(d: Sequence[float]) -> float:
    """One-sided p-value of the Wilcoxon signed-rank test that the differences ``d`` tend below 0.

    Exact (all 2^n sign patterns, average ranks for ties, zeros left out) for n <= 16; the
    normal approximation beyond.
    """
    d = np.array([v for v in d if np.isfinite(v) and v != 0.0])
    n = len(d)
    if n == 0:
        return 1.0
    ranks = _average_ties(np.abs(d)[:, None], rank_columns(np.abs(d)[:, None]) + 1.0)[:, 0]
    observed = ranks[d > 0].sum()  # small when the differences are mostly negative
    if n <= 16:
        totals = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=n)])
        return float((totals <= observed + 1e-9).mean())
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return 0.5 * math.erfc(-((observed - mean) / sd) / math.sqrt(2))


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over :data:`BOOTSTRAP` resamples (NaN for none)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (BOOTSTRAP, len(v)))].mean(1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class SearchTrials:
    """One search's complete trials: (n,) arrays and each criterion's scores (higher = preferred).

    ``mig`` and ``sap`` are the ground truth the choices are judged by (the benchmark: on the
    held-out session); ``pixel_mse`` the validation pixel MSE (NaN where unknown).
    """

    name: str
    betas: np.ndarray
    seeds: np.ndarray
    mig: np.ndarray
    collapsed: np.ndarray
    scores: Mapping[str, np.ndarray]
    service_choice: int | None = None  # index of the trial the service recommends
    scene: str = ""
    sap: np.ndarray | None = None
    pixel_mse: np.ndarray | None = None
    mig_val: np.ndarray | None = None  # MIG on validation frames, for comparison with earlier runs


def floored(search: SearchTrials, scores: np.ndarray) -> np.ndarray:
    """The scores as the choice reads them: collapsed or unscored trials at -inf (all of them
    collapsed: only the unscored), as in :func:`psvae_opt.search.rules.choose_index`."""
    scores = np.asarray(scores, float)
    dead = search.collapsed | ~np.isfinite(scores)
    if dead.all():
        dead = ~np.isfinite(scores)
    return np.where(dead, -np.inf, scores)


def choose(search: SearchTrials, scores: np.ndarray) -> int:
    """The trial a criterion chooses, by the service's own rule (:func:`psvae_opt.search.rules.choose_index`)."""
    return choose_index(search.betas, search.seeds, scores, search.collapsed)[0]


@dataclass(frozen=True)
class Evaluation:
    """A criterion or baseline in one search (a baseline that picks at random: expected values)."""

    rho: float  # Spearman with MIG on the floored scores the choice reads
    regret: float  # best MIG - chosen MIG
    within_10: float  # 1 or 0; for a random pick, the expected share
    chosen: int  # -1 for a random pick
    rho_raw: float = float("nan")  # on the raw scores
    regret_sap: float = float("nan")


def evaluate(search: SearchTrials) -> dict[str, Evaluation]:
    """Every criterion of the search, ``service`` (its recommendation) and the baselines."""
    mig, n = search.mig, len(search.mig)
    sap = search.sap if search.sap is not None else np.full(n, np.nan)
    best, best_sap = float(np.nanmax(mig)), float(np.nanmax(sap)) if np.isfinite(sap).any() else np.nan

    def picked(members: np.ndarray, rho: float = float("nan"), rho_raw: float = float("nan")) -> Evaluation:
        """The expected figures of a pick at random among ``members`` (one member: that trial)."""
        return Evaluation(
            rho,
            float(np.nanmean(best - mig[members])),
            float(np.nanmean(mig[members] >= 0.9 * best)),
            int(members[0]) if len(members) == 1 else -1,
            rho_raw,
            float(np.nanmean(best_sap - sap[members])) if np.isfinite(sap[members]).any() else float("nan"),
        )

    out = {}
    for name, s in search.scores.items():
        rhos = spearman_rho(floored(search, s), mig), spearman_rho(np.asarray(s, float), mig)
        out[name] = picked(np.array([choose(search, s)]), *rhos)
    if search.service_choice is not None:
        out["service"] = picked(np.array([search.service_choice]))
    lowest = np.flatnonzero(search.betas == search.betas.min())
    out["lowest_beta"] = picked(lowest)
    for name, s in search.scores.items():  # the lowest beta, and the seed each criterion prefers there
        out[f"lowest_beta+{name}"] = picked(lowest[[int(np.argmax(floored(search, s)[lowest]))]])
    out["highest_beta"] = picked(np.flatnonzero(search.betas == search.betas.max()))
    mse = search.pixel_mse if search.pixel_mse is not None else np.full(n, np.nan)
    if np.isfinite(mse).any():
        out["lowest_pixel_mse"] = picked(np.array([int(np.nanargmin(mse))]))
    leak = -np.asarray(search.scores["label_leak"], float) if "label_leak" in search.scores else np.zeros(n)
    healthy = ~search.collapsed
    if np.isfinite(mse).all():
        healthy &= np.isfinite(apply_guards(np.zeros(n), mse, leak))
    out["guards_only"] = picked(np.flatnonzero(healthy) if healthy.any() else np.arange(n))
    out["random"] = picked(np.arange(n))
    return out


def is_baseline(name: str) -> bool:
    return name in ("random", "guards_only", "lowest_beta", "highest_beta", "lowest_pixel_mse") or name.startswith(
        "lowest_beta+"
    )


@dataclass(frozen=True)
class Verdict:
    """A criterion or baseline over the searches of a scope, and issue 15's pre-registered verdict."""

    scope: str  # "all" or a scene
    criterion: str
    median_rho: float  # floored scores
    median_rho_raw: float
    mean_regret: float
    regret_low: float
    regret_high: float
    share_within_10: float
    rho_wins: int  # searches where its (floored) rho beats the reference's
    searches: int
    regret_p: float  # Wilcoxon: its regrets below the reference's
    mean_regret_sap: float
    sap_low: float
    sap_high: float
    passes: bool
    reason: str


def _median(values: Sequence[float]) -> float:
    v = np.asarray(values, float)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")


def verdicts(evaluations: Sequence[Mapping[str, Evaluation]], scope: str = "all") -> list[Verdict]:
    """The table of a scope: one row per criterion, the reference first, then the baselines."""
    names = list(evaluations[0])
    ref = [e[REFERENCE] for e in evaluations]
    rows = []
    for name in sorted(names, key=lambda n: (n != REFERENCE, is_baseline(n), n)):
        mine = [e[name] for e in evaluations]
        wins = sum(m.rho > r.rho for m, r in zip(mine, ref) if np.isfinite(m.rho) and np.isfinite(r.rho))
        regrets, saps = [m.regret for m in mine], [m.regret_sap for m in mine]
        regret = float(np.mean(regrets))
        p = wilcoxon_less([m.regret - r.regret for m, r in zip(mine, ref)]) if name != REFERENCE else 1.0
        median_rho = _median([m.rho for m in mine])
        by_rho = median_rho >= RHO_PASS and wins >= WIN_SHARE * len(mine)
        by_regret = regret <= REGRET_PASS and p < P_PASS
        reason = (
            "reference (the guide's rule)"
            if name == REFERENCE
            else "rho" * by_rho + " and " * (by_rho and by_regret) + "regret" * by_regret or "fails"
        )
        finite_saps = [s for s in saps if np.isfinite(s)]
        rows.append(
            Verdict(
                scope,
                name,
                median_rho,
                _median([m.rho_raw for m in mine]),
                regret,
                *bootstrap_interval(regrets),
                float(np.mean([m.within_10 for m in mine])),
                wins,
                len(mine),
                p,
                float(np.mean(finite_saps)) if finite_saps else float("nan"),
                *bootstrap_interval(finite_saps),
                name != REFERENCE and (by_rho or by_regret),
                reason,
            )
        )
    return rows


def best_betas(search: SearchTrials) -> dict[str, object]:
    """Where the best model of a search lies: its beta by MIG and by SAP, and the beta grid."""
    sap = search.sap if search.sap is not None else np.full(len(search.mig), np.nan)
    return {
        "search": search.name,
        "scene": search.scene,
        "betas": " ".join(f"{b:g}" for b in np.unique(search.betas)),
        "best_beta_mig": float(search.betas[np.nanargmax(search.mig)]),
        "best_mig": float(np.nanmax(search.mig)),
        "best_beta_sap": float(search.betas[np.nanargmax(sap)]) if np.isfinite(sap).any() else float("nan"),
        "best_sap": float(np.nanmax(sap)) if np.isfinite(sap).any() else float("nan"),
    }


def score_all(searches: Sequence[SearchTrials]) -> list[Verdict]:
    """The rows of selection.csv: every criterion and baseline over all searches, then per scene."""
    evaluations = [(s.scene, evaluate(s)) for s in searches]
    rows = verdicts([e for _, e in evaluations])
    for scene in dict.fromkeys(s.scene for s in searches):
        rows += verdicts([e for sc, e in evaluations if sc == scene], scope=scene)
    return rows


def read_trials(path: Path) -> list[SearchTrials]:
    """The searches of a ``trials.csv`` written by the benchmark."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    names = [c for c in rows[0] if c not in (*TRIAL_COLUMNS, "commit")]
    out = []
    for search in dict.fromkeys(r["search"] for r in rows):
        mine = [r for r in rows if r["search"] == search]

        def column(key: str, mine: list = mine) -> np.ndarray:
            return np.array([float(r[key]) if r.get(key, "") != "" else np.nan for r in mine])

        service = [i for i, r in enumerate(mine) if r.get("service") == "1"]
        out.append(
            SearchTrials(
                name=search,
                betas=column("beta"),
                seeds=column("seed").astype(int),
                mig=column("mig"),
                collapsed=np.array([r["collapsed"] == "True" for r in mine]),
                scores={n: column(n) for n in names},
                service_choice=service[0] if service else None,
                scene=mine[0].get("scene", ""),
                sap=column("sap"),
                pixel_mse=column("val_pixel_mse"),
                mig_val=column("mig_val"),
            )
        )
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, object]], commit: str) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0], "commit"])
        w.writeheader()
        w.writerows({**r, "commit": commit} for r in rows)


def format_table(rows: Sequence[Verdict]) -> str:
    lines = [
        "| criterion | median rho (floored / raw) | wins vs zu_corr | mean regret [95% CI] | Wilcoxon p "
        "| within 10% | SAP regret [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.criterion} | {r.median_rho:.2f} / {r.median_rho_raw:.2f} | {r.rho_wins}/{r.searches} | "
            f"{r.mean_regret:.3f} [{r.regret_low:.3f}, {r.regret_high:.3f}] | {r.regret_p:.3f} | "
            f"{r.share_within_10:.0%} | {r.mean_regret_sap:.3f} [{r.sap_low:.3f}, {r.sap_high:.3f}] | "
            f"{'PASS' if r.passes else '-'} ({r.reason}) |"
        )
    return "\n".join(lines)


def format_scenes(searches: Sequence[SearchTrials]) -> str:
    """Per scene: at which beta the best model (by MIG, by SAP) lies, counted over its searches."""
    lines = ["| scene | searches | best beta by MIG | best beta by SAP |", "|---|---|---|---|"]
    for scene in dict.fromkeys(s.scene for s in searches):
        best = [best_betas(s) for s in searches if s.scene == scene]

        def counts(key: str, best: list = best) -> str:
            values = [b[key] for b in best]
            return ", ".join(f"{v:g}: {values.count(v)}" for v in sorted(set(values)))

        lines.append(f"| {scene} | {len(best)} | {counts('best_beta_mig')} | {counts('best_beta_sap')} |")
    return "\n".join(lines)


def rescore(trials: Path, out: Path, commit: str) -> list[Verdict]:
    """Score a ``trials.csv``: write ``selection.csv`` and ``scenes.csv`` into ``out``, print the tables."""
    searches = read_trials(trials)
    rows = score_all(searches)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "selection.csv", [asdict(r) for r in rows], commit)
    write_csv(out / "scenes.csv", [best_betas(s) for s in searches], commit)
    print(format_table([r for r in rows if r.scope == "all"]))
    print(format_scenes(searches))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="score a selection benchmark's trials.csv again")
    p.add_argument("trials", type=Path, help="trials.csv of a run (e.g. under benchmarks/results/)")
    p.add_argument("--out", type=Path, required=True, help="folder for selection.csv and scenes.csv")
    args = p.parse_args(argv)
    with args.trials.open() as fh:
        commit = next(csv.DictReader(fh)).get("commit", "unknown")
    print(f"trials of commit {commit}, scored by {Path(__file__).name}")
    rescore(args.trials, args.out, commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
