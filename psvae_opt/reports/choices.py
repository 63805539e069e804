"""The choices and defaults of the report options (``psvae-opt report``): light on purpose, so
that the command line builds its parser without plotly, torch or optuna."""

from __future__ import annotations

CURVE_SPLITS = ("train", "val")  # the splits with training curves
GRID_STEPS, MOVIE_STEPS, MOVIE_BASES, FPS = 7, 30, 3, 20  # defaults of the PNG grid and the MP4 movie
