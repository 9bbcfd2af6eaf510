"""The inference service: DICOM in, a prediction and everything production logs out.

For each study it reads the file once (tags, image statistics, display pixels), checks that it
is a chest radiograph with the lungs in the field, runs the model through the training
preprocessing, and logs the probability, the decision at the deployed threshold, the predictive
entropy, an epistemic estimate (MC dropout), the penultimate-layer embedding and the latency.
A failure in one study becomes that study's error row; the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import torch

from pipeline.dicom import DicomError, load_study, pseudonymize_uid
from pipeline.model import enable_mc_dropout, preprocess
from pipeline.registry import LoadedModel
from pipeline.store import Decision, ErrorType, Status, encode_embedding

log = logging.getLogger(__name__)

# What an injected failure looks like in the log: latency paid before the failure surfaced.
FAILURE_LATENCY_S = {ErrorType.TIMEOUT: 30.0, ErrorType.CUDA_OOM: 1.5}


@dataclass(frozen=True)
class InferenceRequest:
    """One study sent to the service."""

    path: Path
    site: str
    received_at: datetime
    injected_failure: ErrorType | None = None  # the simulated production environment fails this one


@dataclass(frozen=True)
class ServiceOutput:
    """Rows for the store: ``studies`` (files that could be read), ``inference_logs`` (every request), ``shadow_logs``."""

    studies: list[dict[str, object]]
    logs: list[dict[str, object]]
    shadow_logs: list[dict[str, object]] = field(default_factory=list)


def collimation_cuts_apex(pixels: np.ndarray, *, max_blank_share: float = 0.12, tolerance: float = 0.02) -> bool:
    """Return True when a collimator blanked more than ``max_blank_share`` of the rows at the top.

    Args:
        pixels: (H, W) display pixels in [0, 1].
        max_blank_share: the share of rows a normal field may leave blank above the apex.
        tolerance: largest standard deviation of a row counted as blank.
    """
    row_std = pixels.std(axis=1)
    blank = row_std < tolerance
    first_content = int(np.argmax(~blank)) if (~blank).any() else len(blank)
    return first_content / len(blank) > max_blank_share


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Return the entropy of Bernoulli(p) in nats."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return -(q * np.log(q) + (1 - q) * np.log1p(-q))


class InferenceService:
    """Scores studies with one model version, as the production service does.

    Args:
        model: the loaded registry version (model, version, threshold, image size).
        key: pseudonymisation key of StudyInstanceUIDs.
        mc_samples: MC-dropout passes for the epistemic estimate (0 to skip).
        batch_size: studies per forward pass.
        shadow: a model version scoring beside the champion, whose answers are logged, never used.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        key: str,
        mc_samples: int = 8,
        batch_size: int = 64,
        shadow: LoadedModel | None = None,
    ) -> None:
        self.loaded = model
        self.key = key
        self.mc_samples = mc_samples
        self.batch_size = batch_size
        self.transform = preprocess(model.image_size, load=False)
        self.shadow = shadow
        self.shadow_transform = (
            None
            if shadow is None or shadow.image_size == model.image_size
            else preprocess(shadow.image_size, load=False)
        )

    def process(self, requests: Sequence[InferenceRequest]) -> ServiceOutput:
        """Score ``requests``; every request gets exactly one log row (in request order), whatever fails."""
        studies: list[dict[str, object]] = []
        logs: list[dict[str, object]] = []
        shadow_logs: list[dict[str, object]] = []
        ready: list[tuple[InferenceRequest, str, np.ndarray, float]] = []
        order = {id(r): i for i, r in enumerate(requests)}
        for request in requests:
            started = time.perf_counter()
            try:
                loaded = load_study(request.path, self.key)
            except DicomError as exc:
                study_id = _id_for_unreadable(request.path, request.site, self.key)
                status = Status.REJECTED if exc.error_type == ErrorType.NOT_CHEST_RADIOGRAPH else Status.ERROR
                logs.append(self._failure(request, study_id, status, ErrorType(exc.error_type), str(exc), started))
                continue
            record = asdict(loaded.record)
            record["acquired_at"] = record["acquired_at"] or request.received_at
            studies.append({**record, "site": request.site, "dicom_uri": str(request.path)})
            study_id = loaded.record.study_id
            if request.injected_failure is not None:
                failure = request.injected_failure
                logs.append(self._failure(request, study_id, Status.ERROR, failure, f"injected {failure}", started))
            elif collimation_cuts_apex(loaded.pixels):
                detail = "collimation blanks the top of the field: lung apex not captured"
                logs.append(
                    self._failure(
                        request, study_id, Status.REJECTED, ErrorType.ORGAN_NOT_FULLY_CAPTURED, detail, started
                    )
                )
            else:
                ready.append((request, study_id, loaded.pixels, time.perf_counter() - started))
        for start in range(0, len(ready), self.batch_size):
            batch = ready[start : start + self.batch_size]
            scored = self._score(batch)
            logs.extend(scored)
            if self.shadow is not None:
                shadow_logs.extend(self._shadow(batch, scored))
        logs.sort(key=lambda row: order[id(row.pop("_request"))])
        return ServiceOutput(studies, logs, shadow_logs)

    def _failure(
        self, request: InferenceRequest, study_id: str, status: Status, error: ErrorType, detail: str, started: float
    ) -> dict[str, object]:
        latency = FAILURE_LATENCY_S.get(error, time.perf_counter() - started)
        return self._row(request, study_id, status, latency) | {"error_type": error, "error_detail": detail[:500]}

    def _row(self, request: InferenceRequest, study_id: str, status: Status, latency: float) -> dict[str, object]:
        """Return the fields every log row has; ``_request`` is dropped once rows are back in request order."""
        return {
            "_request": request,
            "study_id": study_id,
            "model_version": self.loaded.version,
            "site": request.site,
            "received_at": request.received_at,
            "finished_at": request.received_at + timedelta(seconds=latency),
            "status": status,
            "latency_s": latency,
        }

    @torch.no_grad()
    def _score(self, batch: list[tuple[InferenceRequest, str, np.ndarray, float]]) -> list[dict[str, object]]:
        started = time.perf_counter()
        try:
            images = torch.stack([self.transform({"image": pixels})["image"] for _, _, pixels, _ in batch])
        except (RuntimeError, ValueError) as exc:  # one bad image fails preprocessing for the batch: go one by one
            if len(batch) == 1:
                request, study_id, _, _ = batch[0]
                return [
                    self._failure(request, study_id, Status.ERROR, ErrorType.PREPROCESSING_FAILED, str(exc), started)
                ]
            return [row for item in batch for row in self._score([item])]
        model = self.loaded.model
        model.eval()
        logits, embeddings = model.forward_with_embedding(images)
        probs = torch.sigmoid(logits).numpy()
        epistemic = np.zeros_like(probs)
        if self.mc_samples > 0:
            enable_mc_dropout(model)
            samples = np.stack([torch.sigmoid(model(images)).numpy() for _ in range(self.mc_samples)])
            model.eval()
            epistemic = samples.var(axis=0)
        entropy = binary_entropy(probs)
        per_study = (time.perf_counter() - started) / len(batch)
        rows = []
        for i, (request, study_id, _, read_s) in enumerate(batch):
            latency = read_s + per_study
            prob = float(probs[i])
            rows.append(
                self._row(request, study_id, Status.OK, latency)
                | {
                    "prob_abnormal": prob,
                    "threshold": self.loaded.threshold,
                    "decision": Decision.NORMAL if prob < self.loaded.threshold else Decision.ABNORMAL,
                    "entropy": float(entropy[i]),
                    "epistemic_var": float(epistemic[i]),
                    "embedding": encode_embedding(embeddings[i].numpy()),
                }
            )
        return rows

    @torch.no_grad()
    def _shadow(
        self, batch: list[tuple[InferenceRequest, str, np.ndarray, float]], scored: list[dict[str, object]]
    ) -> list[dict[str, object]]:
        """Return the shadow model's rows for the studies of ``batch`` that the champion scored."""
        assert self.shadow is not None
        ok = {str(row["study_id"]) for row in scored if row["status"] == Status.OK}
        items = [item for item in batch if item[1] in ok]
        if not items:
            return []
        started = time.perf_counter()
        transform = self.shadow_transform or self.transform
        images = torch.stack([transform({"image": pixels})["image"] for _, _, pixels, _ in items])
        model = self.shadow.model
        model.eval()
        probs = torch.sigmoid(model(images)).numpy()
        entropy = binary_entropy(probs)
        per_study = (time.perf_counter() - started) / len(items)
        threshold = self.shadow.threshold
        return [
            {
                "study_id": study_id,
                "model_version": self.shadow.version,
                "champion_version": self.loaded.version,
                "site": request.site,
                "received_at": request.received_at,
                "latency_s": read_s + per_study,
                "prob_abnormal": float(probs[i]),
                "threshold": threshold,
                "decision": Decision.NORMAL if float(probs[i]) < threshold else Decision.ABNORMAL,
                "entropy": float(entropy[i]),
            }
            for i, (request, study_id, _, read_s) in enumerate(items)
        ]


def _id_for_unreadable(path: Path, site: str, key: str) -> str:
    """Return the pseudonymous id of a file that is not a readable chest radiograph: a keyed hash of its source and bytes.

    The source is the site and the file's absolute path, the content the SHA-256 of its bytes (read in
    chunks), so ``a/IM0001.dcm`` and ``b/IM0001.dcm`` get two ids, a file changed in place a new one, and
    the same bytes at the same place the same id on every re-run. Both go in as hex digests, so no
    character of a path is lost to the ASCII of :func:`pseudonymize_uid`; a file that cannot be opened
    is keyed by its source alone.
    """
    source = hashlib.sha256(site.encode("utf-8") + b"\x00" + os.fsencode(os.path.abspath(path))).hexdigest()
    try:
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        content = "no-content"
    return pseudonymize_uid(f"unreadable:{source}:{content}", key)
