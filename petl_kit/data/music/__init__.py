"""Music sets of the music PETL paper: JSON-Lines manifests of 24 kHz audio (``manifests``), the
label layouts of key and tempo (``labels``), the manifest builder (``build``), the training-set
augmentations (``augment``) and the built-in generated music sets (``synthetic``).

May import: ``config``, ``errors`` and the rest of ``data``.
"""
