"""What a person looks at: figures as plain functions of tables and arrays (``plots``,
``routing_plots``) and the ipywidgets dashboard over ``outputs/`` (``widgets``), which only wires
controls to plain functions.

``plots`` and ``routing_plots`` are leaves: they import nothing of the kit but
``efficiency.pareto_front``, so a run folder (``experiments``) draws its figures with them.
``widgets`` is the top layer: it may import every package.
"""
