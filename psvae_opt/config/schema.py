"""The sections of a study file as frozen dataclasses, each checking its own values.

Every key has a default; a bad value raises :class:`~psvae_opt.errors.ConfigError` naming its
key path. The ``[slurm]`` section lives in :mod:`psvae_opt.config.slurm`, with the sbatch
grammar it is checked against; the whole file and its TOML in :mod:`psvae_opt.config.study_file`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from psvae_opt.errors import ConfigError

KL_ESTIMATORS = ("mss", "mws")
PRECISIONS = ("auto", "fp32", "bf16")
SPLIT_MODES = ("blocked", "behavenet")
SAMPLER_NAMES = ("grid", "tpe", "nsga2")
# stage 2's selection criteria (psvae_opt.search.criteria.NAMES; the config layer lists them)
CRITERIA = (
    "zu_corr", "zu_corr_val", "mutual_information", "hsic", "label_leak", "mutual_information_train",
    "hsic_train", "udr", "centrality", "zu_corr+guards", "mutual_information+guards", "hsic+guards",
    "udr+guards", "centrality+guards",
)  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")  # torch.compile's modes

# A study name becomes a folder name and an Optuna study name: letters, digits, ".", "_", "-"
# only (no path separators, "..", spaces or control characters), a letter or digit first.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def require(ok: bool, key: str, message: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


MLFLOW_SCHEMES = ("", "file", "http", "https")  # "": a local folder (or MLflow off)


@dataclass(frozen=True)
class StudyConfig:
    """Names and places shared by both search stages."""

    name: str = "psvae"
    runs_dir: str = "runs"
    # An unsupervised dimension whose posterior means vary less than this over the training
    # frames (their std; the prior's is 1) is "collapsed": it encodes next to nothing, and
    # being constant it correlates with nothing, which the zu_corr criterion would reward.
    collapse_std: float = 0.25
    # MLflow tracking of finished trials: "" = off; a local folder, file://..., or http(s)://host:port.
    mlflow_uri: str = ""

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "study.name", "must not be empty")
        require(
            bool(STUDY_NAME.fullmatch(self.name)) and ".." not in self.name,
            "study.name",
            f"{self.name!r}: use up to 100 letters, digits, '.', '_' and '-' (a letter or digit first, no '..')",
        )
        require(0 <= self.collapse_std < 1, "study.collapse_std", "must be in [0, 1) (0 = never collapsed)")
        scheme = self.mlflow_uri.partition("://")[0] if "://" in self.mlflow_uri else ""
        require(
            scheme in MLFLOW_SCHEMES,
            "study.mlflow_uri",
            f'{self.mlflow_uri!r}: give a local folder, file:///PATH or http(s)://HOST:PORT ("" = off)',
        )


@dataclass(frozen=True)
class DataConfig:
    """Which HDF5 file to train on and how to split its trials."""

    path: str | tuple[str, ...] = "demo.h5"  # one session file, or several (each may be a glob)
    split: str = "8;1;1;0"
    data_seed: int = 0
    split_mode: str = "blocked"  # or "behavenet": BehaveNet's own assignment of the same scheme

    def __post_init__(self) -> None:
        parse_split(self.split)
        require(self.data_seed >= 0, "data.data_seed", "must be >= 0")
        require(
            self.split_mode in SPLIT_MODES,
            "data.split_mode",
            f"{self.split_mode!r} is not one of {', '.join(SPLIT_MODES)}",
        )

    @property
    def split_counts(self) -> tuple[int, int, int, int]:
        return parse_split(self.split)


def parse_split(text: str) -> tuple[int, int, int, int]:
    """Parse BehaveNet's "train;val;test;gap" trials-per-block string."""
    parts = text.split(";")
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        counts = ()
    if len(counts) != 4 or min(counts) < 0 or counts[0] < 1 or counts[1] < 1:
        raise ConfigError(
            f"data.split: {text!r} is not 'train;val;test;gap' trials per block with at least "
            "one train and one validation trial (the default is '8;1;1;0')"
        )
    return counts  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelConfig:
    """The PS-VAE architecture (BehaveNet's by default)."""

    n_unsup: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    kernel_size: int = 5
    strides: tuple[int, ...] = (2, 2, 2, 2, 5)
    batch_norm: bool = False

    def __post_init__(self) -> None:
        require(self.n_unsup >= 0, "model.n_unsup", f"must be >= 0, got {self.n_unsup}")
        require(len(self.channels) > 0, "model.channels", "needs at least one layer")
        require(min(self.channels) > 0, "model.channels", "channel counts must be positive")
        require(
            len(self.strides) == len(self.channels),
            "model.strides",
            f"has {len(self.strides)} entries but model.channels has {len(self.channels)}",
        )
        require(min(self.strides) >= 1, "model.strides", "strides must be >= 1")
        require(self.kernel_size >= 1, "model.kernel_size", "must be >= 1")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the PS-VAE objective (docs/design.md, "Loss")."""

    alpha: float = 1000.0
    beta: float = 1.0
    anneal_epochs: int = 100
    kl_estimator: str = "mss"

    def __post_init__(self) -> None:
        require(self.alpha >= 0 and math.isfinite(self.alpha), "loss.alpha", "must be >= 0")
        require(self.beta >= 0 and math.isfinite(self.beta), "loss.beta", "must be >= 0")
        require(self.anneal_epochs >= 0, "loss.anneal_epochs", "must be >= 0 (0 = off)")
        require(
            self.kl_estimator in KL_ESTIMATORS,
            "loss.kl_estimator",
            f"{self.kl_estimator!r} is not one of {', '.join(KL_ESTIMATORS)}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, seeds and the device."""

    max_epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 0
    model_seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on a GPU, fp32 on the CPU
    channels_last: bool = True
    compile: bool = False  # the model and the loss compiled together (psvae_opt.training.steps)
    compile_mode: str = "default"  # "reduce-overhead": CUDA graphs too (a GPU's static shapes)
    deterministic: bool = True  # cuDNN's deterministic algorithms only
    # cuDNN autotuning (cudnn.benchmark) among those algorithms: faster convolutions; two
    # same-seed runs may then differ by rounding (README, "Performance"); false = bit-identical
    autotune: bool = True
    eval_batch_size: int = 1024
    # last.pt (weights and Adam state, 139 MB for BehaveNet's 128x128 network) at most this often,
    # and always when a stop signal arrives or the run ends; 0 = every epoch
    checkpoint_seconds: float = 60.0

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "train.max_epochs", "must be >= 1")
        require(
            self.compile_mode in COMPILE_MODES,
            "train.compile_mode",
            f"{self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}",
        )
        require(self.checkpoint_seconds >= 0, "train.checkpoint_seconds", "must be >= 0 (0 = every epoch)")
        require(self.batch_size >= 2, "train.batch_size", "must be >= 2")
        require(self.eval_batch_size >= 2, "train.eval_batch_size", "must be >= 2")
        require(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        require(self.patience >= 0, "train.patience", "must be >= 0 (0 = no early stopping)")
        require(self.model_seed >= 0, "train.model_seed", "must be >= 0")
        require(
            self.precision in PRECISIONS,
            "train.precision",
            f"{self.precision!r} is not one of {', '.join(PRECISIONS)}",
        )
        device_ok = self.device in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:[0-9]+", self.device))
        require(device_ok, "train.device", f"{self.device!r}: use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Stage1Config:
    """The alpha search (docs/design.md, "Search protocol")."""

    alphas: tuple[float, ...] = (50.0, 100.0, 500.0, 1000.0)
    n_unsup: tuple[int, ...] = (2,)
    beta: float = 1.0
    model_seed: int = 0
    seeds: int = 1  # model seeds per grid point: model_seed, model_seed + 1, ...; the knee uses their means
    sampler: str = "grid"
    n_trials: int = 16
    alpha_min: float = 10.0
    alpha_max: float = 5000.0

    def __post_init__(self) -> None:
        require(len(self.alphas) > 0, "stage1.alphas", "needs at least one value")
        require(min(self.alphas) > 0, "stage1.alphas", "values must be > 0")
        require(len(self.n_unsup) > 0, "stage1.n_unsup", "needs at least one value")
        require(min(self.n_unsup) >= 0, "stage1.n_unsup", "values must be >= 0")
        require(self.model_seed >= 0, "stage1.model_seed", "must be >= 0")
        require(self.seeds >= 1, "stage1.seeds", "must be >= 1")
        require(
            self.sampler in SAMPLER_NAMES,
            "stage1.sampler",
            f"{self.sampler!r} is not one of {', '.join(SAMPLER_NAMES)}",
        )
        require(self.n_trials >= 1, "stage1.n_trials", "must be >= 1")
        require(
            0 < self.alpha_min < self.alpha_max,
            "stage1.alpha_min",
            "must be > 0 and below stage1.alpha_max",
        )


@dataclass(frozen=True)
class Stage2Config:
    """The beta search with seed repeats (docs/design.md, "Search protocol")."""

    betas: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0)
    seeds: int = 5  # model seeds per beta (the command line's --seeds auto adds them as needed)
    initial_seeds: int = 3  # --seeds auto: seeds per beta to start with
    max_seeds: int = 10  # --seeds auto: the most seeds a beta gets
    # the criterion that chooses beta and the model (docs/design.md, "Choosing the model"):
    # UDR, the one the selection benchmark supports (README, "Selection benchmark"); it needs
    # at least 3 seeds per beta. "zu_corr" is the guide's rule, always shown beside the chosen one
    criterion: str = "udr"

    def __post_init__(self) -> None:
        require(len(self.betas) > 0, "stage2.betas", "needs at least one value")
        require(min(self.betas) >= 0, "stage2.betas", "values must be >= 0")
        require(self.seeds >= 1, "stage2.seeds", "must be >= 1")
        require(
            self.criterion in CRITERIA,
            "stage2.criterion",
            f"{self.criterion!r} is not one of {', '.join(CRITERIA)}",
        )
        require(
            2 <= self.initial_seeds <= self.max_seeds,
            "stage2.initial_seeds",
            f"need 2 <= stage2.initial_seeds ({self.initial_seeds}) <= stage2.max_seeds ({self.max_seeds})",
        )
