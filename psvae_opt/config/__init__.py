"""Study files: the schema of their sections, the ``[slurm]`` section with its sbatch grammar,
and reading and writing them as TOML.

Owns: ``schema`` (the sections as frozen dataclasses that check their values), ``slurm`` (the
``[slurm]`` section and the sbatch option grammar: time limits, options psvae-opt writes itself,
``slurm.extra`` lines) and ``study_file`` (:class:`Config`, the whole file: TOML read with
``--set`` overrides, written back with every string escaped).
May import: ``errors``; the standard library only. Nothing here reads the environment.

Every name is importable from ``psvae_opt.config`` itself, as before the split.
"""

from psvae_opt.config.schema import (
    COMPILE_MODES,
    CRITERIA,
    KL_ESTIMATORS,
    MLFLOW_SCHEMES,
    PRECISIONS,
    SAMPLER_NAMES,
    SPLIT_MODES,
    DataConfig,
    LossConfig,
    ModelConfig,
    Stage1Config,
    Stage2Config,
    StudyConfig,
    TrainConfig,
    parse_split,
)
from psvae_opt.config.slurm import (
    SLURM_OWN_OPTIONS,
    SLURM_TIME_FORMATS,
    SlurmConfig,
    slurm_extra_line,
    slurm_time_seconds,
)
from psvae_opt.config.study_file import (
    Config,
    dump_config,
    load_config,
    load_config_text,
    parse_override,
    replace,
    toml_string,
)

__all__ = [
    "COMPILE_MODES",
    "KL_ESTIMATORS",
    "MLFLOW_SCHEMES",
    "PRECISIONS",
    "CRITERIA",
    "SAMPLER_NAMES",
    "SLURM_OWN_OPTIONS",
    "SLURM_TIME_FORMATS",
    "SPLIT_MODES",
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "SlurmConfig",
    "Stage1Config",
    "Stage2Config",
    "StudyConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
    "load_config_text",
    "parse_override",
    "parse_split",
    "replace",
    "slurm_extra_line",
    "slurm_time_seconds",
    "toml_string",
]
