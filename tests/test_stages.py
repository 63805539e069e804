"""The stage registry (psvae_opt.search.stages) and the launcher registry (psvae_opt.service.launcher):
the rest of the package consults them instead of testing a stage's number or a launcher's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from psvae_opt.commands import service as service_commands
from psvae_opt.config import SAMPLER_NAMES, Config
from psvae_opt.search import rules, space
from psvae_opt.search.stages import STAGES
from psvae_opt.service import stage_run

PACKAGE = Path(__file__).resolve().parents[1] / "psvae_opt"
# the registries themselves, where a stage's number or a launcher's name may be spelled out
REGISTRIES = {"search/stages.py", "service/launcher.py", "service/local_launcher.py", "service/slurm_launcher.py"}
STAGE_TEST = re.compile(r"\bstage\s*[!=]=\s*[12]\b|\b[12]\s*[!=]=\s*\w*stage\b")
LAUNCHER_TEST = re.compile(r"\blauncher\s*[!=]=\s*[\"']")


def _code_lines() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        if name in REGISTRIES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            out.append((name, number, line))
    return out


def test_no_module_tests_a_stage_number_or_a_launcher_name():
    found = [f"{name}:{number}: {line.strip()}" for name, number, line in _code_lines() if STAGE_TEST.search(line)]
    found += [f"{name}:{number}: {line.strip()}" for name, number, line in _code_lines() if LAUNCHER_TEST.search(line)]
    assert found == []


def test_the_greps_catch_what_they_look_for():
    assert STAGE_TEST.search("if stage == 1:") and STAGE_TEST.search("x if req.stage != 2 else y")
    assert STAGE_TEST.search("skip_collapsed=stage == 2") and not STAGE_TEST.search("stages == 12")
    assert LAUNCHER_TEST.search('if req.launcher == "slurm":') and not LAUNCHER_TEST.search("launcher = 'local'")


def test_every_stage_has_a_record_and_an_entry_in_every_per_stage_table():
    assert tuple(STAGES) == space.STAGE_NUMBERS
    for table in (
        service_commands.STAGE_OPTIONS,
        service_commands.CHOICE_PRINTERS,
        service_commands.STATUS_LINES,
        stage_run.STARTS,
        space.OBJECTIVES,
        space.DIRECTIONS,
        rules.GROUPS,
    ):
        assert sorted(table) == sorted(STAGES)
    for number, stage in STAGES.items():
        assert stage.number == number and stage.command == f"stage{number}"
        assert stage.group_by == rules.GROUPS[number] and stage.group_by[0] == stage.weight


@pytest.mark.parametrize("number", sorted(STAGES))
def test_a_stage_grid_and_configuration_fill_its_parameters(number: int):
    stage = STAGES[number]
    cfg = Config()
    grid = stage.grid(cfg, 2)
    assert grid and all(set(point) == set(stage.params) for point in grid)
    assert min(point["seed"] for point in grid) == stage.first_seed(cfg)
    fixed = {"alpha": 7.0, "n_unsup": 3}
    trial_cfg = stage.configure(cfg, grid[-1], fixed)
    assert trial_cfg.train.model_seed == grid[-1]["seed"]
    assert getattr(trial_cfg.loss, stage.weight) == grid[-1][stage.weight]


def test_each_choice_list_is_kept_once():
    """The config layer lists the samplers for its checks (it may not import search): they are the
    samplers search.space makes."""
    assert SAMPLER_NAMES == tuple(space.SAMPLERS)


def test_a_stored_recommendation_is_parsed_once_and_written_back_the_same():
    from psvae_opt.search.records import VERSION, Stage1Recommendation, Stage2Recommendation, parse_recommendation

    one = {"alpha": 100.0, "n_unsup": 2, "n_seeds": 3, "trial": 4, "run_dir": "r", "pixel_mse": 0.1,
           "label_mse": 0.2, "n_points": 4, "n_trials": 12, "version": VERSION}  # fmt: skip
    pick = {"criterion": "udr", "beta": 5.0, "trial": 7, "seed": 1, "run_dir": "s", "score": 0.5, "zu_corr": 0.1,
            "mig": None, "collapsed": False, "betas": [1.0, 5.0], "p_best": [0.2, 0.8], "means": [0.1, 0.3],
            "n_collapsed": [0, 1], "n_seeds": 3, "resolved": False, "p_value": 0.3, "alpha": 0.05,
            "frames": {"score": "validation", "zu_corr": "training", "mig": "training"}}  # fmt: skip
    two = {**pick, "guide": {**pick, "criterion": "zu_corr", "beta": 1.0, "trial": 2}, "differs": True,
           "warnings": ["w"], "n_points": 2, "n_trials": 6, "n_healthy": 2, "zu_corr_mean": 0.1,
           "zu_corr_low": 0.0, "zu_corr_high": 0.2, "fallback": None, "version": VERSION}  # fmt: skip
    first, second = parse_recommendation(one), parse_recommendation(two)
    assert isinstance(first, Stage1Recommendation) and first.stored() == one
    assert isinstance(second, Stage2Recommendation) and second.stored() == two
    assert (second.guide.beta, second.p_best_of(5.0), second.warnings) == (1.0, 0.8, ("w",))
    assert (second.p_value, second.alpha, second.frames["score"]) == (0.3, 0.05, "validation")
    # stored by an earlier psvae-opt: no version (1), no P(best), no criterion (the guide's)
    old = parse_recommendation({"beta": 5.0, "trial": 7, "seed": 1})
    assert (old.version, old.p_best, old.criterion, old.betas) == (1, None, "zu_corr", ())
    assert parse_recommendation(None) is None and parse_recommendation({}) is None


def test_no_module_reads_a_stored_recommendation_by_key_outside_its_parser():
    pattern = re.compile(r"\b(rec|pick|guide)(\[|\.get\()")
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, number, line in _code_lines()
        if pattern.search(line) and name not in ("search/records.py", "search/rules.py")
    ]
    assert found == []
