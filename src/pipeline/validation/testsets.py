"""Fixed, versioned test sets built from the store: what every candidate is validated on.

Four kinds, each stored under its content hash (building again from the same store stores nothing;
a new version appears only when the labeled studies change and someone rebuilds):

* ``regression``: a stable sample of labeled studies from every site (their natural label mix,
  unusual studies left out). The operating point is chosen on it.
* ``real_balance:<site>``: one per site, the site's labeled studies resampled to its screening
  prevalence (5% abnormal by default): the share filtered as normal is measured here.
* ``typical_errors``: studies where the radiologist overturned the model (``feedback.agrees_with_model``
  false): the known, confirmed errors a candidate must make fewer of.
* ``unusual``: children, scanners of rare manufacturers, images annotators marked unusable for
  positioning or artefacts (foreign objects). An unusable image must reach a radiologist, so it
  counts as not normal (label 1).

Labels come from the label store as snapshots take them (adjudicated annotations first, then the
radiologists' outcomes; ``pipeline.training.snapshot.collect_items``). Studies are ordered by a keyed
hash of their id, so a rebuild on a grown store keeps the studies it had where it can.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from pipeline.store.schema import feedback, labels, studies, test_set_items, test_sets
from pipeline.training.snapshot import SnapshotConfig, collect_items

log = logging.getLogger(__name__)

REGRESSION = "regression"
REAL_BALANCE = "real_balance"
TYPICAL_ERRORS = "typical_errors"
UNUSUAL = "unusual"
ITEM_COLUMNS = ("study_id", "dicom_uri", "label", "site", "patient_key", "reason")


class TestSetNotFound(LookupError):
    """No test set of that name (or hash) is stored."""

    __test__ = False  # not a pytest class


class TestSetConfig(BaseModel):
    """How the test sets are drawn from the store.

    Args:
        cutoff: only labels known at or before this time (None: everything in the store).
        regression_size: studies in the regression set at most.
        per_site: studies in each real-balance set at most.
        prevalence: the screening prevalence of the real-balance sets (share abnormal).
        prevalence_by_site: a site whose screening prevalence differs.
        child_age: patients younger than this (years) are unusual.
        rare_manufacturer_share: a manufacturer with fewer of the labeled studies than this share is unusual.
        salt: keyed into the studies' order; another salt draws other (equally valid) sets.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    __test__ = False  # not a pytest class

    cutoff: datetime | None = None
    regression_size: int = Field(2000, gt=0)
    per_site: int = Field(1000, gt=0)
    prevalence: float = Field(0.05, gt=0.0, lt=1.0)
    prevalence_by_site: dict[str, float] = Field(default_factory=dict)
    child_age: float = Field(16.0, gt=0.0)
    rare_manufacturer_share: float = Field(0.05, ge=0.0, lt=1.0)
    salt: str = "testsets-v1"


@dataclass(frozen=True, eq=False)
class TestSet:
    """One stored version of a test set: ``items`` has ``ITEM_COLUMNS``, sorted by study id."""

    __test__ = False  # not a pytest class

    name: str
    hash: str
    items: pd.DataFrame
    created_at: datetime | None = None

    @property
    def n_abnormal(self) -> int:
        return int(self.items["label"].sum())

    def describe(self) -> str:
        return f"{self.name} {self.hash[:8]} ({len(self.items)} studies, {self.n_abnormal} abnormal)"


def _order(salt: str, ids: pd.Series) -> np.ndarray:
    keys = [hashlib.sha256(f"{salt}\x1f{i}".encode()).hexdigest() for i in ids]
    return np.argsort(np.array(keys, dtype=object), kind="stable")


def content_hash(name: str, items: pd.DataFrame) -> str:
    """Return the set's hash: SHA-256 over its name and the canonical CSV of its items, 32 hex characters."""
    canonical = items.loc[:, list(ITEM_COLUMNS)].sort_values("study_id")
    canonical = canonical.assign(label=canonical["label"].astype(int))
    text = name + "\n" + canonical.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _read(engine: Engine, query: sa.Select[Any]) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _unusable(engine: Engine, config: TestSetConfig) -> pd.DataFrame:
    """Return studies an annotator marked unusable for positioning or artefacts, with that reason."""
    where: list[sa.ColumnElement[bool]] = [labels.c.unusable.is_(True)]
    if config.cutoff is not None:
        where.append(labels.c.updated_at <= config.cutoff)
    frame = _read(
        engine,
        sa.select(
            labels.c.study_id, labels.c.unusable_reasons, studies.c.dicom_uri, studies.c.site, studies.c.patient_key
        )
        .join(studies, studies.c.study_id == labels.c.study_id)
        .where(*where),
    )
    rows = []
    for row in frame.itertuples(index=False):
        reasons = set(str(row.unusable_reasons).split(","))
        reason = "positioning" if "positioning" in reasons else ("artefact" if "artefact" in reasons else None)
        if reason is not None:
            rows.append((row.study_id, row.dicom_uri, 1, row.site, row.patient_key or row.study_id, reason))
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS)).drop_duplicates("study_id")


def labeled_pool(engine: Engine, config: TestSetConfig) -> pd.DataFrame:
    """Return every labeled study with what the sets are drawn by: label, site, age, manufacturer, the model's verdict."""
    # the pool is every labeled study, the ones earlier versions of the sets hold included
    items, _ = collect_items(engine, SnapshotConfig(cutoff=config.cutoff, test_fraction=0.0, exclude_test_sets=False))
    if items.empty:
        return items.assign(patient_age_years=[], manufacturer=[], overturned=[])
    facts = _read(
        engine,
        sa.select(
            studies.c.study_id,
            studies.c.patient_age_years,
            studies.c.manufacturer,
            feedback.c.agrees_with_model,
        ).outerjoin(feedback, feedback.c.study_id == studies.c.study_id),
    ).set_index("study_id")
    pool = items.join(facts, on="study_id")
    pool["overturned"] = pool["agrees_with_model"].eq(False)
    return pool.drop(columns=["agrees_with_model"])


def draw_test_sets(pool: pd.DataFrame, unusable: pd.DataFrame, config: TestSetConfig) -> dict[str, pd.DataFrame]:
    """Return the items of every test set drawn from ``pool`` (labeled studies) and ``unusable`` (a pure function)."""
    pool = pool.iloc[_order(config.salt, pool["study_id"])] if len(pool) else pool
    columns = list(ITEM_COLUMNS)
    manufacturer = pool["manufacturer"].fillna("<missing>")
    shares = manufacturer.value_counts(normalize=True)
    rare = manufacturer.map(shares) < config.rare_manufacturer_share
    child = pool["patient_age_years"].astype(float) < config.child_age
    unusual = pool.loc[child | rare].assign(reason=np.where(child[child | rare], "child", "rare_manufacturer"))
    unusual = pd.concat([unusual.loc[:, columns], unusable.loc[~unusable["study_id"].isin(unusual["study_id"])]])

    usual = pool.loc[~(child | rare) & ~pool["study_id"].isin(unusable["study_id"])]
    sets: dict[str, pd.DataFrame] = {UNUSUAL: unusual}
    sets[REGRESSION] = usual.head(config.regression_size).assign(reason="sample").loc[:, columns]
    for site, part in usual.groupby("site", sort=True):
        prevalence = config.prevalence_by_site.get(str(site), config.prevalence)
        abnormal, normal = part[part["label"] == 1], part[part["label"] == 0]
        n_abnormal = min(len(abnormal), round(config.per_site * prevalence))
        n_normal = min(len(normal), round(n_abnormal * (1 - prevalence) / prevalence) if n_abnormal else 0)
        n_abnormal = min(n_abnormal, round(n_normal * prevalence / (1 - prevalence)))
        chosen = pd.concat([abnormal.head(n_abnormal), normal.head(n_normal)])
        sets[f"{REAL_BALANCE}:{site}"] = chosen.assign(reason="screening_mix").loc[:, columns]
    errors = pool.loc[pool["overturned"]]
    sets[TYPICAL_ERRORS] = errors.assign(reason=np.where(errors["label"] == 1, "missed", "false_alarm")).loc[:, columns]
    return {name: items.sort_values("study_id").reset_index(drop=True) for name, items in sets.items()}


def _store(engine: Engine, name: str, items: pd.DataFrame, params: str) -> TestSet:
    digest = content_hash(name, items)
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    header = {
        "test_set_hash": digest,
        "name": name,
        "created_at": datetime.now(UTC),
        "params": params,
        "n_items": len(items),
        "n_abnormal": int(items["label"].sum()),
    }
    with engine.begin() as conn:
        if conn.execute(insert(test_sets).on_conflict_do_nothing(), [header]).rowcount == 1 and len(items):
            conn.execute(
                sa.insert(test_set_items), items.assign(test_set_hash=digest).astype(object).to_dict("records")
            )
    return load_test_set(engine, name, digest)


def build_test_sets(engine: Engine, config: TestSetConfig | None = None) -> dict[str, TestSet]:
    """Draw every test set from the store, store each new version, return them by name."""
    config = config or TestSetConfig()
    pool = labeled_pool(engine, config)
    drawn = draw_test_sets(pool, _unusable(engine, config), config)
    params = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    built = {name: _store(engine, name, items, params) for name, items in drawn.items()}
    for test_set in built.values():
        log.info("test set %s", test_set.describe())
    return built


def load_test_set(engine: Engine, name: str, test_set_hash: str | None = None) -> TestSet:
    """Return the stored version ``test_set_hash`` of ``name``, or its latest version.

    Raises:
        TestSetNotFound: no such set or version is stored.
    """
    query = sa.select(test_sets).where(test_sets.c.name == name)
    if test_set_hash is not None:
        query = query.where(test_sets.c.test_set_hash == test_set_hash)
    with engine.connect() as conn:
        header = conn.execute(query.order_by(test_sets.c.created_at.desc()).limit(1)).one_or_none()
    if header is None:
        which = f"version {test_set_hash} of " if test_set_hash else ""
        raise TestSetNotFound(f"no {which}test set {name!r} in the store: build them with `pipeline testsets`")
    items = _read(
        engine,
        sa.select(*(test_set_items.c[c] for c in ITEM_COLUMNS))
        .where(test_set_items.c.test_set_hash == header.test_set_hash)
        .order_by(test_set_items.c.study_id),
    )
    if items.empty:
        items = pd.DataFrame(columns=list(ITEM_COLUMNS))
    items["label"] = items["label"].astype(int)
    created = header.created_at if header.created_at.tzinfo else header.created_at.replace(tzinfo=UTC)
    return TestSet(name=name, hash=header.test_set_hash, items=items, created_at=created)


def latest_test_sets(engine: Engine) -> dict[str, TestSet]:
    """Return the latest stored version of every test set, by name (empty when none was built)."""
    with engine.connect() as conn:
        names = conn.execute(sa.select(test_sets.c.name).distinct()).scalars().all()
    return {name: load_test_set(engine, name) for name in sorted(names)}
