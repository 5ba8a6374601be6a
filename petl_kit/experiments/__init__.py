"""Experiments: run parameters and their validation against a notebook's parameters cell, run
folders and provenance, in-process and papermill runs, sweeps (plan, executors), cross-validation
and few-shot protocols, and the tidy results tables.

May import every package below it: ``config``, ``errors``, ``data``, ``backbones``, ``methods``,
``model``, ``training``, ``efficiency``.
"""
