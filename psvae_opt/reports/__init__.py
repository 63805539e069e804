"""What a person looks at: charts, traversals, exports, the dashboard and its ratings.

Owns: ``study_charts`` (charts of a whole study) and ``run_charts`` (charts of one run), each
a pure data function plus a plotly renderer; ``traversals`` (latent traversal frames and
movies); ``diagnostics`` (those charts as files and a trial's uploads); ``stage_files`` (a
stage's files of ``psvae-opt export``: Pareto front, seed summary, failures, ratings);
``dashboard`` (optuna-dashboard's artifact store and server); ``ratings`` (human ratings of
stage-2 traversals); ``choices`` (the report options' choices and defaults, light, for the
command line's parser).
May import: every layer above (``errors`` to ``search``); plotly and optuna-dashboard live here.
Nothing here starts or follows workers.
"""
