"""Small real data for tests: frames shaped like what the inference service logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pipeline.store import encode_embedding


def inference_log_rows(
    n: int, *, seed: int = 0, start: datetime | None = None, embedding_dim: int = 16
) -> pd.DataFrame:
    """Return ``n`` valid inference-log rows, one per study, over the hour after ``start``."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 5, tzinfo=UTC)
    received = [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, 3600, n))]
    prob = rng.uniform(0, 1, n)
    return pd.DataFrame(
        {
            "study_id": [f"{seed:08x}{i:024x}" for i in range(n)],
            "model_version": "1",
            "site": rng.choice(["st-anna", "north-general"], n),
            "received_at": received,
            "finished_at": [t + timedelta(seconds=0.4) for t in received],
            "status": "ok",
            "error_type": None,
            "latency_s": rng.gamma(2.0, 0.2, n),
            "prob_abnormal": prob,
            "threshold": 0.2,
            "decision": np.where(prob < 0.2, "normal", "abnormal"),
            "entropy": -(prob * np.log(prob) + (1 - prob) * np.log1p(-prob)),
            "epistemic_var": rng.gamma(1.0, 0.01, n),
            "embedding": [encode_embedding(v) for v in rng.normal(size=(n, embedding_dim))],
        }
    )
