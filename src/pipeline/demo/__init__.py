"""The closed loop on one machine (``make demo``): the demo driver (``loop``), the local services it starts
(``stack``: a tracking server, Label Studio and Airflow standalone, which the test suite starts too) and the
annotator bot that answers Label Studio tasks from the simulator's ground truth (``annotator``).

A composition root like the CLI: it builds its own resources and may read the environment; nothing in the
stages imports it.
"""
