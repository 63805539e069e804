"""Training one model: the loop, the run folder it writes, where it runs, its curves.

Owns: ``loop`` (``fit``, read top to bottom: the only place ``backward()`` and ``step()`` are
driven), ``steps`` (the model and optimiser built, the loss of a batch, one optimizer step, the
forward pass and loss as one compiled function, ``evaluate``), ``run_state`` (a run's state and
its epoch: training pass, early stopping), ``checkpoints`` (``last.pt``/``best.pt`` saved at
their cadence and loaded, resuming), ``trained`` (a finished run read back: ``load_checkpoint``,
``decode``, ``load_run``, for reports and inference alike), ``run_end``
(``FitResult``; the latents and summary of the best checkpoint), ``run_folder`` (the files of a
run folder, their formats and atomic writes), ``devices`` (device, precision, frames held on the
device), ``gpus`` (what a GPU allows: its kernels, native bf16, compute mode) and ``event_log``
(TensorBoard event files).
May import: ``errors``, ``config``, ``data``, ``model``. No Optuna: a run does not know it is a trial.
"""
