"""The search as a running service: stages, launchers, worker processes and their trial loop.

Owns: ``stages`` (a stage from request to recommendation), ``launchers`` (starting and
following workers locally), ``slurm`` (the sbatch script and SLURM commands), ``worker`` (a
worker process from start to exit) and ``trial_loop`` (popping queued trials and training
them until none is left).
May import: every layer above (``errors`` to ``reports``). Processes, never threads, for trials.
"""
