"""How often stage 2 declares a beta "resolved" when every beta is equal, and how often it does
when one leads, on simulated latents scored by the real criteria (issue 27, item 1).

Every simulated search has 4 betas x 10 model seeds. The true factors are two independent
uniform signals on the same frames; a trial's unsupervised latents are those factors through a
mixing matrix I + s E plus noise, where E is a random 2 x 2 matrix (half of it shared by the
trials of one seed, as one initialisation is shared across betas) and s = exp(-q / 2) * 0.5
falls with the trial's quality q = lead (beta 0 only) + seed effect + trial noise, both N(0, 1).
So a lead of d SD means beta 0's trials are d trial-noise standard deviations better on the
quality that every criterion reads: less mixing is higher UDR and centrality (siblings agree)
and lower zu_corr (latents less correlated). The criteria are the service's own
(:func:`psvae_opt.search.criteria.regroupable`: the pair similarities are ``udr_pair`` and
``mig_similarity``, the per-trial scores ``zu_corr``), the choice is the service's
(:func:`psvae_opt.search.selection_stats.choose_beta`), fixed at 3 or 5 seeds or adaptive
(``--seeds auto``: 3 to 10 seeds, a look per round). Beside it, the rule it replaced: P(best) of
the block model on the trial scores as if independent, resolved at >= 0.97 per look.

    python benchmarks/selection_calibration.py              # about 40 min on 2 busy cores
    python benchmarks/selection_calibration.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from psvae_opt.search import criteria
from psvae_opt.search import selection_stats as stats
from psvae_opt.search.selection_stats import BetaChoice, ScoredTrial

CRITERIA = ("udr", "centrality", "zu_corr")
BETAS, MAX_SEEDS, FIRST_SEEDS = 4, 10, 3
FRAMES = 200
PREVIOUS_THRESHOLD = 0.97  # the rule before issue 27: P(best) >= 0.97 at every look
MODES = ("3 seeds", "5 seeds", "auto")


def simulate_latents(
    rng: np.random.Generator, lead: float, seeds: int = MAX_SEEDS, frames: int = FRAMES
) -> list[criteria.TrialLatents]:
    """The (BETAS x seeds) trials of one search, beta-major (trial b * seeds + k is beta b, seed k)."""
    factors = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(frames, 2))
    seed_quality, seed_mix = rng.standard_normal(seeds), rng.standard_normal((seeds, 2, 2))
    trials = []
    for b in range(BETAS):
        for k in range(seeds):
            quality = (lead if b == 0 else 0.0) + seed_quality[k] + rng.standard_normal()
            mix = np.sqrt(0.5) * seed_mix[k] + np.sqrt(0.5) * rng.standard_normal((2, 2))
            z = factors @ (np.eye(2) + 0.5 * np.exp(-quality / 2) * mix) + 0.2 * rng.standard_normal((frames, 2))
            trials.append(criteria.TrialLatents(float(b), z, z, None, None, 0.01, np.ones(2, bool)))
    return trials


def previous_choice(trials: list[ScoredTrial], draws: int = 4000) -> tuple[float, bool]:
    """The rule before issue 27 (kept here to measure it): the beta of highest P(best) of the block
    model on the trial scores as if independent, resolved when that P(best) >= 0.97."""
    table = stats.paired_scores(trials)
    probs = stats.p_best(table.values, draws)
    best = int(np.lexsort((table.values.mean(1), probs))[-1])
    return table.betas[best], bool(probs[best] >= PREVIOUS_THRESHOLD) and table.values.shape[1] >= 2


@dataclass(frozen=True)
class Outcome:
    """One search under one criterion and one mode: resolved, chose beta 0, by the new rule and the previous one."""

    resolved: bool
    correct: bool
    previous_resolved: bool
    previous_correct: bool


def search_outcomes(
    scoring: criteria.Regroupable, mc_seed: int, modes: tuple[str, ...] = MODES, permutations: int = 999
) -> dict[str, Outcome]:
    """Per mode (of :data:`MODES`), what the new rule and the previous one say of one search's trials
    (``scoring``: of BETAS x n trials, beta-major; n = 3 for "3 seeds" alone, 5 for "5 seeds", else 10)."""
    n = len(scoring.per_trial if scoring.per_trial is not None else scoring.sims) // BETAS

    def trials_of(used: int) -> tuple[list[ScoredTrial], np.ndarray]:
        index = np.array([b * n + k for b in range(BETAS) for k in range(used)])
        scores = scoring.table(index.reshape(BETAS, used)).ravel()
        return [ScoredTrial(float(b), k, float(s)) for (b, k), s in zip(np.ndindex(BETAS, used), scores)], index

    def choose_at(used: int, alpha: float) -> BetaChoice:
        trials, index = trials_of(used)
        rescore: Callable = lambda idx, min_group=None: scoring.table(index[idx], min_group)  # noqa: E731
        return stats.choose_beta(trials, rescore, alpha=alpha, draws=2000, seed=mc_seed, permutations=permutations)

    def previous_at(used: int) -> tuple[float, bool]:
        return previous_choice(trials_of(used)[0])

    out = {}
    for mode, used in (("3 seeds", 3), ("5 seeds", 5)):
        if mode in modes:
            choice, (old_best, old_resolved) = choose_at(used, stats.ALPHA), previous_at(used)
            out[mode] = Outcome(choice.resolved, choice.best == 0.0, old_resolved, old_best == 0.0)
    if "auto" not in modes:
        return out
    choice, _ = stats.run_adaptive(choose_at, FIRST_SEEDS, MAX_SEEDS)
    used = FIRST_SEEDS
    old_best, old_resolved = previous_at(used)
    while not old_resolved and used < MAX_SEEDS:
        used += 1
        old_best, old_resolved = previous_at(used)
    out["auto"] = Outcome(choice.resolved, choice.best == 0.0, old_resolved, old_best == 0.0)
    return out


def run(
    lead: float, searches: int, seed: int, names: tuple[str, ...] = CRITERIA, modes: tuple[str, ...] = MODES
) -> dict[str, dict[str, list[Outcome]]]:
    """criterion -> mode -> the outcomes of ``searches`` simulated searches (fixed generator seed)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list]] = {name: {mode: [] for mode in modes} for name in names}
    n = MAX_SEEDS if "auto" in modes else 5 if "5 seeds" in modes else 3
    seeds = [k for _ in range(BETAS) for k in range(n)]
    for _ in range(searches):
        trials, mc_seed = simulate_latents(rng, lead, n), int(rng.integers(2**31))
        for name in names:
            scoring = criteria.regroupable(name, trials, seeds)
            for mode, outcome in search_outcomes(scoring, mc_seed, modes).items():
                out[name][mode].append(outcome)
    return out


def share(outcomes: list[Outcome], field: str) -> float:
    return float(np.mean([getattr(o, field) for o in outcomes]))


def wilson(outcomes: list[Outcome], field: str, z: float = 1.96) -> str:
    """The share with its 95% Wilson score interval, as text."""
    n, p = len(outcomes), share(outcomes, field)
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return f"{p:.1%} [{max(0.0, centre - half):.1%}, {centre + half:.1%}]"


def independent_table(searches: int, null_searches: int) -> None:
    """The rule on independent normal trial scores (a per-trial criterion; lead in noise SD, seed
    effect as large as the noise): :func:`psvae_opt.search.selection_stats.operating_characteristics`."""
    print(f"\nIndependent trial scores ({null_searches} searches at lead 0, {searches} at the others):")
    print("resolved / chose the best / mean trials")
    print("| lead | " + " | ".join(MODES) + " |\n|---|" + "---|" * len(MODES))
    for lead in (0.0, 0.5, 1.0, 1.5):
        cells = []
        for first, most in ((3, 3), (5, 5), (FIRST_SEEDS, MAX_SEEDS)):
            oc = stats.operating_characteristics(
                lead,
                searches if lead else null_searches,
                seed=int(10 * lead) + first,
                initial_seeds=first,
                max_seeds=most,
            )
            cells.append(f"{oc.resolved:.1%} / {oc.correct:.0%} / {oc.mean_trials:.1f}")
        print(f"| {lead:g} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-searches", type=int, default=200, help="under --seeds auto (10 seeds each)")
    parser.add_argument("--fixed-null-searches", type=int, default=800, help="at 3 and at 5 seeds")
    parser.add_argument("--power-searches", type=int, default=40)
    parser.add_argument("--independent-searches", type=int, default=400)
    parser.add_argument("--independent-null-searches", type=int, default=2000)
    parser.add_argument("--part", choices=("all", "latents", "independent"), default="all")
    parser.add_argument("--quick", action="store_true", help="20 null searches, 10 per lead")
    args = parser.parse_args(argv)
    nulls, powers = (20, 10) if args.quick else (args.null_searches, args.power_searches)
    started = time.time()
    print(f"CPU: {platform.processor() or platform.machine()}; {BETAS} betas, {FRAMES} frames per trial")
    if args.part in ("all", "independent"):
        independent_table(*((20, 20) if args.quick else (args.independent_searches, args.independent_null_searches)))
    if args.part == "independent":
        print(f"\n{time.time() - started:.0f} s")
        return 0
    fixed = 50 if args.quick else args.fixed_null_searches
    null = run(0.0, fixed, seed=27, modes=("3 seeds",))
    for name, by_mode in run(0.0, fixed, seed=28, modes=("5 seeds",)).items():
        null[name].update(by_mode)
    for name, by_mode in run(0.0, nulls, seed=29, modes=("auto",)).items():
        null[name].update(by_mode)
    print(f"\nAll betas equal ({fixed} searches at 3 and 5 seeds, {nulls} under auto): share declared resolved")
    print("[95% Wilson interval], new rule; the previous rule in parentheses")
    print("| criterion | " + " | ".join(MODES) + " |\n|---|" + "---|" * len(MODES))
    for name in CRITERIA:
        cells = [
            f"{wilson(null[name][m], 'resolved')} ({share(null[name][m], 'previous_resolved'):.1%})" for m in MODES
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nBeta 0 leads by d trial-noise SD ({powers} searches each): resolved / chose beta 0, new rule")
    print("| criterion | lead | " + " | ".join(MODES) + " |\n|---|---|" + "---|" * len(MODES))
    for lead in (0.5, 1.0, 1.5):
        result = run(lead, powers, seed=int(100 * lead))
        for name in CRITERIA:
            cells = [f"{share(result[name][m], 'resolved'):.0%} / {share(result[name][m], 'correct'):.0%}"
                     for m in MODES]  # fmt: skip
            print(f"| {name} | {lead:g} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
