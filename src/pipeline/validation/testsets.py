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

The sets follow the population the champion serves (:func:`follow_served_population`, run before every
validation): every site and every scanner with a real share of a site's recent studies must have its
evidence in ``regression`` and its ``real_balance:<site>`` set. A site or scanner short of it (a hospital
that joined after the sets were first built, a new detector) gets the labeled studies of its reserved
patients added (the share of patients ``pipeline.training.snapshot.reserved_for_testing`` keeps out of
every training snapshot), as its labels come in, until it holds ``evidence_positives`` abnormal studies;
each change is a new version recorded with why. A release manager can freeze a version
(:func:`freeze_test_sets`): validation then judges on it, and a site it lacks fails the gate for
insufficient evidence rather than being added under the release manager's feet.

Labels come from the label store as snapshots take them (adjudicated annotations first, then the
radiologists' outcomes; ``pipeline.training.snapshot.collect_items``). Studies are ordered by a keyed
hash of their id, so a rebuild on a grown store keeps the studies it had where it can.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from pipeline.store import insert_for
from pipeline.store.schema import feedback, inference_logs, labels, studies, test_set_items, test_sets
from pipeline.training.snapshot import (
    RESERVE_SALT,
    RESERVE_SHARE,
    SnapshotConfig,
    collect_items,
    reserved_for_testing,
)

log = logging.getLogger(__name__)

REGRESSION = "regression"
REAL_BALANCE = "real_balance"
TYPICAL_ERRORS = "typical_errors"
UNUSUAL = "unusual"
ITEM_COLUMNS = ("study_id", "dicom_uri", "label", "site", "patient_key", "reason")
#: Labeled abnormal studies every served site and scanner needs in the test sets: the gate's default minimum
#: (``ValidationConfig.min_positives`` says how it was chosen), what the sets fill towards and retraining waits for.
EVIDENCE_POSITIVES = 40
#: The column naming a study's scanner (manufacturer and model, :func:`scanner_name`) wherever units are matched.
SCANNER = "scanner"


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
        evidence_positives: a served site or scanner with fewer abnormal studies than this in ``regression`` and
            its real-balance set gets its reserved patients' labeled studies added (the gate's ``min_positives``).
        served_days: the served population is what the log store holds of the last this many days.
        scanner_min_share: a scanner with at least this share of a site's served studies is judged on its own.
        reserve_share, reserve_salt: the patients reserved for the test sets (the snapshots' must agree).
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
    evidence_positives: int = Field(EVIDENCE_POSITIVES, ge=1)
    served_days: int = Field(14, ge=1)
    scanner_min_share: float = Field(0.05, ge=0.0, le=1.0)
    reserve_share: float = Field(RESERVE_SHARE, ge=0.0, lt=0.9)
    reserve_salt: str = RESERVE_SALT


@dataclass(frozen=True, eq=False)
class TestSet:
    """One stored version of a test set: ``items`` has ``ITEM_COLUMNS``, sorted by study id."""

    __test__ = False  # not a pytest class

    name: str
    hash: str
    items: pd.DataFrame
    created_at: datetime | None = None
    reason: str = ""
    frozen_by: str | None = None

    @property
    def n_abnormal(self) -> int:
        return int(self.items["label"].sum())

    def describe(self) -> str:
        frozen = f", frozen by {self.frozen_by}" if self.frozen_by else ""
        return f"{self.name} {self.hash[:8]} ({len(self.items)} studies, {self.n_abnormal} abnormal{frozen})"


@dataclass(frozen=True)
class ServedUnit:
    """A site the champion serves, or one scanner of it (``scanner`` is ``"<manufacturer> <model>"``)."""

    site: str
    scanner: str | None
    studies: int

    @property
    def where(self) -> str:
        return self.site if self.scanner is None else f"{self.site} ({self.scanner})"

    def matches(self, frame: pd.DataFrame) -> np.ndarray:
        """Return which rows of ``frame`` (columns ``site``, and ``scanner`` for a scanner) are this unit's."""
        mask = (frame["site"].astype(str) == self.site).to_numpy(dtype=bool)
        if self.scanner is not None:
            mask = mask & (frame[SCANNER].astype(str) == self.scanner).to_numpy(dtype=bool)
        return mask


def scanner_name(manufacturer: object, model: object) -> str:
    """Return a scanner's name as the gate reports it: manufacturer and model, ``unknown`` for missing parts."""
    parts = [str(v) if v is not None and not pd.isna(v) and str(v) else "unknown" for v in (manufacturer, model)]
    return " ".join(parts)


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
    snapshot = SnapshotConfig(
        cutoff=config.cutoff,
        test_fraction=0.0,
        exclude_test_sets=False,
        exclude_reserved=False,
        reserve_share=config.reserve_share,
        reserve_salt=config.reserve_salt,
    )
    items, _ = collect_items(engine, snapshot)
    if items.empty:
        return items.assign(patient_age_years=[], manufacturer=[], scanner=[], overturned=[], reserved=[])
    facts = _read(
        engine,
        sa.select(
            studies.c.study_id,
            studies.c.patient_age_years,
            studies.c.manufacturer,
            studies.c.model_name,
            feedback.c.agrees_with_model,
        ).outerjoin(feedback, feedback.c.study_id == studies.c.study_id),
    ).set_index("study_id")
    pool = items.join(facts, on="study_id")
    pool["overturned"] = pool["agrees_with_model"].eq(False)
    pool["scanner"] = [scanner_name(m, n) for m, n in zip(pool["manufacturer"], pool["model_name"], strict=True)]
    pool["reserved"] = reserved_for_testing(pool["patient_key"], config.reserve_share, config.reserve_salt)
    return pool.drop(columns=["agrees_with_model", "model_name"])


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
        sets[f"{REAL_BALANCE}:{site}"] = _screening_mix(part, str(site), config)
    errors = pool.loc[pool["overturned"]]
    sets[TYPICAL_ERRORS] = errors.assign(reason=np.where(errors["label"] == 1, "missed", "false_alarm")).loc[:, columns]
    return {name: items.sort_values("study_id").reset_index(drop=True) for name, items in sets.items()}


def _screening_mix(part: pd.DataFrame, site: str, config: TestSetConfig) -> pd.DataFrame:
    """Return a site's real-balance items: its studies (in their order) resampled to its screening prevalence."""
    prevalence = config.prevalence_by_site.get(site, config.prevalence)
    abnormal, normal = part[part["label"] == 1], part[part["label"] == 0]
    n_abnormal = min(len(abnormal), round(config.per_site * prevalence))
    n_normal = min(len(normal), round(n_abnormal * (1 - prevalence) / prevalence) if n_abnormal else 0)
    n_abnormal = min(n_abnormal, round(n_normal * prevalence / (1 - prevalence)))
    chosen = pd.concat([abnormal.head(n_abnormal), normal.head(n_normal)])
    return chosen.assign(reason="screening_mix").loc[:, list(ITEM_COLUMNS)].sort_values("study_id")


def _store(engine: Engine, name: str, items: pd.DataFrame, params: str, reason: str = "") -> TestSet:
    digest = content_hash(name, items)
    insert = insert_for(engine)
    header = {
        "test_set_hash": digest,
        "name": name,
        "created_at": datetime.now(UTC),
        "params": params,
        "n_items": len(items),
        "n_abnormal": int(items["label"].sum()),
        "reason": reason,
    }
    with engine.begin() as conn:
        if conn.execute(insert(test_sets).on_conflict_do_nothing(), [header]).rowcount == 1 and len(items):
            conn.execute(
                sa.insert(test_set_items), items.assign(test_set_hash=digest).astype(object).to_dict("records")
            )
    return load_test_set(engine, name, digest)


def build_test_sets(
    engine: Engine, config: TestSetConfig | None = None, *, reason: str = "built from every labeled study"
) -> dict[str, TestSet]:
    """Draw every test set from the store, store each new version (with ``reason``), return them by name."""
    config = config or TestSetConfig()
    pool = labeled_pool(engine, config)
    drawn = draw_test_sets(pool, _unusable(engine, config), config)
    params = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    built = {name: _store(engine, name, items, params, reason) for name, items in drawn.items()}
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
    return TestSet(
        name=name,
        hash=header.test_set_hash,
        items=items,
        created_at=_utc(header.created_at),
        reason=header.reason,
        frozen_by=header.frozen_by,
    )


def _utc(when: datetime | None) -> datetime | None:
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


def latest_test_sets(engine: Engine) -> dict[str, TestSet]:
    """Return the latest stored version of every test set, by name (empty when none was built)."""
    with engine.connect() as conn:
        names = conn.execute(sa.select(test_sets.c.name).distinct()).scalars().all()
    return {name: load_test_set(engine, name) for name in sorted(names)}


def current_test_sets(engine: Engine) -> dict[str, TestSet]:
    """Return the versions validation judges on: while a release manager's freeze holds, exactly the frozen
    versions; otherwise the latest version of every set (empty when none was built)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(test_sets.c.name, test_sets.c.test_set_hash, test_sets.c.frozen_at, test_sets.c.created_at)
        ).all()
    frozen = [r for r in rows if r.frozen_at is not None]
    chosen: dict[str, tuple[datetime, str]] = {}
    for row in frozen or rows:
        key = (_utc(row.created_at), row.test_set_hash)
        if row.name not in chosen or key > chosen[row.name]:
            chosen[row.name] = key  # type: ignore[assignment]
    return {name: load_test_set(engine, name, chosen[name][1]) for name in sorted(chosen)}


def test_set_versions(engine: Engine) -> pd.DataFrame:
    """Return every stored version of every set, newest first per name: what a release manager reviews."""
    frame = _read(
        engine,
        sa.select(
            test_sets.c.name,
            test_sets.c.test_set_hash,
            test_sets.c.created_at,
            test_sets.c.n_items,
            test_sets.c.n_abnormal,
            test_sets.c.reason,
            test_sets.c.frozen_by,
            test_sets.c.frozen_at,
        ).order_by(test_sets.c.name, test_sets.c.created_at.desc()),
    )
    current = {s.hash for s in current_test_sets(engine).values()}
    frame["current"] = frame["test_set_hash"].isin(current)
    return frame


def freeze_test_sets(engine: Engine, by: str, versions: Mapping[str, str] | None = None) -> dict[str, TestSet]:
    """Freeze the test sets in ``by``'s name: the current versions, or ``versions`` (name -> hash or a unique
    prefix of it); a freeze replaces the one before. Until :func:`unfreeze_test_sets`, validation judges on
    exactly these versions and following the served population changes nothing. Return the frozen sets.

    Raises:
        TestSetNotFound: a name or version is not stored (or a prefix matches several versions).
        ValueError: ``by`` is blank (a freeze names who decided it).
    """
    if not by.strip():
        raise ValueError("a freeze needs the name of who decides it")
    if versions is None:
        chosen = {name: s.hash for name, s in current_test_sets(engine).items()}
    else:
        chosen = {name: _find_version(engine, name, prefix) for name, prefix in versions.items()}
    if not chosen:
        raise TestSetNotFound("no test sets in the store to freeze: build them with `pipeline testsets`")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.update(test_sets).values(frozen_by=None, frozen_at=None))
        conn.execute(
            sa.update(test_sets)
            .where(test_sets.c.test_set_hash.in_(list(chosen.values())))
            .values(frozen_by=by.strip(), frozen_at=now)
        )
    log.info("test sets frozen by %s: %s", by.strip(), ", ".join(f"{n} {h[:8]}" for n, h in sorted(chosen.items())))
    return {name: load_test_set(engine, name, digest) for name, digest in sorted(chosen.items())}


def _find_version(engine: Engine, name: str, prefix: str) -> str:
    with engine.connect() as conn:
        found = (
            conn.execute(
                sa.select(test_sets.c.test_set_hash).where(
                    test_sets.c.name == name, test_sets.c.test_set_hash.startswith(prefix.strip(), autoescape=True)
                )
            )
            .scalars()
            .all()
        )
    if len(found) != 1:
        what = "no version" if not found else f"{len(found)} versions"
        raise TestSetNotFound(
            f"{what} of test set {name!r} starting with {prefix!r}: see `pipeline testsets list` for the stored ones"
        )
    return str(found[0])


def unfreeze_test_sets(engine: Engine) -> int:
    """Lift the freeze: validation goes back to the latest versions, which follow the served population again.
    Return how many versions were frozen."""
    with engine.begin() as conn:
        query = sa.update(test_sets).where(test_sets.c.frozen_at.is_not(None)).values(frozen_by=None, frozen_at=None)
        return int(conn.execute(query).rowcount)


# --- following the served population -------------------------------------------------------------------------------


def served_population(engine: Engine, config: TestSetConfig | None = None) -> list[ServedUnit]:
    """Return every site the log store shows served in its last ``served_days`` days, and the scanners of each
    site that has more than one with at least ``scanner_min_share`` of its studies (sorted, sites first)."""
    config = config or TestSetConfig()
    with engine.connect() as conn:
        newest = conn.execute(
            sa.select(sa.func.max(inference_logs.c.received_at)).where(inference_logs.c.status == "ok")
        ).scalar_one()
    if newest is None:
        return []
    frame = _read(
        engine,
        sa.select(
            studies.c.site,
            studies.c.manufacturer,
            studies.c.model_name,
            sa.func.count(sa.distinct(inference_logs.c.study_id)).label("n"),
        )
        .join(studies, studies.c.study_id == inference_logs.c.study_id)
        .where(
            inference_logs.c.status == "ok",
            inference_logs.c.received_at > newest - timedelta(days=config.served_days),
        )
        .group_by(studies.c.site, studies.c.manufacturer, studies.c.model_name),
    )
    units: list[ServedUnit] = []
    scanners: list[ServedUnit] = []
    for site, part in frame.groupby("site", sort=True):
        total = int(part["n"].sum())
        units.append(ServedUnit(str(site), None, total))
        named = part.assign(
            scanner=[scanner_name(m, n) for m, n in zip(part["manufacturer"], part["model_name"], strict=True)]
        )
        counts = named.groupby("scanner")["n"].sum()
        real = counts[counts >= config.scanner_min_share * total]
        if len(real) > 1:
            scanners += [ServedUnit(str(site), str(name), int(n)) for name, n in real.sort_index().items()]
    return units + scanners


@dataclass(frozen=True)
class Following:
    """What :func:`follow_served_population` found: the sets to judge on, and what changed or could not."""

    sets: dict[str, TestSet]
    served: list[ServedUnit]
    changes: list[str]
    blocked: list[str]


def _with_scanner(engine: Engine, items: pd.DataFrame) -> pd.DataFrame:
    frame = _read(
        engine,
        sa.select(test_set_items.c.study_id, studies.c.manufacturer, studies.c.model_name)
        .join(studies, studies.c.study_id == test_set_items.c.study_id)
        .distinct(),
    )
    names = {r.study_id: scanner_name(r.manufacturer, r.model_name) for r in frame.itertuples(index=False)}
    return items.assign(scanner=items["study_id"].map(names).fillna("unknown unknown"))


def _evidence_and_spare(
    engine: Engine, current: dict[str, TestSet], config: TestSetConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the studies the gate judges evidence on (``regression`` and the real-balance sets, with their
    scanner) and the labeled studies that could join them (reserved patients' studies no set holds, children
    and unusable images left out; before any set is built, every labeled study: the first build draws from all)."""
    judged = [s.items for n, s in current.items() if n == REGRESSION or n.startswith(f"{REAL_BALANCE}:")]
    held = pd.concat(judged).drop_duplicates("study_id") if judged else pd.DataFrame(columns=list(ITEM_COLUMNS))
    in_a_set = set(pd.concat([s.items["study_id"] for s in current.values()])) if current else set()
    pool = labeled_pool(engine, config)
    unusable = set(_unusable(engine, config)["study_id"])
    child = pool["patient_age_years"].astype(float) < config.child_age
    drawn_from = pool["reserved"] if current else True
    spare = pool.loc[drawn_from & ~child & ~pool["study_id"].isin(in_a_set | unusable)]
    return _with_scanner(engine, held), spare


def follow_served_population(
    engine: Engine, config: TestSetConfig | None = None, *, served: list[ServedUnit] | None = None
) -> Following:
    """Bring the test sets up to the population the champion serves, and return the versions to judge on.

    The sets are built first where none exist. Then every served site and scanner (``served``, by default
    :func:`served_population`) with fewer than ``evidence_positives`` abnormal studies in ``regression`` and
    its real-balance set gets the labeled studies of its reserved patients that no set holds yet (children and
    unusable images left out): into ``regression`` (its natural mix) and into its site's ``real_balance`` set
    (resampled to the screening prevalence). Each changed set is stored as a new version whose reason names
    the site or scanner. Frozen sets are never changed: what they lack is returned in ``blocked``.
    """
    config = config or TestSetConfig()
    current = current_test_sets(engine) or build_test_sets(engine, config, reason="first build")
    served = served_population(engine, config) if served is None else served
    if REGRESSION not in current:
        return Following(current, served, [], [])
    evidence, spare = _evidence_and_spare(engine, current, config)
    added: list[pd.DataFrame] = []
    reasons: list[str] = []
    taken: set[str] = set()
    for unit in served:
        have = evidence.loc[unit.matches(evidence)]
        positives = int(have["label"].sum())
        extra = spare.loc[unit.matches(spare) & ~spare["study_id"].isin(taken).to_numpy()]
        if positives >= config.evidence_positives or extra.empty:
            continue
        kind = f"site {unit.site}" if unit.scanner is None else f"scanner {unit.scanner} at {unit.site}"
        what = "joined" if unit.scanner is None else "appeared"
        why = f"{kind} {what}" if have.empty else f"{kind} short of evidence ({positives} abnormal)"
        reasons.append(f"{why}: +{len(extra)} reserved studies ({int(extra['label'].sum())} abnormal)")
        added.append(extra)
        taken |= set(extra["study_id"])
        evidence = pd.concat([evidence, extra.loc[:, [*ITEM_COLUMNS[:-1], "scanner"]].assign(reason="reserved")])
    if not added:
        return Following(current, served, [], [])
    new = pd.concat(added).drop_duplicates("study_id").assign(reason="reserved")
    reason = "; ".join(reasons)
    frozen_by = next((s.frozen_by for s in current.values() if s.frozen_by), None)
    if frozen_by is not None:
        blocked = [f"the test sets are frozen by {frozen_by}: not changed for {reason}"]
        log.warning("test sets: %s", blocked[0])
        return Following(current, served, [], blocked)
    params = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    columns = list(ITEM_COLUMNS)
    sets = dict(current)
    regression = pd.concat([current[REGRESSION].items, new.loc[:, columns]])
    sets[REGRESSION] = _store(engine, REGRESSION, regression.sort_values("study_id"), params, reason)
    for site, part in new.groupby("site", sort=True):
        name = f"{REAL_BALANCE}:{site}"
        before = current[name].items if name in current else pd.DataFrame(columns=columns)
        mixed = pd.concat([before, part.loc[:, columns]]).drop_duplicates("study_id")
        ordered = mixed.iloc[_order(config.salt, mixed["study_id"])] if len(mixed) else mixed
        sets[name] = _store(engine, name, _screening_mix(ordered, str(site), config), params, reason)
    for name in sorted(set(sets) - set(current)) + [n for n in current if sets[n] is not current[n]]:
        log.info("test set %s: %s", sets[name].describe(), reason)
    return Following(sets, served, reasons, [])


def reserved_evidence(engine: Engine, units: list[ServedUnit], config: TestSetConfig | None = None) -> dict[str, int]:
    """Return, per site or scanner (by ``ServedUnit.where``), the labeled abnormal studies its evidence can count
    on: those in the current ``regression`` and real-balance sets, and those of its reserved patients no set holds
    yet (what the next :func:`follow_served_population` can add)."""
    config = config or TestSetConfig()
    if not units:
        return {}
    held, spare = _evidence_and_spare(engine, current_test_sets(engine), config)
    return {
        u.where: int(held.loc[u.matches(held), "label"].sum()) + int(spare.loc[u.matches(spare), "label"].sum())
        for u in units
    }


def short_of_evidence(engine: Engine, needed: int = EVIDENCE_POSITIVES) -> dict[ServedUnit, int]:
    """Return the served sites and scanners whose evidence (:func:`reserved_evidence`) is below ``needed``
    labeled abnormal studies, with how many they have."""
    units = served_population(engine)
    counts = reserved_evidence(engine, units)
    return {u: counts[u.where] for u in units if counts[u.where] < needed}


def evidence_shortfall(engine: Engine, needed: int = EVIDENCE_POSITIVES) -> str:
    """Return, in words, the served sites and scanners with fewer labeled abnormal studies for the test sets
    than ``needed`` (the gate's ``min_positives``); empty when none is short (what a retraining waits on)."""
    short = short_of_evidence(engine, needed)
    return "; ".join(
        f"{u.where} has {n} of the {needed} labeled abnormal studies the gate needs" for u, n in short.items()
    )
