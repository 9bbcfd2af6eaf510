"""Dataset snapshots: a frozen, content-hashed list of labeled studies with their split, kept in the store.

A snapshot is built from what the store knows up to a cutoff:

- radiologists' outcomes (``feedback.final_abnormal``) of stored studies, the base training data;
- annotations from Label Studio (``labels``), one label per study by precedence: an
  ``adjudication`` label wins; else the strict majority of two or more annotators ("consensus");
  else the radiologist's outcome; else a single annotator's label ("single"), kept with a lower
  loss weight or dropped, as configured. A study the adjudicator (or most annotators) marked
  unusable is left out, as is one whose annotators tie with no outcome to fall back on, and
  (configurable) one the production service rejected as not judgeable.

A seeded share of patients, chosen by a keyed hash of their pseudonymous key alone
(:func:`reserved_for_testing`), is reserved for the validation test sets and never trains: the
sets draw a site's or scanner's evidence from them as its labels come in, so a hospital that joins
later is judged on patients no candidate has seen. The reservation does not depend on time, on the
label or on what else the store holds.

Studies are split by patient (the pseudonymous ``studies.patient_key``, else the study itself),
so no patient is in two splits, and stratified by label and site: within each label, patients
are ordered by (site, keyed hash) and the splits take evenly spaced positions of that order
(a golden-ratio sequence), so each site contributes to each split in proportion. Nothing
depends on random state or row order: the same store gives the same items and the same hash.
Because positions are ranks, a later snapshot with more patients may put an earlier patient in
another split; each snapshot on its own never leaks.

The hash is the SHA-256 of the items' canonical CSV (32 hex characters, the MLflow digest);
storing a snapshot whose hash is already stored writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine

from pipeline.store import insert_for
from pipeline.store.schema import (
    SNAPSHOT_HASH_LENGTH,
    Status,
    dataset_snapshots,
    feedback,
    inference_logs,
    labels,
    snapshot_items,
    studies,
    test_set_items,
)
from pipeline.training.train import TrainingDataError

if TYPE_CHECKING:
    from mlflow.data.pandas_dataset import PandasDataset

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
ITEM_COLUMNS: tuple[str, ...] = ("study_id", "dicom_uri", "label", "split", "site", "source", "weight", "patient_key")
HASHED_COLUMNS: tuple[str, ...] = ("study_id", "dicom_uri", "label", "split", "site", "source", "weight")
ADJUDICATION_PROJECT = "adjudication"
#: The share of patients reserved for the validation test sets, and the key of the hash that chooses them.
RESERVE_SHARE = 0.25
RESERVE_SALT = "reserve-v1"
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class SnapshotNotFound(LookupError):
    """No snapshot with this hash is stored."""


class SnapshotCorrupt(ValueError):
    """A stored snapshot's items no longer hash to its key."""


class SnapshotConfig(BaseModel):
    """What goes into a snapshot and how it is split.

    Args:
        cutoff: only outcomes reported and annotations last updated at or before this time (UTC);
            None takes everything in the store.
        sites: only studies of these sites (None: all).
        acquired_from: only studies acquired at or after this time.
        acquired_until: only studies acquired before this time.
        use_feedback: take radiologists' outcomes (the base training data).
        use_labels: take annotations from ``labels``.
        single_labels: ``"keep"`` a study only one annotator labeled (at ``single_label_weight``) or ``"drop"`` it.
        single_label_weight: loss weight of a single annotator's label, in (0, 1].
        exclude_rejected: leave out studies the production service rejected (not a chest
            radiograph, organ not fully captured).
        exclude_test_sets: leave out every study of a stored validation test set (any version), so a
            candidate is never judged on studies it trained on.
        exclude_reserved: leave out the patients reserved for the test sets (:func:`reserved_for_testing`).
        reserve_share, reserve_salt: which patients those are (the test sets' configuration must agree).
        val_fraction: share of each label's patients in validation.
        test_fraction: share of each label's patients in test (0: no test split).
        split_salt: keyed into the patients' order; another salt gives other (equally valid) splits.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cutoff: datetime | None = None
    sites: tuple[str, ...] | None = None
    acquired_from: datetime | None = None
    acquired_until: datetime | None = None
    use_feedback: bool = True
    use_labels: bool = True
    single_labels: Literal["keep", "drop"] = "keep"
    single_label_weight: float = Field(0.5, gt=0.0, le=1.0)
    exclude_rejected: bool = True
    exclude_test_sets: bool = True
    exclude_reserved: bool = True
    reserve_share: float = Field(RESERVE_SHARE, ge=0.0, lt=0.9)
    reserve_salt: str = RESERVE_SALT
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    split_salt: str = "split-v1"

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> SnapshotConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    def required_splits(self) -> tuple[str, ...]:
        """Return the splits a trainable snapshot must fill with both classes."""
        return SPLITS if self.test_fraction > 0 else SPLITS[:2]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A frozen training set.

    Args:
        hash: 32 hex characters of SHA-256 over the items (see :func:`content_hash`).
        items: one row per study, columns ``ITEM_COLUMNS``, sorted by study id.
        params: the config of the build that first stored it (JSON values).
        excluded: studies left out, by reason (``unusable``, ``tied``, ``single_dropped``,
            ``rejected``, ``no_study``).
        created_at: when it was first stored (None before it is stored).
    """

    hash: str
    items: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    created_at: datetime | None = None

    def counts(self) -> dict[str, int]:
        """Return studies per split and label (``train_normal``, ``val_abnormal``...) and per exclusion reason."""
        out: dict[str, int] = {}
        for split in SPLITS:
            part = self.items[self.items["split"] == split]
            out[f"{split}_normal"] = int((part["label"] == 0).sum())
            out[f"{split}_abnormal"] = int((part["label"] == 1).sum())
        out["total"] = len(self.items)
        out |= {f"excluded_{reason}": n for reason, n in sorted(self.excluded.items())}
        return out

    def split_items(self, split: str) -> list[dict[str, Any]]:
        """Return ``split``'s studies as ``train()`` takes them: image path, label, loss weight, study id."""
        part = self.items[self.items["split"] == split]
        return [
            {"image": uri, "label": int(label), "weight": float(weight), "study_id": study_id}
            for study_id, uri, label, weight in zip(
                part["study_id"], part["dicom_uri"], part["label"], part["weight"], strict=True
            )
        ]

    def train_items(self) -> list[dict[str, Any]]:
        """Return the training split (see :meth:`split_items`)."""
        return self.split_items("train")

    def val_items(self) -> list[dict[str, Any]]:
        """Return the validation split (see :meth:`split_items`)."""
        return self.split_items("val")

    def test_items(self) -> list[dict[str, Any]]:
        """Return the test split (see :meth:`split_items`)."""
        return self.split_items("test")


# --- pure functions ---------------------------------------------------------------------------


def resolve_labels(votes: pd.DataFrame, config: SnapshotConfig) -> pd.DataFrame:
    """Return one label per study from its annotations, or why it has none.

    Args:
        votes: one row per annotation: ``study_id``, ``project``, ``annotator``, ``abnormal``
            (bool or None), ``unusable`` (bool), ``annotation_id`` (later ids are later annotations).
        config: what to do with a single annotator's label.

    Returns:
        Indexed by study id: ``label`` (0/1, or <NA>), ``source`` (``adjudication``, ``consensus``,
        ``single``) and ``weight``, or ``excluded`` (``unusable``, ``tied``, ``single_dropped``)
        when there is no label. ``tied`` and ``single`` studies may still take a radiologist's
        outcome (see :func:`choose_labels`).
    """
    columns = ["label", "source", "weight", "excluded"]
    if votes.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="study_id"))
    ordered = votes.sort_values("annotation_id")
    # an annotator who answered twice counts once, with the later answer
    latest = ordered.drop_duplicates(["study_id", "project", "annotator"], keep="last")
    rows: dict[str, dict[str, Any]] = {}
    for study_id, group in latest.groupby("study_id", sort=True):
        adjudicated = group[group["project"] == ADJUDICATION_PROJECT]
        if not adjudicated.empty:
            final = adjudicated.iloc[-1]
            if bool(final["unusable"]) or pd.isna(final["abnormal"]):
                rows[str(study_id)] = {"excluded": "unusable"}
            else:
                rows[str(study_id)] = {"label": int(bool(final["abnormal"])), "source": "adjudication", "weight": 1.0}
            continue
        usable = group[~group["unusable"].astype(bool) & group["abnormal"].notna()]
        n_unusable = len(group) - len(usable)
        if n_unusable > 0 and n_unusable >= len(usable):
            rows[str(study_id)] = {"excluded": "unusable"}
            continue
        abnormal = int(usable["abnormal"].astype(bool).sum())
        normal = len(usable) - abnormal
        if len(usable) >= 2 and abnormal != normal:
            rows[str(study_id)] = {"label": int(abnormal > normal), "source": "consensus", "weight": 1.0}
        elif len(usable) >= 2:
            rows[str(study_id)] = {"excluded": "tied"}
        elif config.single_labels == "keep":
            rows[str(study_id)] = {"label": abnormal, "source": "single", "weight": config.single_label_weight}
        else:
            rows[str(study_id)] = {"label": abnormal, "source": "single", "excluded": "single_dropped"}
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    frame.index.name = "study_id"
    frame["label"] = frame["label"].astype("Int64")
    return frame


def choose_labels(outcomes: pd.Series, annotated: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the label of every study (adjudication > consensus > radiologist's outcome > single) and exclusions.

    Args:
        outcomes: study id -> radiologist's ``final_abnormal`` (bool).
        annotated: the result of :func:`resolve_labels`.

    Returns:
        ``(labels, excluded)``: indexed by study id with ``label``, ``source``, ``weight``; and the
        number of studies left out per reason.
    """
    chosen: dict[str, dict[str, Any]] = {
        str(study_id): {"label": int(bool(value)), "source": "feedback", "weight": 1.0}
        for study_id, value in outcomes.items()
    }
    excluded: dict[str, int] = {}
    for study_id, row in annotated.iterrows():
        study = str(study_id)
        reason = row["excluded"]
        strong = row["source"] in ("adjudication", "consensus") and pd.isna(reason)
        if strong:
            chosen[study] = {"label": int(row["label"]), "source": row["source"], "weight": float(row["weight"])}
        elif reason == "unusable":
            chosen.pop(study, None)
            excluded["unusable"] = excluded.get("unusable", 0) + 1
        elif study in chosen:
            continue  # tied or single annotators: the radiologist's outcome stands
        elif pd.isna(reason):
            chosen[study] = {"label": int(row["label"]), "source": row["source"], "weight": float(row["weight"])}
        else:
            excluded[str(reason)] = excluded.get(str(reason), 0) + 1
    frame = pd.DataFrame.from_dict(chosen, orient="index", columns=["label", "source", "weight"])
    frame.index.name = "study_id"
    return frame.sort_index(), excluded


def _order_key(salt: str, patient_key: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{patient_key}".encode()).hexdigest()


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Return (validation, test) patients out of ``n``: rounded shares, at least one each once ``n`` allows."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        n_val = max(n_val, 1)
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    n_test = min(n_test, max(n - 1 - n_val, 0))
    return n_val, n_test


def assign_splits(
    frame: pd.DataFrame, *, val_fraction: float, test_fraction: float, salt: str = "split-v1"
) -> pd.Series:
    """Return the split (``train``, ``val``, ``test``) of each row, by patient, stratified by label and site.

    Args:
        frame: one row per study: ``study_id``, ``patient_key``, ``site``, ``label``.
        val_fraction: share of each label's patients in validation.
        test_fraction: share of each label's patients in test.
        salt: keyed into the patients' order.

    Returns:
        The split per row of ``frame`` (same index). A patient with any abnormal study counts as
        abnormal, at the site of their first study (by study id); all their studies share a split.
    """
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    ordered = frame.sort_values("study_id")
    patients = ordered.groupby("patient_key", sort=True).agg(site=("site", "first"), label=("label", "max"))
    patients["order"] = [_order_key(salt, str(k)) for k in patients.index]
    split_of: dict[str, str] = {}
    for _, group in patients.groupby("label", sort=True):
        group = group.sort_values(["site", "order"])
        n = len(group)
        n_val, n_test = _split_counts(n, val_fraction, test_fraction)
        # evenly spread positions: any run of one site's patients gets its share of each split
        spread = np.argsort(np.mod((np.arange(n) + 0.5) * _GOLDEN, 1.0), kind="stable")
        splits = np.full(n, "train", dtype=object)
        splits[spread[:n_test]] = "test"
        splits[spread[n_test : n_test + n_val]] = "val"
        split_of.update(zip(group.index.astype(str), splits, strict=True))
    return frame["patient_key"].astype(str).map(split_of)


def content_hash(items: pd.DataFrame) -> str:
    """Return the snapshot hash of ``items``: SHA-256 of the canonical CSV of ``HASHED_COLUMNS``, 32 hex characters.

    Rows are sorted by study id and weights written with 6 decimals, so row order and float
    noise from a database round trip do not change it.
    """
    canonical = items.loc[:, list(HASHED_COLUMNS)].sort_values("study_id").copy()
    canonical["label"] = canonical["label"].astype(int)
    canonical["weight"] = [f"{w:.6f}" for w in canonical["weight"].astype(float)]
    text = canonical.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:SNAPSHOT_HASH_LENGTH]


def reserved_for_testing(
    patient_keys: pd.Series | list[str], share: float = RESERVE_SHARE, salt: str = RESERVE_SALT
) -> np.ndarray:
    """Return, per patient key, whether that patient is reserved for the validation test sets.

    The first 52 bits of SHA-256 over the salt and the key, as a fraction of 2**52, below ``share``: a fixed,
    seeded share of every site's patients, known before any of their studies is labeled.
    """
    keys = [str(k) for k in patient_keys]
    if share <= 0.0:
        return np.zeros(len(keys), dtype=bool)
    fraction = [int(hashlib.sha256(f"{salt}\x1f{k}".encode()).hexdigest()[:13], 16) / 2**52 for k in keys]
    return np.asarray(fraction, dtype=np.float64) < share


def check_trainable(items: pd.DataFrame, required: tuple[str, ...] = SPLITS, *, what: str = "snapshot") -> None:
    """Raise :class:`TrainingDataError` unless every split of ``required`` has normal and abnormal studies.

    The message names each split and what it lacks, e.g. ``the validation split has no abnormal studies``.
    """
    problems = []
    for split in required:
        part = items[items["split"] == split]
        name = SPLIT_NAMES[split]
        if part.empty:
            problems.append(f"the {name} split is empty")
            continue
        for label, kind in ((0, "normal"), (1, "abnormal")):
            if not (part["label"] == label).any():
                problems.append(f"the {name} split has no {kind} studies ({len(part)} {SPLIT_NAMES[split]} studies)")
    if problems:
        summary = ", ".join(f"{s} {int((items['split'] == s).sum())}" for s in SPLITS)
        raise TrainingDataError(
            f"{what} cannot train a model: {'; '.join(problems)} (studies per split: {summary}); "
            "widen the cutoff, sites or date window, or wait for more labels"
        )


# --- the store ---------------------------------------------------------------------------------


def _study_filters(config: SnapshotConfig) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if config.sites is not None:
        where.append(studies.c.site.in_(list(config.sites)))
    if config.acquired_from is not None:
        where.append(studies.c.acquired_at >= config.acquired_from)
    if config.acquired_until is not None:
        where.append(studies.c.acquired_at < config.acquired_until)
    if config.exclude_test_sets:
        where.append(~sa.exists().where(test_set_items.c.study_id == studies.c.study_id))
    return where


def _read(engine: Engine, query: sa.Select[Any]) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _candidates(engine: Engine, config: SnapshotConfig) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, int]:
    """Return (studies in scope, their outcomes, their annotations, annotated studies the store does not hold).

    Every query joins on the study id rather than passing id lists, so a large store costs no
    giant ``IN`` list (SQLite caps parameters).
    """
    in_scope = sa.and_(sa.true(), *_study_filters(config))
    outcome_known = sa.and_(
        feedback.c.study_id == studies.c.study_id,
        *([feedback.c.reported_at <= config.cutoff] if config.cutoff is not None else []),
    )
    label_known = [labels.c.updated_at <= config.cutoff] if config.cutoff is not None else []

    outcomes = pd.Series(dtype=bool)
    if config.use_feedback:
        frame = _read(engine, sa.select(feedback.c.study_id, feedback.c.final_abnormal).where(outcome_known, in_scope))
        outcomes = frame.set_index("study_id")["final_abnormal"].astype(bool)

    votes = pd.DataFrame(columns=["study_id", "project", "annotator", "abnormal", "unusable", "annotation_id"])
    orphans = 0
    if config.use_labels:
        frame = _read(
            engine,
            sa.select(
                labels.c.study_id,
                labels.c.project,
                labels.c.annotator,
                labels.c.abnormal,
                labels.c.unusable,
                labels.c.annotation_id,
                studies.c.site,
            )
            .outerjoin(studies, studies.c.study_id == labels.c.study_id)
            .where(*label_known, sa.or_(studies.c.study_id.is_(None), in_scope)),
        )
        missing = frame["site"].isna()
        orphans = int(frame.loc[missing, "study_id"].nunique())
        votes = frame.loc[~missing].drop(columns="site")

    sources = []
    if config.use_feedback:
        sources.append(sa.exists().where(outcome_known))
    if config.use_labels:
        sources.append(sa.exists().where(labels.c.study_id == studies.c.study_id, *label_known))
    info = _read(
        engine,
        sa.select(studies.c.study_id, studies.c.dicom_uri, studies.c.site, studies.c.patient_key).where(
            in_scope, sa.or_(sa.false(), *sources)
        ),
    )
    return info.set_index("study_id"), outcomes, votes, orphans


def _rejected(engine: Engine, config: SnapshotConfig) -> set[str]:
    """Return the studies in scope that the production service rejected (under any model version)."""
    query = (
        sa.select(inference_logs.c.study_id)
        .join(studies, studies.c.study_id == inference_logs.c.study_id)
        .where(inference_logs.c.status == Status.REJECTED.value, *_study_filters(config))
        .distinct()
    )
    return set(_read(engine, query)["study_id"])


def collect_items(engine: Engine, config: SnapshotConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the snapshot items the store gives under ``config`` (sorted by study id) and the exclusions."""
    info, outcomes, votes, orphans = _candidates(engine, config)
    chosen, excluded = choose_labels(outcomes, resolve_labels(votes, config))
    if orphans:
        excluded["no_study"] = orphans
    if config.exclude_rejected:
        rejected = _rejected(engine, config) & set(chosen.index)
        if rejected:
            chosen = chosen.drop(index=sorted(rejected))
            excluded["rejected"] = len(rejected)
    items = chosen.join(info, how="inner").reset_index()
    no_key = items["patient_key"].isna()
    items.loc[no_key, "patient_key"] = items.loc[no_key, "study_id"]  # no PatientID: the study is its own patient
    if config.exclude_reserved and len(items):
        reserved = reserved_for_testing(items["patient_key"], config.reserve_share, config.reserve_salt)
        if reserved.any():
            items = items.loc[~reserved].reset_index(drop=True)
            excluded["reserved_for_testing"] = int(reserved.sum())
    items["label"] = items["label"].astype(int)
    items["weight"] = items["weight"].astype(float)
    items["split"] = assign_splits(
        items, val_fraction=config.val_fraction, test_fraction=config.test_fraction, salt=config.split_salt
    )
    return items.loc[:, list(ITEM_COLUMNS)].sort_values("study_id").reset_index(drop=True), excluded


def _counts_json(items: pd.DataFrame, excluded: Mapping[str, int]) -> str:
    per_split = {
        s: {"normal": int(((items["split"] == s) & (items["label"] == 0)).sum()), "abnormal": 0} for s in SPLITS
    }
    for s in SPLITS:
        per_split[s]["abnormal"] = int(((items["split"] == s) & (items["label"] == 1)).sum())
    return json.dumps({"splits": per_split, "excluded": dict(sorted(excluded.items()))}, sort_keys=True)


def _store(engine: Engine, snapshot_hash: str, items: pd.DataFrame, params: str, counts: str) -> bool:
    """Write the snapshot unless its hash is stored; return whether it was written."""
    insert = insert_for(engine)
    header = {
        "snapshot_hash": snapshot_hash,
        "created_at": datetime.now(UTC),
        "params": params,
        "counts": counts,
        "n_items": len(items),
    }
    with engine.begin() as conn:
        written = conn.execute(insert(dataset_snapshots).on_conflict_do_nothing(), [header]).rowcount
        if written != 1:
            return False
        rows = items.assign(snapshot_hash=snapshot_hash).astype(object).to_dict("records")
        conn.execute(sa.insert(snapshot_items), rows)
    return True


def build_snapshot(engine: Engine, config: SnapshotConfig | None = None) -> Snapshot:
    """Build the snapshot the store gives under ``config``, store it (once per hash) and return it.

    Raises:
        TrainingDataError: a required split is empty or lacks a class (nothing is stored); the
            message names each split and what it lacks.
    """
    config = config or SnapshotConfig()
    items, excluded = collect_items(engine, config)
    snapshot_hash = content_hash(items)
    check_trainable(items, config.required_splits(), what=f"snapshot {snapshot_hash}")
    params = config.model_dump(mode="json")
    written = _store(engine, snapshot_hash, items, json.dumps(params, sort_keys=True), _counts_json(items, excluded))
    log.info(
        "snapshot %s: %d studies (%s)%s",
        snapshot_hash,
        len(items),
        ", ".join(f"{k} {v}" for k, v in _flat_counts(items, excluded).items()),
        "" if written else ", already stored",
    )
    return load_snapshot(engine, snapshot_hash)


def _flat_counts(items: pd.DataFrame, excluded: Mapping[str, int]) -> dict[str, int]:
    return Snapshot("", items, excluded=dict(excluded)).counts()


def load_snapshot(engine: Engine, snapshot_hash: str) -> Snapshot:
    """Return the stored snapshot ``snapshot_hash``.

    Raises:
        SnapshotNotFound: none is stored under that hash.
        SnapshotCorrupt: its items no longer hash to it.
    """
    with engine.connect() as conn:
        header = conn.execute(
            sa.select(dataset_snapshots).where(dataset_snapshots.c.snapshot_hash == snapshot_hash)
        ).one_or_none()
    if header is None:
        raise SnapshotNotFound(f"no dataset snapshot {snapshot_hash!r} in the store")
    items = _read(
        engine,
        sa.select(*(snapshot_items.c[c] for c in ITEM_COLUMNS))
        .where(snapshot_items.c.snapshot_hash == snapshot_hash)
        .order_by(snapshot_items.c.study_id),
    )
    items["label"] = items["label"].astype(int)
    items["weight"] = items["weight"].astype(float)
    actual = content_hash(items)
    if actual != snapshot_hash:
        raise SnapshotCorrupt(f"snapshot {snapshot_hash}: its {len(items)} stored items hash to {actual}")
    counts = json.loads(header.counts)
    return Snapshot(
        hash=snapshot_hash,
        items=items,
        params=json.loads(header.params),
        excluded={str(k): int(v) for k, v in counts.get("excluded", {}).items()},
        created_at=header.created_at if header.created_at.tzinfo else header.created_at.replace(tzinfo=UTC),
    )


def as_mlflow_dataset(snapshot: Snapshot) -> PandasDataset:
    """Return ``snapshot`` as an MLflow dataset (digest = the snapshot hash) for ``mlflow.log_input``."""
    from mlflow.data.pandas_dataset import from_pandas

    return from_pandas(
        snapshot.items.loc[:, list(HASHED_COLUMNS)],
        targets="label",
        name=f"snapshot-{snapshot.hash[:12]}",
        digest=snapshot.hash,
    )
