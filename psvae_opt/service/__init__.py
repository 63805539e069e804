"""The search as a running service: stages, launchers, worker processes and their trial loop.

Owns: ``stage_run`` (a stage from request to recommendation: ``run``), ``request`` (what a stage
command asks for and gets), ``launcher`` (the launcher seam: the interface and the launchers by
name), ``local_launcher`` and ``slurm_launcher`` (its two launchers), ``follow`` (what every
launcher shares: the worker's command line and environment, following a stage), ``stage_status``
(what ``status`` and ``export`` read of a stage, changing nothing), ``slurm`` (the sbatch script and
SLURM commands), ``worker`` (a worker process from request to exit: ``run``), ``gpu_slots`` (the
GPU a worker takes, a lock-file slot), ``trial_loop`` (popping queued trials and training them
until none is left) and ``mlflow_log`` (the mlflow extra: its check and the trial hook). The
launcher side (all but the three below) imports nothing of the worker side (``worker``,
``gpu_slots``, ``trial_loop``); both use ``mlflow_log``.
May import: every layer above (``errors`` to ``reports``). Processes, never threads, for trials.
"""
