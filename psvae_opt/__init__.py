"""psvae-opt: hyperparameter search for partitioned-subspace VAEs of behavioural video.

``psvae_opt.load_model(DIR)`` loads a model bundle (:mod:`psvae_opt.inference`). It is
imported on first use, so that ``import psvae_opt`` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from psvae_opt.inference.model import load_model

        return load_model
    raise AttributeError(f"module 'psvae_opt' has no attribute {name!r}")
