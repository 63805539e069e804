"""Study files: TOML parsed into frozen dataclasses.

A study file has one table per section (``[data]``, ``[model]``, ``[loss]``, ``[train]``,
``[study]``, ``[stage1]``, ``[stage2]``, ``[slurm]``); every key has a default, unknown keys and wrong
types are refused with the key path named. ``--set section.key=value`` overrides are applied
to the parsed tables before validation, so they obey the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psvae_opt.errors import ConfigError

KL_ESTIMATORS = ("mss", "mws")
PRECISIONS = ("auto", "fp32", "bf16")
SPLIT_MODES = ("blocked", "behavenet")
SAMPLER_NAMES = ("grid", "tpe", "nsga2")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")  # torch.compile's modes


# A study name becomes a folder name and an Optuna study name: letters, digits, ".", "_", "-"
# only (no path separators, "..", spaces or control characters), a letter or digit first.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _require(ok: bool, key: str, message: str) -> None:
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
        _require(bool(self.name.strip()), "study.name", "must not be empty")
        _require(
            bool(STUDY_NAME.fullmatch(self.name)) and ".." not in self.name,
            "study.name",
            f"{self.name!r}: use up to 100 letters, digits, '.', '_' and '-' (a letter or digit first, no '..')",
        )
        _require(0 <= self.collapse_std < 1, "study.collapse_std", "must be in [0, 1) (0 = never collapsed)")
        scheme = self.mlflow_uri.partition("://")[0] if "://" in self.mlflow_uri else ""
        _require(
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
        _require(self.data_seed >= 0, "data.data_seed", "must be >= 0")
        _require(
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
        _require(self.n_unsup >= 0, "model.n_unsup", f"must be >= 0, got {self.n_unsup}")
        _require(len(self.channels) > 0, "model.channels", "needs at least one layer")
        _require(min(self.channels) > 0, "model.channels", "channel counts must be positive")
        _require(
            len(self.strides) == len(self.channels),
            "model.strides",
            f"has {len(self.strides)} entries but model.channels has {len(self.channels)}",
        )
        _require(min(self.strides) >= 1, "model.strides", "strides must be >= 1")
        _require(self.kernel_size >= 1, "model.kernel_size", "must be >= 1")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the PS-VAE objective (docs/design.md, "Loss")."""

    alpha: float = 1000.0
    beta: float = 1.0
    anneal_epochs: int = 100
    kl_estimator: str = "mss"

    def __post_init__(self) -> None:
        _require(self.alpha >= 0 and math.isfinite(self.alpha), "loss.alpha", "must be >= 0")
        _require(self.beta >= 0 and math.isfinite(self.beta), "loss.beta", "must be >= 0")
        _require(self.anneal_epochs >= 0, "loss.anneal_epochs", "must be >= 0 (0 = off)")
        _require(
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
    compile: bool = False  # the model and the loss compiled together (psvae_opt.training.step)
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
        _require(self.max_epochs >= 1, "train.max_epochs", "must be >= 1")
        _require(
            self.compile_mode in COMPILE_MODES,
            "train.compile_mode",
            f"{self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}",
        )
        _require(self.checkpoint_seconds >= 0, "train.checkpoint_seconds", "must be >= 0 (0 = every epoch)")
        _require(self.batch_size >= 2, "train.batch_size", "must be >= 2")
        _require(self.eval_batch_size >= 2, "train.eval_batch_size", "must be >= 2")
        _require(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _require(self.patience >= 0, "train.patience", "must be >= 0 (0 = no early stopping)")
        _require(self.model_seed >= 0, "train.model_seed", "must be >= 0")
        _require(
            self.precision in PRECISIONS,
            "train.precision",
            f"{self.precision!r} is not one of {', '.join(PRECISIONS)}",
        )
        device_ok = self.device in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:[0-9]+", self.device))
        _require(device_ok, "train.device", f"{self.device!r}: use auto, cpu, cuda or cuda:N")


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
        _require(len(self.alphas) > 0, "stage1.alphas", "needs at least one value")
        _require(min(self.alphas) > 0, "stage1.alphas", "values must be > 0")
        _require(len(self.n_unsup) > 0, "stage1.n_unsup", "needs at least one value")
        _require(min(self.n_unsup) >= 0, "stage1.n_unsup", "values must be >= 0")
        _require(self.model_seed >= 0, "stage1.model_seed", "must be >= 0")
        _require(self.seeds >= 1, "stage1.seeds", "must be >= 1")
        _require(
            self.sampler in SAMPLER_NAMES,
            "stage1.sampler",
            f"{self.sampler!r} is not one of {', '.join(SAMPLER_NAMES)}",
        )
        _require(self.n_trials >= 1, "stage1.n_trials", "must be >= 1")
        _require(
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

    def __post_init__(self) -> None:
        _require(len(self.betas) > 0, "stage2.betas", "needs at least one value")
        _require(min(self.betas) >= 0, "stage2.betas", "values must be >= 0")
        _require(self.seeds >= 1, "stage2.seeds", "must be >= 1")
        _require(
            2 <= self.initial_seeds <= self.max_seeds,
            "stage2.initial_seeds",
            f"need 2 <= stage2.initial_seeds ({self.initial_seeds}) <= stage2.max_seeds ({self.max_seeds})",
        )


GPU_KEYS = "slurm.gpus_per_task (with slurm.gpu_type = 'h100' for a typed GRES, slurm.gpu_option)"
SLURM_TIME_FORMATS = "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]] or UNLIMITED"
# sbatch options psvae-opt writes itself (value: the key that sets it, "" = not settable)
SLURM_OWN_OPTIONS = {
    "--array": "",
    "--output": "",
    "--error": "",
    "--signal": "slurm.signal_seconds",
    "--export": "",
    "--job-name": "",
    "--partition": "slurm.partition",
    "--time": "slurm.time",
    "--gres": GPU_KEYS,
    "--gpus-per-task": GPU_KEYS,
    "--cpus-per-task": "slurm.cpus_per_task",
    "--mem": "slurm.mem",
    "--gpus": GPU_KEYS,
    "--ntasks": "",
    "--nodes": "",
}
_SLURM_SHORT = {"-a": "--array", "-o": "--output", "-e": "--error", "-J": "--job-name", "-p": "--partition"}
_SLURM_SHORT |= {"-t": "--time", "-c": "--cpus-per-task", "-G": "--gpus", "-n": "--ntasks", "-N": "--nodes"}


def slurm_time_seconds(text: str) -> int | None:
    """Seconds of a SLURM time limit (sbatch --time), None for UNLIMITED/INFINITE; raises ValueError."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = rest.split(":")
    if not (days.isdigit() or "-" not in text) or not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise ValueError(text)
    if days:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        h, m, s = (list(map(int, parts)) + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + s
    if len(parts) == 3:
        h, m, s = map(int, parts)
    else:  # MINUTES or MINUTES:SECONDS
        h, m, s = 0, int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    return (h * 60 + m) * 60 + s


def slurm_extra_line(item: str) -> str:
    """An entry of slurm.extra as the #SBATCH line it becomes ("--qos=high" or "#SBATCH --qos=high")."""
    option = item.strip().removeprefix("#SBATCH").strip()
    name = option.split("=", 1)[0].split()[0] if option else ""
    name = _SLURM_SHORT.get(name[:2], name) if len(name) > 1 and name[1] != "-" else name
    if "\n" in item or "\r" in item or not name.startswith("-"):
        raise ConfigError(
            f'slurm.extra: {item!r} is not an sbatch option; give entries like "--qos=high" or "#SBATCH -A lab"'
        )
    if name in SLURM_OWN_OPTIONS:
        key = SLURM_OWN_OPTIONS[name]
        fix = f"set {key} instead" if key else "psvae-opt writes it itself"
        raise ConfigError(f"slurm.extra: {item!r}: {fix}")
    return f"#SBATCH {option}"


@dataclass(frozen=True)
class SlurmConfig:
    """How workers run as a SLURM job array (``--launcher slurm``); "" or 0 = the cluster's default."""

    partition: str = ""
    time: str | int = ""  # the time limit of each array task, in sbatch --time formats (a number: minutes)
    gpus_per_task: int = 1  # GPUs of each array task (0 = CPU-only tasks)
    workers_per_task: int = 1  # worker processes of each task, spread evenly over its GPUs
    cpus_per_task: int = 0  # 0 = 2 per worker (a core and autograd's backward thread)
    mem: str = ""  # memory of each task, e.g. "16G"; "" = sized from the dataset (psvae_opt.service.slurm)
    signal_seconds: int = 120  # USR1 this long before the time limit (or at preemption); 0 = none
    extra: tuple[str, ...] = ()  # further sbatch options, e.g. ["--qos=high", "#SBATCH --account=lab"]
    gpu_type: str = ""  # a typed GRES, e.g. "h100": --gres=gpu:h100:N ("" = any GPU)
    gpu_option: str = "gres"  # how GPUs are asked for: --gres=gpu:... or --gpus-per-task=...

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", str(self.time))  # time = 90 in a study file: "90" minutes
        _require(
            re.fullmatch(r"([\w.-]+(,[\w.-]+)*)?", self.partition) is not None,
            "slurm.partition",
            f"{self.partition!r} is not a partition name (or comma-separated names)",
        )
        try:
            limit = slurm_time_seconds(self.time) if self.time else None
        except ValueError:
            raise ConfigError(f"slurm.time: {self.time!r} is not {SLURM_TIME_FORMATS}") from None
        _require(self.gpus_per_task >= 0, "slurm.gpus_per_task", "must be >= 0 (0 = CPU-only tasks)")
        _require(self.workers_per_task >= 1, "slurm.workers_per_task", "must be >= 1")
        _require(
            re.fullmatch(r"[\w.-]*", self.gpu_type) is not None,
            "slurm.gpu_type",
            f"{self.gpu_type!r} is not a GPU type such as h100 or a100_80gb",
        )
        _require(
            self.gpu_option in ("gres", "gpus-per-task"),
            "slurm.gpu_option",
            f"{self.gpu_option!r} is not gres or gpus-per-task",
        )
        _require(
            self.gpus_per_task == 0 or self.workers_per_task % self.gpus_per_task == 0,
            "slurm.workers_per_task",
            f"{self.workers_per_task} is not a multiple of slurm.gpus_per_task ({self.gpus_per_task}), "
            "so the GPUs would not get equal shares",
        )
        _require(self.cpus_per_task >= 0, "slurm.cpus_per_task", "must be >= 0 (0 = 2 per worker)")
        _require(
            re.fullmatch(r"(\d+[KMGTkmgt]?)?", self.mem) is not None,
            "slurm.mem",
            f"{self.mem!r} is not a memory size such as 16G or 16000M",
        )
        _require(0 <= self.signal_seconds <= 65535, "slurm.signal_seconds", "must be in 0..65535 (0 = no signal)")
        _require(
            not limit or self.signal_seconds < limit,
            "slurm.signal_seconds",
            f"{self.signal_seconds} s is not below the time limit slurm.time = {self.time!r}",
        )
        for item in self.extra:
            slurm_extra_line(item)


@dataclass(frozen=True)
class Config:
    """A whole study file."""

    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def _convert(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``kind`` and convert it (lists to tuples)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML has inf and nan; no key of a study takes them
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) in (typing.Union, types.UnionType):
        for arm in typing.get_args(kind):  # the first type the value fits
            try:
                return _convert(value, arm, key)
            except ConfigError:
                pass
        names = " or ".join(
            f"a list of {typing.get_args(a)[0].__name__}" if typing.get_origin(a) is tuple else a.__name__
            for a in typing.get_args(kind)
        )
        raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    elif typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, list):
            return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        kind_name = f"a list of {item.__name__}"
        raise ConfigError(f"{key}: expected {kind_name}, got {type(value).__name__} {value!r}")
    raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r}")


def _build(cls: type, table: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(known))})")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table [{path}], got {value!r}")
            kwargs[key] = _build(hints[key], value, path)
        else:
            kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML, else kept as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.max_epochs=5")
    dotted, raw = text.split("=", 1)
    keys = [k.strip() for k in dotted.split(".")]
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"--set {text!r}: the key must be section.key, e.g. data.path")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return keys, value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a study file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    table: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: study file not found") from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path}: a folder, not a study file; give the TOML file (e.g. studies/demo.toml)"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not a UTF-8 text file (byte {exc.start}); save the study file as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the study file ({exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for text in overrides:
        (section, key), value = parse_override(text)
        sub = table.setdefault(section, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"--set {text!r}: {section} is not a table")
        sub[key] = value
    where = f"{path}: " if path is not None else ""
    try:
        return _build(Config, table, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def load_config_text(text: str, where: str) -> Config:
    """A configuration written by :func:`dump_config` (a trial's ``config`` attribute, a run's config.toml)."""
    try:
        return _build(Config, tomllib.loads(text), "")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: its configuration is not valid TOML ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash and every control character TOML forbids escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 and char != "\t" or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def dump_config(config: Config) -> str:
    """Write a :class:`Config` as TOML that :func:`load_config` reads back unchanged."""
    lines = []
    for section in dataclasses.fields(config):
        lines.append(f"[{section.name}]")
        for key, value in dataclasses.asdict(getattr(config, section.name)).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def replace(config: Config, **sections: Mapping[str, Any]) -> Config:
    """Return ``config`` with some keys of some sections changed, validated again."""
    changed = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, **changed)
