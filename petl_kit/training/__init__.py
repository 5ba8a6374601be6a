"""Training: the fit / evaluate loop with best-validation selection, task metrics and losses
(scikit-learn, mir_eval), the music read-outs (key, tempo), and the backbone-output cache that
trains linear probes on cached features (``probe_cache``); mixed precision (``precision``) and
data-parallel training over processes (``distributed``).

May import: ``config``, ``errors``, ``data``, ``backbones``, ``methods``, ``model``.
"""
