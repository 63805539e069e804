"""The PS-VAE itself: the network, its loss and the metrics of its output.

Owns: ``network`` (BehaveNet's convolutional VAE with a partitioned latent), ``losses`` (the
PS-VAE objective as named terms) and ``metrics`` (pure numpy, one implementation each).
May import: ``errors``, ``config``, ``data``; torch and numpy. Nothing here knows about
training loops, studies or files.
"""
