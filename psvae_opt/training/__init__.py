"""Training one model: the loop, the run folder it writes, where it runs, its curves.

Owns: ``loop`` (``fit``, one function read top to bottom: process settings, fetch batch,
forward and loss, backward, step, evaluate, checkpoint), ``steps`` (the model and optimiser
built, the forward pass and loss of a batch, eager or compiled, one optimizer step for the
benchmarks, ``evaluate``), ``run_state`` (a run's state as plain data, its set-up, early
stopping), ``bf16_weights`` (bf16 copies of the weights autocast would cast each step),
``checkpoints`` (``last.pt``/``best.pt`` saved at
their cadence and loaded, resuming), ``trained`` (a finished run read back: ``load_checkpoint``,
``decode``, ``load_run``, for reports and inference alike), ``run_end``
(``FitResult``; the latents and summary of the best checkpoint), ``run_folder`` (the files of a
run folder, their formats and atomic writes), ``devices`` (device, precision, frames held on the
device), ``gpus`` (what a GPU allows: its kernels, native bf16, compute mode) and ``event_log``
(TensorBoard event files).
May import: ``errors``, ``config``, ``data``, ``model``. No Optuna: a run does not know it is a trial.
"""
