"""Numbers read from trained models: the routing recorder of the mixtures of adapters
(``routing``) and each method's look inside (``insight``: separability, weight change, LoRA
spectra, attention mass on prompts and prefixes, adapter output norms).

May import: ``config``, ``errors``, ``data``, ``backbones``, ``methods``, ``model``, ``training``.
"""
