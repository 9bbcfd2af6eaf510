"""The inference service on real DICOM: simulated studies, and every file pydicom ships."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.data import get_testdata_files

from pipeline.inference import InferenceRequest, InferenceService, collimation_cuts_apex
from pipeline.model import NetConfig, NormalFilterNet
from pipeline.registry import LoadedModel
from pipeline.simulate.generate import render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import load_scenario
from pipeline.store import ErrorType, Status, decode_embeddings, validate_frame

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"
RECEIVED = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def service() -> InferenceService:
    torch.manual_seed(0)
    model = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2)))
    return InferenceService(LoadedModel(model, "test-model", "7", threshold=0.5, image_size=32), key="k", mc_samples=4)


def requests_for_day(tmp_path: Path, count: int) -> list[InferenceRequest]:
    scenario = load_scenario(SCENARIOS / "stable.yaml")
    planned = plan_day(scenario, 0)[:count]
    rendered = [render_study(p, storage_root=tmp_path, key="k", image_size=64) for p in planned]
    return [InferenceRequest(r.dicom_path, r.planned.site.id, RECEIVED) for r in rendered]


def test_scores_studies_and_logs_everything_production_logs(tmp_path, service):
    requests = requests_for_day(tmp_path, 20)
    out = service.process(requests)
    logs = pd.DataFrame(out.logs)
    assert len(logs) == 20 and len(out.studies) == 20
    ok = logs[logs.status == Status.OK]
    assert len(ok) >= 18  # the odd apex cut is rejected
    assert ok["prob_abnormal"].between(0, 1).all()
    assert (ok["decision"] == np.where(ok["prob_abnormal"] < 0.5, "normal", "abnormal")).all()
    assert (ok["entropy"] >= 0).all() and (ok["epistemic_var"] >= 0).all() and (ok["epistemic_var"] > 0).any()
    assert decode_embeddings(ok["embedding"]).shape == (len(ok), service.loaded.model.embedding_dim)
    assert (logs["model_version"] == "7").all()
    checked_logs = validate_frame("inference_logs", logs)
    checked_studies = validate_frame("studies", pd.DataFrame(out.studies))
    assert checked_logs.errors == () and checked_studies.errors == ()


def test_injected_failures_become_error_rows_and_the_batch_goes_on(tmp_path, service):
    requests = requests_for_day(tmp_path, 6)
    requests[1] = InferenceRequest(requests[1].path, requests[1].site, RECEIVED, injected_failure=ErrorType.CUDA_OOM)
    broken = tmp_path / "broken.dcm"
    whole = requests[0].path.read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])  # an upload cut off halfway
    requests.append(InferenceRequest(broken, "st-anna", RECEIVED))
    logs = pd.DataFrame(service.process(requests).logs)
    assert len(logs) == 7
    assert logs.iloc[1][["status", "error_type"]].tolist() == ["error", "cuda_oom"]
    assert logs.iloc[6][["status", "error_type"]].tolist() == ["error", "dicom_read_error"]
    assert "broken.dcm" in logs.iloc[6]["error_detail"]
    assert (logs.iloc[[0, 2, 3, 4, 5]]["status"] != "error").all()


def test_every_pydicom_test_file_gets_a_logged_status_and_reason(service):
    files = [Path(f) for f in get_testdata_files() if not f.endswith((".py", ".pyc"))]
    assert len(files) > 50
    out = service.process([InferenceRequest(f, "external", RECEIVED) for f in files])
    logs = pd.DataFrame(out.logs)
    assert len(logs) == len(files)
    assert set(logs["status"]) <= {"ok", "error", "rejected"}
    failed = logs[logs.status != "ok"]
    assert failed["error_type"].notna().all() and failed["error_detail"].str.len().gt(0).all()
    assert {"not_chest_radiograph", "dicom_read_error"} <= set(failed["error_type"])
    assert failed["error_detail"].map(lambda d: "\n" not in d and "force=True" not in d).all()
    # Every refused file has an id of its own (its place and bytes). The only key that repeats is a study's: pydicom
    # ships RG1, one CR chest, in four encodings under one StudyInstanceUID, and the store keeps the first.
    names = pd.Series([f.name for f in files], index=logs.index)
    repeated = logs["study_id"].duplicated(keep=False)
    assert set(names[repeated]) == {"RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"}
    assert {e.reason.split(" with ")[0].split(" of ")[0] for e in validate_frame("inference_logs", logs).errors} <= {
        "repeats the key"
    }


def test_unreadable_files_are_told_apart_by_place_and_bytes(tmp_path, service):
    junk = b"\x00" * 128 + b"DICM" + b"cut short"
    a, b = tmp_path / "site-a" / "IM0001.dcm", tmp_path / "site-b" / "IM0001.dcm"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(junk)
    requests = [InferenceRequest(a, "st-anna", RECEIVED), InferenceRequest(b, "lakeside", RECEIVED)]
    first = [row["study_id"] for row in service.process(requests).logs]
    assert len(set(first)) == 2  # same name, same bytes, two folders and sites: two rows
    assert [row["study_id"] for row in service.process(requests).logs] == first  # a re-run upserts the same rows
    moved = service.process([InferenceRequest(b, "st-anna", RECEIVED)]).logs[0]["study_id"]
    assert moved not in first  # the site is part of the source
    b.write_bytes(junk + b"!")
    changed = service.process([requests[1]]).logs[0]
    assert changed["study_id"] != first[1] and changed["error_type"] == "dicom_read_error"
    assert changed["error_detail"].startswith("IM0001.dcm: ") and str(tmp_path) not in changed["error_detail"]
    gone = service.process([InferenceRequest(tmp_path / "gone.dcm", "st-anna", RECEIVED)]).logs[0]
    assert gone["error_detail"] == "gone.dcm: cannot read the file (No such file or directory)"


def test_a_hand_radiograph_is_rejected_not_scored(tmp_path, service):
    import pydicom

    [request] = requests_for_day(tmp_path, 1)
    ds = pydicom.dcmread(request.path)
    ds.BodyPartExamined = "HAND"
    hand = tmp_path / "hand.dcm"
    ds.save_as(hand)
    out = service.process([InferenceRequest(hand, request.site, RECEIVED)])
    assert out.studies == []
    row = out.logs[0]
    assert (row["status"], row["error_type"]) == ("rejected", "not_chest_radiograph")
    assert row["error_detail"] == "hand.dcm: not a chest radiograph: body part 'HAND' (BodyPartExamined)"
    assert "prob_abnormal" not in row


def test_collimation_detector():
    field = np.random.default_rng(0).uniform(0.2, 0.8, (100, 100)).astype(np.float32)
    assert not collimation_cuts_apex(field)
    cut = field.copy()
    cut[:30] = 0.0
    assert collimation_cuts_apex(cut)
    thin = field.copy()
    thin[:5] = 0.0
    assert not collimation_cuts_apex(thin)
