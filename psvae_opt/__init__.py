"""psvae-opt: hyperparameter search for partitioned-subspace VAEs of behavioural video."""

__version__ = "0.1.0"
