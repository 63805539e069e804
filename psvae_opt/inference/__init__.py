"""The chosen model at work on new data: model bundles, encoding sessions and videos, export formats.

Owns: ``bundle`` (the bundle folder: its files, writing it atomically, loading it back with
every check), ``model`` (:class:`PsvaeModel`, the notebook API: encode, decode, predict labels,
traverse), ``card`` (a trial of a study turned into a bundle with its model card), ``sources``
(new data in: HDF5 session files or videos, checked against the model), ``encode`` (latents,
labels, reconstruction errors and scores of a session, streamed in batches), ``formats`` (the
writers' registry, NWB), ``tables`` (npz, CSV and the DeepLabCut-style keypoints CSV),
``cohort`` (folders and globs of inputs, each session written as it finishes, failures kept),
``movie`` (a side-by-side movie of frames and reconstructions),
``behavenet`` (BehaveNet's latents pickle and ``meta_tags.pkl``, readable by numpy 1.17 to 2.x)
and ``provenance`` (what every output records about its bundle, source and options).
May import: every layer above except ``reports`` (``errors`` to ``search``): the network and
checkpoint loading of ``training.trained``, the recommendation and seed table of ``search``; the
card's traversal image and movie writers are handed in by the command.
pynwb only inside ``formats``' NWB writer. No database is needed to load a bundle or encode.
"""
