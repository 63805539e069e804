"""A trial of a study turned into a model bundle: its weights, what new data needs, how it was chosen.

``bundle.json`` keys (beside those of :mod:`psvae_opt.inference.bundle`):

- the model: ``frame_shape`` (C, H, W), ``frame_size``, ``n_labels``, ``n_unsup``, ``dim_names``;
- the labels: ``label_names``, ``label_means`` and ``label_stds`` (pixels of the stored frames;
  frame-weighted over the training sessions, each session's in ``session_label_scaling``),
  ``label_source_size`` (L, 2) (H, W) of the video each label came from, ``view_names``,
  ``view_frame_sizes``, ``frame_rate``;
- the data: ``data_fingerprint`` (per file: frames, trials, SHA-256 of its frames and labels),
  ``split`` (counts, data seed and mode: new sessions are split the same way);
- the choice: ``study``, ``stage``, ``trial``, ``alpha``, ``beta``, ``model_seed``, ``data_seed``,
  ``metrics`` (every split of ``summary.json``), ``health`` and ``leakage`` (the trial's
  attributes), ``recommendation`` (with its verdict) and ``stage_table`` (the seed summary);
- ``traversal_lower`` / ``traversal_upper``: each dimension's sweep on the training frames.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from psvae_opt import __version__
from psvae_opt.config import Config, dump_config, load_config_text
from psvae_opt.data import Session, load_session
from psvae_opt.errors import ConfigError, DataError
from psvae_opt.inference import bundle
from psvae_opt.search.recommendation import describe_stage2
from psvae_opt.search.records import Stage2Recommendation, parse_recommendation, stored_recommendation
from psvae_opt.search.stages import seed_summary
from psvae_opt.training.run_folder import read_summary
from psvae_opt.training.trained import RunTraversals, load_run

HEALTH = ("zu_std", "zu_kl", "collapsed", "collapsed_dims")
LEAKAGE = ("zu_label_corr", "max_label_leak", "zu_factor_corr", "factor_names", "mig")
TABLE_COLUMNS = ("n_seeds", "n_collapsed", "train_zu_corr", "val_pixel_mse", "val_label_r2", "mig")
MEDIA = ("traversal.png", "traversal.mp4")


def plain(value: Any) -> Any:
    """JSON-safe: numpy to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def chosen_trial(
    study: optuna.Study, number: int | None, finished: bool = True
) -> tuple[optuna.trial.FrozenTrial, Config]:
    """The trial (default: the stage's recommended one) and its own resolved configuration.

    ``finished``: the trial must be complete (a model bundle); else any trial with a run folder
    (a report may be asked of a failed or running trial)."""
    if number is None:
        rec = stored_recommendation(study.user_attrs)
        if not rec:
            raise ConfigError(f"study {study.study_name!r} has no recommendation yet; give --trial N")
        number = rec.trial
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if finished:
        usable, what = trial is not None and trial.state == optuna.trial.TrialState.COMPLETE, "finished trial"
    else:
        usable, what = trial is not None and "run_dir" in trial.user_attrs, "trial with a run folder"
    if not usable or "config" not in trial.user_attrs:
        raise ConfigError(f"--trial {number}: study {study.study_name!r} has no such {what}")
    return trial, load_config_text(trial.user_attrs["config"], f"trial {number}")


def fingerprint(session: Session) -> dict[str, Any]:
    """What identifies the training data: per file its frames, trials and hashes of frames and labels."""
    files, offsets = [], np.concatenate([[0], np.cumsum(np.bincount(session.frame_sessions))])
    starts = np.asarray(session.trial_starts)
    for s, path in enumerate(session.paths):
        a, b = int(offsets[s]), int(offsets[s + 1])
        files.append(
            {
                "file": str(Path(path).resolve()),
                "frames": b - a,
                "trials": int(np.sum((starts[:-1] >= a) & (starts[:-1] < b))),
                "frames_sha256": hashlib.sha256(np.ascontiguousarray(session.images[a:b]).data).hexdigest(),
                "labels_sha256": hashlib.sha256(np.ascontiguousarray(session.labels[a:b]).data).hexdigest(),
            }
        )
    return {"files": files, "frame_shape": list(session.frame_shape), "label_names": list(session.label_names)}


def label_scaling(session: Session) -> dict[str, Any]:
    """Means and stds of the labels in stored-frame pixels (None when a file lacks them) and sizes."""
    weights = np.bincount(session.frame_sessions, minlength=session.n_sessions).astype(np.float64)
    per = [(a.get("label_means"), a.get("label_stds")) for a in session.session_attrs]
    known = all(m is not None and s is not None for m, s in per)
    means = stds = None
    if known:
        means = np.average(np.array([np.asarray(m, np.float64) for m, _ in per]), axis=0, weights=weights)
        stds = np.average(np.array([np.asarray(s, np.float64) for _, s in per]), axis=0, weights=weights)
    attrs = session.attrs
    return {
        "label_means": means,
        "label_stds": stds,
        "session_label_scaling": [{"means": m, "stds": s} for m, s in per] if known else None,
        "label_source_size": attrs.get("label_source_size"),
        "view_names": attrs.get("view_names"),
        "view_frame_sizes": attrs.get("view_frame_sizes"),
        "frame_rate": attrs.get("frame_rate"),
    }


def stage_table(study: optuna.Study) -> list[dict[str, Any]]:
    """The stage's seed summary, one row per group, means and 95% t intervals of the key metrics."""
    rows = []
    for row in seed_summary(study):
        out = {k: row[k] for k in ("beta", "alpha", "n_unsup") if k in row}
        out.update(n_seeds=row["n_seeds"], n_collapsed=row["n_collapsed"])
        for metric in TABLE_COLUMNS[2:]:
            out.update({f"{metric}_{s}": row.get(f"{metric}_{s}") for s in ("mean", "low", "high")})
        rows.append(out)
    return rows


def bundle_info(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, config: Config, session: Session, run: Any
) -> dict[str, Any]:
    """Everything ``bundle.json`` records about the trial (see the module docstring)."""
    run_dir = Path(trial.user_attrs["run_dir"])
    attrs = trial.user_attrs
    info = {
        "psvae_opt_version": __version__,
        "frame_shape": list(session.frame_shape),
        "frame_size": session.frame_shape[1],
        "n_labels": session.n_labels,
        "n_unsup": config.model.n_unsup,
        "label_names": list(session.label_names),
        "dim_names": list(run.names),
        **label_scaling(session),
        "data_fingerprint": fingerprint(session),
        "split": {
            "counts": list(config.data.split_counts),
            "data_seed": config.data.data_seed,
            "mode": config.data.split_mode,
        },
        "study": study.study_name,
        "stage": int(study.user_attrs.get("stage", 2)),
        "trial": trial.number,
        "run_dir": str(run_dir),
        "alpha": config.loss.alpha,
        "beta": config.loss.beta,
        "model_seed": config.train.model_seed,
        "data_seed": config.data.data_seed,
        "metrics": read_summary(run_dir).get("metrics", {}),
        "per_session": read_summary(run_dir).get("per_session"),
        "health": {k: attrs.get(k) for k in HEALTH},
        "leakage": {k: v for k, v in attrs.items() if k in LEAKAGE or k.startswith("factor_r_")},
        "recommendation": study.user_attrs.get("recommendation"),
        "stage_table": stage_table(study),
        "traversal_lower": run.lower,
        "traversal_upper": run.upper,
    }
    return plain(info)


# Writes a medium of MEDIA from a run: (run, session, path) -> path (the reports layer's
# traversal image and movie, handed in by the command: inference does not import reports).
Render = Callable[[RunTraversals, Session, Path], Any]


def _media(
    run_dir: Path, run: RunTraversals, session: Session, folder: Path, render: Mapping[str, Render]
) -> list[str]:
    """The trial's traversal image and movie, copied from its diagnostics (rendered by
    ``render[name]`` when absent; left out when there is no renderer for it)."""
    names = []
    for name in MEDIA:
        source = run_dir / "diagnostics" / name
        if source.is_file():
            shutil.copy2(source, folder / name)
        elif name in render:
            render[name](run, session, folder / name)
        else:
            continue
        names.append(name)
    return names


def export_model(
    study: optuna.Study,
    number: int | None,
    out: str | Path,
    device: str = "cpu",
    render: Mapping[str, Render] | None = None,
) -> Path:
    """Write the bundle of a trial (default: the recommended one) to ``out``; returns the folder.

    ``render``: medium name -> its writer, for media the trial's diagnostics lack.
    Everything is read and checked (trial, run folder, data, checkpoint) before the bundle is
    written, through a staging folder: a refused export leaves nothing at ``out``.
    """
    bundle.check_bundle_out(out)
    trial, config = chosen_trial(study, number)
    run_dir = Path(trial.user_attrs.get("run_dir", ""))
    if not (run_dir / "best.pt").is_file() or not (run_dir / "config.toml").is_file():
        raise DataError(
            f"trial {trial.number}: its run folder {run_dir} holds no best.pt and config.toml (moved, or on "
            "another machine); export where the run folders are"
        )
    session = load_session(config.data.path)
    run = load_run(run_dir, session, device)  # checks best.pt and latents against the data
    info = bundle_info(study, trial, config, session, run)

    def fill(folder: Path) -> dict[str, Any]:
        bundle.save_weights(run.model, folder)
        (folder / bundle.CONFIG).write_text(dump_config(config))
        info["media"] = _media(run_dir, run, session, folder, render or {})
        (folder / bundle.CARD).write_text(model_card(info))
        return info

    return bundle.write_bundle(out, fill)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_num(v, digits) for v in value) + "]"
    return "-" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value))


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(no finished trials)"]
    group = [k for k in ("alpha", "n_unsup", "beta") if k in rows[0]]
    head = [*group, "seeds", "collapsed", "zu_corr (train), 95% t", "val pixel MSE", "val label R^2", "MIG"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        zu = f"{_num(r['train_zu_corr_mean'])} [{_num(r['train_zu_corr_low'])}, {_num(r['train_zu_corr_high'])}]"
        cells = [*(_num(r[k]) for k in group), str(r["n_seeds"]), str(r["n_collapsed"]), zu]
        cells += [_num(r["val_pixel_mse_mean"], 4), _num(r["val_label_r2_mean"]), _num(r["mig_mean"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def model_card(info: dict[str, Any]) -> str:
    """The bundle's model card (Markdown): what it takes, how it was chosen, how good it is."""
    c, h, w = info["frame_shape"]
    rec = parse_recommendation(info.get("recommendation"))
    lines = [
        f"# PS-VAE model card: {info['study']}, trial {info['trial']}",
        "",
        f"- input: {c} x {h} x {w} uint8 frames (C x H x W); {info['n_labels']} labels "
        f"({', '.join(info['label_names'])}), {info['n_unsup']} unsupervised latents",
        f"- alpha = {info['alpha']:g}, beta = {info['beta']:g}, model seed {info['model_seed']}, "
        f"data seed {info['data_seed']} (split {';'.join(map(str, info['split']['counts']))})",
        f"- trained on: {', '.join(f['file'] for f in info['data_fingerprint']['files'])}",
        f"- run folder: {info['run_dir']}",
        "",
        "## How it was chosen",
        "",
    ]
    if isinstance(rec, Stage2Recommendation) and rec.trial == info["trial"]:
        lines.append(
            f"The recommended model of stage {info['stage']}: beta by the posterior probability that it is "
            f"best over paired seeds, then the best model of that beta, both by {rec.criterion}."
        )
        lines += ["", *(f"- {line.strip()}" for line in describe_stage2(rec))]
        lines += [f"- warning: {w}" for w in rec.warnings]
    elif rec is not None and rec.trial == info["trial"]:
        lines.append(
            f"The recommended model of stage 1: alpha {rec.alpha:g} with n_unsup {rec.n_unsup} is the "
            "knee of the front of validation pixel MSE vs label MSE (seed means); this trial is its lowest seed."
        )
    else:
        lines.append(f"Trial {info['trial']} of stage {info['stage']}, chosen by hand (not the recommendation).")
    lines += ["", *_table(info.get("stage_table") or []), "", "## Metrics of the best checkpoint", ""]
    lines += ["| split | pixel MSE | label MSE | label R^2 | zu_corr |", "|---|---|---|---|---|"]
    for split, m in (info.get("metrics") or {}).items():
        lines.append(
            f"| {split} | {_num(m.get('pixel_mse'), 4)} | {_num(m.get('label_mse'))} | "
            f"{_num(m.get('label_r2'))} | {_num(m.get('zu_corr'))} |"
        )
    health, leak = info.get("health") or {}, info.get("leakage") or {}
    lines += [
        "",
        "## Latent health and leakage (training frames)",
        "",
        f"- posterior-mean std of each unsupervised dimension: {_num(health.get('zu_std'))}; "
        f"collapsed: {health.get('collapsed_dims') or 'none'}",
        f"- largest |r| of an unsupervised latent with a label: {_num(leak.get('max_label_leak'))}",
    ]
    lines += [f"- {k}: {_num(v)}" for k, v in sorted(leak.items()) if k.startswith("factor_r_") or k == "mig"]
    lines += ["", "## Traversals", ""]
    lines += [f"![{m}]({m})" if m.endswith(".png") else f"[{m}]({m})" for m in info.get("media", [])]
    lines += ["", "Load it with `psvae_opt.load_model(DIR)`; encode new data with `psvae-opt encode --model DIR`.", ""]
    return "\n".join(lines)
