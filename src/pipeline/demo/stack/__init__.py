"""Start the product's services as local processes: a tracking server, Label Studio and Airflow standalone.

``make demo`` runs on them, and the test suite starts the same services through the same code. Each service
logs to a file of its own, answers on a free loopback port, and is stopped with its whole process group.
"""

from __future__ import annotations

from pathlib import Path

#: Root of a source checkout (the editable install's ``src/pipeline/demo/stack/../../../..``); sibling virtualenvs live there.
REPO_ROOT: Path = Path(__file__).resolve().parents[4]
