"""Training one model: the loop, the run folder it writes, where it runs, its curves.

Owns: ``loop`` (``fit``/``evaluate``: the only place ``backward()`` and ``step()`` happen),
``step`` (a step's forward pass and loss as one
compiled function), ``run_folder`` (the files of a run folder and their formats), ``devices`` (device, precision,
frames held on the device), ``gpus`` (what a GPU allows: its kernels, native bf16, compute
mode) and ``event_log`` (TensorBoard event files).
May import: ``errors``, ``config``, ``data``, ``model``. No Optuna: a run does not know it is a trial.
"""
