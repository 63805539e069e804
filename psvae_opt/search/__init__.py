"""The search: spaces, the objective that turns a trial into a fit, and the studies in a database.

Owns: ``stages`` (one record per stage, which the service, reports and commands consult),
``records`` (the stored recommendation parsed once into frozen records, and written back),
``space`` (grids, samplers, names of both stages), ``objective`` (where an Optuna trial
meets training), ``storage`` (SQLite/PostgreSQL, outages), ``trial_queue`` (every use of
Optuna beyond its public API), ``study`` (creating a stage's study, its queue and counts),
``rules`` (both stages' recommendation rules as pure functions: trial rows in, frozen choices
out), ``recommendation`` (reads the trials and the criterion's scores, applies the rules,
stores the result, ``--seeds auto``'s next round),
``intervals`` (statistics over seeds, pure Python), ``criteria`` (candidate selection criteria
without ground truth, pure numpy) and ``selection_stats`` (P(best) per beta over paired seeds,
the adaptive stop rule and its simulated error rates).
May import: ``errors``, ``config``, ``data``, ``model``, ``training``; the first layer with
Optuna; SQLAlchemy only in ``storage`` and ``trial_queue``. Nothing here starts processes.
"""
