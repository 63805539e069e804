"""The search as a running service: stages, launchers, worker processes and their trial loop.

Owns: ``stage_run`` (a stage from request to recommendation: ``run``), ``launcher`` (the launchers'
names), ``readonly`` (what
``status`` and ``export`` read of a stage, changing nothing), ``launchers`` (starting and
following workers locally), ``slurm`` (the sbatch script and SLURM commands), ``worker`` (a
worker process from request to exit: ``run``), ``trial_loop`` (popping queued trials and
training them until none is left) and ``mlflow_log`` (the mlflow extra: its check and the
trial hook). The launcher side (``stage_run``, ``readonly``, ``launchers``, ``slurm``) imports nothing of the
worker side (``worker``, ``trial_loop``); both use ``mlflow_log``.
May import: every layer above (``errors`` to ``reports``). Processes, never threads, for trials.
"""
