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


def study_rows(logs: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Return valid DICOM-tag rows (table ``studies``) for the studies of ``logs``."""
    rng = np.random.default_rng(seed)
    n = len(logs)
    return pd.DataFrame(
        {
            "study_id": logs["study_id"].to_numpy(),
            "site": logs["site"].to_numpy(),
            "acquired_at": [t - timedelta(minutes=2) for t in logs["received_at"]],
            "dicom_uri": [f"dicom/{s}.dcm" for s in logs["study_id"]],
            "modality": rng.choice(["DX", "CR"], n),
            "manufacturer": "Agfa",
            "model_name": "DX-D 600",
            "view_position": rng.choice(["PA", "AP"], n, p=[0.8, 0.2]),
            "body_part": "CHEST",
            "kvp": rng.uniform(100, 130, n),
            "exposure_mas": rng.uniform(1, 5, n),
            "pixel_spacing_mm": 0.15,
            "rows": 2048,
            "columns": 2048,
            "bits_stored": 12,
            "photometric": "MONOCHROME2",
            "patient_age_years": rng.uniform(18, 90, n).round(),
            "patient_sex": rng.choice(["F", "M"], n),
            "img_mean": rng.uniform(0.3, 0.5, n),
            "img_std": rng.uniform(0.1, 0.2, n),
            "img_p01": 0.01,
            "img_p50": 0.4,
            "img_p99": 0.95,
            "img_clipped_frac": 0.0,
        }
    )
