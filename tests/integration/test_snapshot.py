"""Dataset snapshots from a real store: simulated studies and outcomes, repeat patients, Label Studio labels."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.dicom import AcquisitionMeta, pseudonymize_patient_id, read_study, synthetic_study_meta, write_dicom
from pipeline.model import NetConfig
from pipeline.simulate import make_phantom
from pipeline.store import ingest, make_engine
from pipeline.store.schema import (
    TEST_SET_HASH_LENGTH,
    dataset_snapshots,
    feedback,
    labels,
    snapshot_items,
    studies,
    test_set_items,
    test_sets,
)
from pipeline.training import (
    SnapshotConfig,
    SnapshotNotFound,
    TrainConfig,
    TrainingDataError,
    as_mlflow_dataset,
    build_snapshot,
    load_snapshot,
    train,
)
from pipeline.training.snapshot import reserved_for_testing
from tests.worlds import small_world

pytestmark = pytest.mark.integration

# The label rules are checked on every patient (``exclude_reserved=False``); the test below the others checks
# that by default the patients reserved for the validation test sets never train.

KEY = "k"  # small_world's pseudonymisation key
REPEAT_PATIENTS = 4
STUDIES_EACH = 3
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _repeat_patients(engine: Engine, storage: Path) -> list[str]:
    """Write REPEAT_PATIENTS patients with STUDIES_EACH studies each (real DICOM, one PatientID), with outcomes."""
    study_rows, outcomes = [], []
    for p in range(REPEAT_PATIENTS):
        for s in range(STUDIES_EACH):
            meta = replace(
                synthetic_study_meta(100 * p + s, acquired_at=T0 + timedelta(days=s), age_years=60, sex="F"),
                patient_id=f"REPEAT{p:03d}",
            )
            path = write_dicom(
                storage / "repeat" / f"{p}-{s}.dcm",
                make_phantom(size=32, rng=100 * p + s).image,
                meta,
                AcquisitionMeta(institution_name="LAKESIDE"),
            )
            row = asdict(read_study(path, KEY)) | {"site": "lakeside", "dicom_uri": str(path)}
            study_rows.append(row)
            outcomes.append(
                {
                    "study_id": row["study_id"],
                    "site": "lakeside",
                    "reported_at": T0 + timedelta(days=s, hours=5),
                    "final_abnormal": (p + s) % 2 == 0,
                    "final_finding": "nodule" if (p + s) % 2 == 0 else "normal",
                }
            )
    ingest(engine, "studies", pd.DataFrame(study_rows), source="test:repeat")
    ingest(engine, "feedback", pd.DataFrame(outcomes), source="test:repeat")
    return [r["study_id"] for r in study_rows]


def _label(conn: sa.Connection, annotation_id: int, study_id: str, project: str, annotator: str, abnormal: bool | None):
    now = T0 + timedelta(days=10)
    conn.execute(
        sa.insert(labels),
        {
            "annotation_id": annotation_id,
            "task_id": annotation_id,
            "project": project,
            "study_id": study_id,
            "annotator": annotator,
            "abnormal": abnormal,
            "findings": "nodule" if abnormal else "",
            "unusable": abnormal is None,
            "unusable_reasons": "blurred" if abnormal is None else "",
            "created_at": now,
            "updated_at": now,
            "synced_at": now,
        },
    )


@pytest.fixture(scope="module")
def world(pg_database_factory, tmp_path_factory) -> tuple[str, Path, dict[str, str]]:
    """60 simulated studies with outcomes, 4 patients with 3 studies each, and annotations of 4 kinds."""
    url = pg_database_factory()
    storage = tmp_path_factory.mktemp("dicom")
    small_world(url, storage, per_site=20, image_px=32)
    engine = make_engine(url)
    try:
        _repeat_patients(engine, storage)
        with engine.connect() as conn:
            with_outcome = [r.study_id for r in conn.execute(sa.select(feedback.c.study_id).order_by("study_id"))]
            outcome_of = {
                r.study_id: r.final_abnormal
                for r in conn.execute(sa.select(feedback.c.study_id, feedback.c.final_abnormal))
            }
            without = [
                r.study_id
                for r in conn.execute(
                    sa.select(studies.c.study_id).where(studies.c.study_id.not_in(with_outcome)).order_by("study_id")
                )
            ]
        assert len(without) >= 3, "the small world should leave some studies without an outcome"
        cases = {
            "adjudicated": with_outcome[0],  # annotators split, the adjudicator overrules the outcome
            "single": without[0],  # one annotator, no outcome: a noisy label
            "unusable": with_outcome[1],  # both annotators: unusable
            "unusable_single": without[1],
        }
        flipped = not outcome_of[cases["adjudicated"]]
        with engine.begin() as conn:
            _label(conn, 1, cases["adjudicated"], "relabeling", "ann-a", not flipped)
            _label(conn, 2, cases["adjudicated"], "relabeling", "ann-b", flipped)
            _label(conn, 3, cases["adjudicated"], "adjudication", "chief", flipped)
            _label(conn, 4, cases["single"], "relabeling", "ann-a", True)
            _label(conn, 5, cases["unusable"], "relabeling", "ann-a", None)
            _label(conn, 6, cases["unusable"], "relabeling", "ann-b", None)
            _label(conn, 7, cases["unusable_single"], "relabeling", "ann-a", None)
            _label(conn, 8, "f" * 32, "relabeling", "ann-a", True)  # a study the store does not hold
        cases["flipped"] = str(int(flipped))
    finally:
        engine.dispose()
    return url, storage, cases


@pytest.fixture
def engine(world) -> Engine:
    engine = make_engine(world[0])
    yield engine
    with engine.begin() as conn:  # each test builds its own snapshots
        conn.execute(sa.delete(snapshot_items))
        conn.execute(sa.delete(dataset_snapshots))
    engine.dispose()


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_rebuilding_from_the_store_gives_the_same_hash_and_stores_it_once(engine):
    first = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    second = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    assert first.hash == second.hash and len(first.hash) == 32
    assert _count(engine, dataset_snapshots) == 1
    assert _count(engine, snapshot_items) == len(first.items)
    loaded = load_snapshot(engine, first.hash)
    pd.testing.assert_frame_equal(loaded.items, first.items)
    assert loaded.counts() == first.counts()
    counts = first.counts()
    assert counts["total"] == len(first.train_items()) + len(first.val_items()) + len(first.test_items())
    assert counts["excluded_unusable"] == 2 and counts["excluded_no_study"] == 1
    with pytest.raises(SnapshotNotFound):
        load_snapshot(engine, "0" * 32)


def test_no_patient_is_in_two_splits(engine, world):
    snapshot = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    items = snapshot.items
    assert (items.groupby("patient_key")["split"].nunique() == 1).all()
    repeat_keys = {pseudonymize_patient_id(f"REPEAT{p:03d}", KEY) for p in range(REPEAT_PATIENTS)}
    grouped = items[items["patient_key"].isin(repeat_keys)].groupby("patient_key").size()
    assert len(grouped) == REPEAT_PATIENTS and (grouped == STUDIES_EACH).all()
    # the store keeps the keyed hash, never the PatientID
    with engine.connect() as conn:
        stored = {r.patient_key for r in conn.execute(sa.select(studies.c.patient_key))}
    assert repeat_keys <= stored and not any(k and k.startswith("REPEAT") for k in stored)
    path = Path(items.loc[items["patient_key"].isin(repeat_keys), "dicom_uri"].iloc[0])
    assert pydicom.dcmread(path).PatientID.startswith("REPEAT")


def test_adjudicated_labels_win_and_single_labels_are_weighted_or_dropped(engine, world):
    _, _, cases = world
    kept = build_snapshot(engine, SnapshotConfig(exclude_reserved=False, single_label_weight=0.4)).items.set_index(
        "study_id"
    )
    assert kept.loc[cases["adjudicated"], ["label", "source"]].tolist() == [int(cases["flipped"]), "adjudication"]
    assert kept.loc[cases["single"], ["label", "source", "weight"]].tolist() == [1, "single", 0.4]
    assert cases["unusable"] not in kept.index and cases["unusable_single"] not in kept.index
    assert set(kept["source"]) == {"feedback", "adjudication", "single"}

    dropped = build_snapshot(engine, SnapshotConfig(exclude_reserved=False, single_labels="drop"))
    assert cases["single"] not in set(dropped.items["study_id"])
    assert dropped.counts()["excluded_single_dropped"] == 1
    assert _count(engine, dataset_snapshots) == 2  # two contents, two snapshots


def test_empty_and_single_class_snapshots_are_refused_before_anything_is_stored(engine):
    with pytest.raises(TrainingDataError, match="the training split is empty; the validation split is empty"):
        build_snapshot(engine, SnapshotConfig(exclude_reserved=False, sites=("nowhere",)))
    # without outcomes only the two labeled studies are left, both in training: the other splits are named
    with pytest.raises(TrainingDataError, match="the validation split is empty; the test split is empty") as caught:
        build_snapshot(engine, SnapshotConfig(exclude_reserved=False, use_feedback=False))
    assert "train 2, val 0, test 0" in str(caught.value)
    assert _count(engine, dataset_snapshots) == 0


def test_sites_and_a_cutoff_narrow_the_snapshot(engine):
    everything = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    one_site = build_snapshot(
        engine, SnapshotConfig(exclude_reserved=False, sites=("lakeside",), val_fraction=0.2, test_fraction=0.2)
    )
    assert set(one_site.items["site"]) == {"lakeside"}
    assert one_site.hash != everything.hash
    assert one_site.params["sites"] == ["lakeside"]

    cutoff = datetime(2026, 1, 10, tzinfo=UTC)  # outcomes arrive 1-7 days after 5 Jan; the labels on the 15th
    before = build_snapshot(engine, SnapshotConfig(exclude_reserved=False, cutoff=cutoff))
    assert set(before.items["source"]) == {"feedback"}
    assert 0 < len(before.items) < len(everything.items)
    with engine.connect() as conn:
        reported = dict(conn.execute(sa.select(feedback.c.study_id, feedback.c.reported_at)).all())
    assert all(reported[s] <= cutoff for s in before.items["study_id"])


def test_studies_held_out_in_a_test_set_never_train(engine):
    everything = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    held_out = everything.items.sort_values("study_id").iloc[::3]
    digest = "h" * TEST_SET_HASH_LENGTH
    with engine.begin() as conn:
        conn.execute(
            sa.insert(test_sets),
            [
                {
                    "test_set_hash": digest,
                    "name": "regression",
                    "created_at": T0,
                    "params": "{}",
                    "n_items": len(held_out),
                    "n_abnormal": int(held_out["label"].sum()),
                }
            ],
        )
        conn.execute(
            sa.insert(test_set_items),
            [
                {"test_set_hash": digest, "reason": "sample"}
                | {c: row[c] for c in ("study_id", "dicom_uri", "label", "site", "patient_key")}
                for row in held_out.to_dict("records")
            ],
        )
    try:
        kept = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
        assert not set(held_out["study_id"]) & set(kept.items["study_id"])
        assert len(kept.items) == len(everything.items) - len(held_out)
        assert kept.hash != everything.hash
        # only when asked: the set's studies are back
        assert (
            build_snapshot(engine, SnapshotConfig(exclude_reserved=False, exclude_test_sets=False)).hash
            == everything.hash
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(test_set_items))
            conn.execute(sa.delete(test_sets))


def test_a_snapshot_trains_and_becomes_an_mlflow_dataset(engine, tmp_path):
    snapshot = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    dataset = as_mlflow_dataset(snapshot)
    assert dataset.digest == snapshot.hash and snapshot.hash[:12] in dataset.name
    assert dataset.profile["num_rows"] == len(snapshot.items)
    config = TrainConfig(
        image_size=32, epochs=1, batch_size=16, net=NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))
    )
    result = train(snapshot.train_items(), snapshot.val_items(), config, progress=False)
    assert result.skipped == [] and len(result.val_labels) == len(snapshot.val_items())


def test_the_patients_reserved_for_the_test_sets_never_train(engine):
    everything = build_snapshot(engine, SnapshotConfig(exclude_reserved=False))
    trainable = build_snapshot(engine, SnapshotConfig())
    reserved = everything.items[reserved_for_testing(everything.items["patient_key"])]
    assert 0.1 < reserved["patient_key"].nunique() / everything.items["patient_key"].nunique() < 0.4
    assert set(trainable.items["study_id"]) == set(everything.items["study_id"]) - set(reserved["study_id"])
    assert trainable.counts()["excluded_reserved_for_testing"] == len(reserved)
