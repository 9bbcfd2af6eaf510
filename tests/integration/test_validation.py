"""The validation gate on real models, a real MLflow server and a real store: sabotaged candidates are rejected.

The world is ``new_hospital`` from day 10: three stable hospitals and Riverside on a scanner of its own. The
champion is deliberately weak, so that the verdicts do not hang on floating-point order (thread count, BLAS
kernel, seed of the augmentation): trained from scratch for three epochs on four days of the stable hospitals,
it has never seen Riverside (AUROC about 0.56 on the regression set, expected calibration error about 0.18).
The genuinely better candidate is trained on clearly more and better data: the tests' normal filter (twelve
epochs on the stable hospitals) fine-tuned on all four hospitals, Riverside too (AUROC about 0.92). Measured
at one thread per worker over two seeds, it beats the champion on every check by a wide margin (AUROC lower
bound +0.3, sensitivity's lower bound 0.2 above, a quarter fewer confirmed errors). The sabotaged candidates
each fail the check named in the test: labels shuffled, one site only, outputs flipped, the champion's logits
shifted so that only calibration suffers, and the better candidate closing as normal every image as noisy as
Riverside's detector (fine everywhere else). The store holds two days simulated with the champion serving, so the
radiologists' outcomes that came back make the test sets and its confirmed errors. As in `make demo`, the test
sets are first built before Riverside's studies arrive; each validation then adds its reserved patients' studies.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
import torch
from mlflow import MlflowClient

from pipeline.config import Settings
from pipeline.entry import release
from pipeline.inference import InferenceService, registry_services
from pipeline.model import NormalFilterNet
from pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    PREVIOUS,
    SHADOW,
    LoadedModel,
    load_model,
    log_and_register,
    register_candidate,
    set_alias,
    version_for,
)
from pipeline.reports import record_shadow, record_validation
from pipeline.resources import Resources
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.store import make_engine, upgrade
from pipeline.training import TrainConfig, train
from pipeline.training.bootstrap import _items
from pipeline.training.snapshot import SnapshotConfig, collect_items, reserved_for_testing
from pipeline.validation import (
    REGRESSION,
    PromotionRefused,
    ValidationConfig,
    ValidationError,
    build_test_sets,
    current_test_sets,
    events,
    follow_served_population,
    freeze_test_sets,
    promote,
    reject,
    rollback,
    test_set_versions,
    unfreeze_test_sets,
    validate,
)
from pipeline.validation.promotion import TagDecision, mlflow_decision
from pipeline.validation.shadow import shadow_report, start_shadow
from pipeline.validation.suite import _technical
from tests.worlds import IMAGE_SIZE, KEY, NET, trained_model, training_items

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIZE = IMAGE_SIZE
# Two days of Riverside give its reserved patients (a quarter) about 15 labeled abnormal studies: the gate's
# minimum of evidence is lowered to 10 here (the default, 40, is what `test_too_little_evidence...` meets).
CONFIG = ValidationConfig(sensitivity_target=0.95, min_positives=10)
SNAPSHOT = "trained-on-another-seed-of-the-world"
STABLE = {"st-anna", "north-general", "lakeside"}
NEW = "riverside"
#: The standard deviation of the Laplacian of a normalised 64-px image: at most 0.75 on the stable hospitals'
#: detectors, at least 1.03 on Riverside's noisier one (measured on a day of each).
NOISY = 0.9


class Flipped(torch.nn.Module):
    """A model whose outputs are negated: it ranks every study the wrong way round."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


class Shifted(torch.nn.Module):
    """The same ranking with every logit shifted: it over-calls abnormal; only its calibration differs."""

    def __init__(self, inner: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.shift


class ClosesNoisyDetector(torch.nn.Module):
    """A model that closes as normal every image as noisy as Riverside's detector, and is ``inner`` elsewhere."""

    def __init__(self, inner: torch.nn.Module, noise: float = NOISY) -> None:
        super().__init__()
        self.inner = inner
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[..., 1:-1, 1:-1]
        laplacian = 4 * c - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
        noisy = laplacian.flatten(1).std(dim=1) > self.noise
        logits = self.inner(x)
        return torch.where(noisy.reshape(logits.shape), torch.full_like(logits, -20.0), logits)


@dataclass(frozen=True)
class Registry:
    name: str
    url: str
    versions: dict[str, str]
    tracking_uri: str
    first_sets: dict[str, str]  # the sets built before Riverside's studies came in, name -> hash


def _world(seed_offset: int = 0):  # type: ignore[no-untyped-def]
    world = with_volume(load_scenario(ROOT / "scenarios" / "new_hospital.yaml"), per_site=200)
    return world.model_copy(update={"image_size": SIZE, "seed": world.seed + seed_offset})


def _train(
    items: list[dict], val: list[dict], epochs: int, *, init: NormalFilterNet | None = None, shuffle: bool = False
) -> NormalFilterNet:
    if shuffle:
        labels = [i["label"] for i in items]
        random.Random(0).shuffle(labels)
        items = [{**i, "label": label} for i, label in zip(items, labels, strict=True)]
    config = TrainConfig(image_size=SIZE, epochs=epochs, net=NET, patience=epochs, learning_rate=1e-3)
    return train(items, val, config, init_model=init, progress=False).model


@pytest.fixture(scope="module")
def registry(
    mlflow_server: str, pg_database_factory, tmp_path_factory: pytest.TempPathFactory, normal_filter_cache: Path
) -> Registry:
    mlflow.set_tracking_uri(mlflow_server)
    name = f"cxr-gate-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment(name)

    # the champion: trained briefly on the three stable hospitals (Riverside is new to it), weak on purpose
    root = tmp_path_factory.mktemp("gate-train")
    weak = TrainConfig(image_size=SIZE, epochs=3, net=NET, patience=3)  # the tests' normal filter has 12 epochs
    first = train(*training_items(root), weak, progress=False)
    champion = LoadedModel(first.model.eval(), name, "1", threshold=first.threshold, image_size=SIZE)
    with mlflow.start_run(run_name="champion"):
        version = log_and_register(champion.model, model_name=name, image_size=SIZE, threshold=champion.threshold)
        set_alias(name, CHAMPION, version)

    training_world = _world(seed_offset=1000)
    tune = _items(training_world, range(10, 12), root, KEY, SIZE)
    st_anna = _items(training_world, range(10, 14), root, KEY, SIZE, sites={"st-anna"})
    val = _items(training_world, range(14, 15), root, KEY, SIZE)
    # better: the tests' normal filter (twelve epochs on the stable hospitals) fine-tuned on all four hospitals
    better = _train(tune, val, epochs=3, init=trained_model(normal_filter_cache).model)
    candidates = {
        "better": better,
        "shuffled": _train(tune[::2], val, epochs=2, shuffle=True),
        "one_site": _train(st_anna, [i for i in val if i["site"] == "st-anna"], epochs=3),
        "flipped": Flipped(better),
        "shifted": Shifted(champion.model, 2.5),  # the champion itself, over-calling abnormal
        "blind_at_new_site": ClosesNoisyDetector(better),
    }
    versions = {CHAMPION: version}
    for label, model in candidates.items():
        with mlflow.start_run(run_name=label):
            versions[label] = register_candidate(
                model,
                model_name=name,
                image_size=SIZE,
                threshold=champion.threshold,
                snapshot_hash=SNAPSHOT,
                parent_version=version,
                params={"sabotage": label},
            )

    url = pg_database_factory()
    engine = make_engine(url)
    upgrade(engine)
    service = InferenceService(champion, key=KEY, mc_samples=0)
    storage = tmp_path_factory.mktemp("gate-store")
    for sites in (STABLE, {NEW}):  # the first sets are built before Riverside's studies arrive
        simulate(
            _world(),
            engine=engine,
            storage_root=storage,
            key=KEY,
            days=[10, 11],
            service_for=lambda _: service,
            sites=sites,
            progress=False,
        )
        if sites == STABLE:
            first = {n: s.hash for n, s in build_test_sets(engine, reason="first build").items()}
    engine.dispose()
    return Registry(name, url, versions, mlflow_server, first)


@pytest.fixture
def engine(registry: Registry):  # type: ignore[no-untyped-def]
    engine = make_engine(registry.url)
    yield engine
    engine.dispose()


def test_the_test_sets_are_fixed_versions_that_follow_the_served_population(registry: Registry, engine) -> None:
    assert f"real_balance:{NEW}" not in registry.first_sets  # built before Riverside's first study
    following = follow_served_population(engine)  # what every validation does first (one may have done it)
    sets = following.sets
    assert {REGRESSION, "typical_errors", "unusual"} <= set(sets)
    assert {f"real_balance:{s}" for s in (*STABLE, NEW)} <= set(sets)
    assert {u.site for u in following.served} == {*STABLE, NEW}
    regression = sets[REGRESSION]
    assert regression.n_abnormal >= 59 and len(regression.items) - regression.n_abnormal >= 59
    assert sets[REGRESSION].hash != registry.first_sets[REGRESSION]
    assert "site riverside joined" in sets[REGRESSION].reason
    for site in ("st-anna", NEW):
        balance = sets[f"real_balance:{site}"]
        assert 0.03 <= balance.n_abnormal / len(balance.items) <= 0.07  # the screening prevalence, 5%
    assert len(sets["typical_errors"].items) > 0  # the champion's overturned decisions

    # Riverside's evidence is its reserved patients, and no training snapshot holds any of them
    new = regression.items[regression.items["site"] == NEW]
    assert len(new) > 0 and reserved_for_testing(new["patient_key"]).all()
    trainable, _ = collect_items(engine, SnapshotConfig())
    assert not reserved_for_testing(trainable["patient_key"]).any()
    assert not set(trainable["study_id"]) & set(regression.items["study_id"])

    again = follow_served_population(engine)  # nothing new in the store: the same versions, nothing stored
    assert again.changes == [] and {n: s.hash for n, s in again.sets.items()} == {n: s.hash for n, s in sets.items()}
    versions = test_set_versions(engine)
    assert set(versions.loc[versions["current"], "test_set_hash"]) == {s.hash for s in sets.values()}
    assert set(versions.loc[versions["name"] == REGRESSION, "test_set_hash"]) == {
        registry.first_sets[REGRESSION],
        regression.hash,
    }

    # the release manager freezes the sets as first built: validation judges on them, following leaves them alone
    try:
        frozen = freeze_test_sets(engine, "release-manager", {n: h[:10] for n, h in registry.first_sets.items()})
        assert {n: t.hash for n, t in frozen.items()} == registry.first_sets
        assert {n: t.hash for n, t in current_test_sets(engine).items()} == registry.first_sets
        blocked = follow_served_population(engine)
        assert blocked.changes == [] and "frozen by release-manager" in blocked.blocked[0]
        assert "site riverside joined" in blocked.blocked[0]
        verdict = validate(engine, registry.name, registry.versions["better"], config=CONFIG)
        assert not verdict.passed and "insufficient evidence at riverside: 0 labeled abnormal" in verdict.summary()
    finally:
        unfreeze_test_sets(engine)
    assert current_test_sets(engine)[REGRESSION].hash == regression.hash


def test_too_little_evidence_at_a_served_site_fails_the_verdict_naming_it(registry: Registry, engine) -> None:
    default = ValidationConfig(sensitivity_target=0.95)  # the default minimum, 40 abnormal studies per site
    verdict = validate(engine, registry.name, registry.versions["better"], config=default)

    evidence = next(c for c in verdict.checks if c.name == "site_evidence")
    assert evidence.failed and "insufficient evidence at riverside" in evidence.summary
    assert not verdict.passed and NEW not in verdict.sites and set(verdict.sites) == STABLE
    row = next(r for r in verdict.evidence if r["site"] == NEW)
    assert 0 < row["abnormal"] < 40 and "sensitivity_candidate" not in row


def test_a_genuinely_better_candidate_passes_every_check(registry: Registry, engine) -> None:
    verdict = validate(engine, registry.name, registry.versions["better"], config=CONFIG)

    assert verdict.passed, verdict.summary()
    names = {c.name for c in verdict.checks}
    assert {"auroc_noninferiority[regression]", "operating_point", "calibration", "subgroups", "site_evidence"} <= names
    assert set(verdict.sites) == {*STABLE, NEW}  # every served site judged on its own evidence
    assert all(r["abnormal"] >= CONFIG.min_positives and not r["problem"] for r in verdict.evidence)
    assert "riverside: " in verdict.summary() and "abnormal, sensitivity" in verdict.summary()
    assert {"typical_errors", "unusual_data", "reproducible", "latency", "memory"} <= names
    regression = next(c for c in verdict.checks if c.name == "auroc_noninferiority[regression]")
    assert regression.numbers["auroc_candidate"] > regression.numbers["auroc_champion"]
    op = next(c for c in verdict.checks if c.name == "operating_point")
    assert op.numbers["sensitivity_lower"] >= 0.95
    errors = next(c for c in verdict.checks if c.name == "typical_errors")
    assert errors.numbers["errors_candidate"] < errors.numbers["errors_champion"]


@pytest.mark.parametrize(
    ("sabotage", "failing"),
    [
        ("shuffled", "auroc_noninferiority[regression]"),
        ("one_site", "subgroups"),
        ("flipped", "auroc_noninferiority[regression]"),
        ("shifted", "calibration"),
        ("blind_at_new_site", "site_evidence"),
    ],
)
def test_a_sabotaged_candidate_is_rejected_naming_the_failing_check(
    registry: Registry, engine, sabotage: str, failing: str
) -> None:
    # the blind one is built from the better candidate, and judged against it: the champion it would replace
    champion = registry.versions["better"] if sabotage == "blind_at_new_site" else CHAMPION
    verdict = validate(engine, registry.name, registry.versions[sabotage], champion=champion, config=CONFIG)

    assert not verdict.passed
    assert failing in {c.name for c in verdict.failed_checks}, verdict.summary()
    assert f"FAIL {failing}" in verdict.summary()
    if sabotage == "blind_at_new_site":  # safe everywhere else: the verdict names the one site it is not
        evidence = next(c for c in verdict.checks if c.name == "site_evidence")
        failing_sites = {r["site"] for r in evidence.numbers["units"] if r["problem"]}
        assert failing_sites == {NEW} and "ranks studies at riverside worse than the champion" in evidence.summary


def test_the_verdict_goes_onto_the_version_and_only_a_passed_one_is_promoted(
    registry: Registry, engine, tmp_path: Path
) -> None:
    client = MlflowClient()
    name, good, bad = registry.name, registry.versions["better"], registry.versions["flipped"]

    failed = validate(engine, name, bad, config=CONFIG)
    record_validation(engine, failed, report_dir=tmp_path / "bad")
    tags = client.get_model_version(name, bad).tags
    assert tags["validation_status"] == "failed"
    assert "auroc_noninferiority[regression]" in tags["validation_failed_checks"]
    with pytest.raises(PromotionRefused, match="validation status is 'failed'"):
        promote(engine, name, bad, approver="release-manager")
    reject(engine, name, bad, approver="release-manager", reason="ranks studies the wrong way round")
    assert client.get_model_version(name, bad).tags["rejected_by"] == "release-manager"

    passed = validate(engine, name, good, config=CONFIG)
    uri = record_validation(engine, passed, report_dir=tmp_path / "good")
    record_validation(engine, passed, report_dir=tmp_path / "good")  # again: the same tags, no second audit event
    tags = client.get_model_version(name, good).tags
    assert tags["validation_status"] == "passed" and tags["validated_against"] == "1"
    assert float(tags["validation_threshold"]) == pytest.approx(passed.threshold, abs=1e-6)
    run_id = client.get_model_version(name, good).run_id
    artifacts = {a.path for a in client.list_artifacts(run_id, "validation")}
    assert artifacts == {"validation/validation.json", "validation/validation.html"}
    assert uri.endswith("validation/validation.html")
    page = (tmp_path / "good" / "validation.html").read_text()
    assert "Verdict: <b>PASSED</b>" in page and "data:image/png;base64," in page

    with pytest.raises(PromotionRefused, match="needs the name"):
        promote(engine, name, good, approver=" ")
    change = promote(engine, name, good, approver="release-manager")
    assert change.changed and change.previous == "1"
    assert client.get_model_version_by_alias(name, CHAMPION).version == good
    assert client.get_model_version_by_alias(name, PREVIOUS).version == "1"
    assert version_for(name, CANDIDATE) != good  # the candidate alias never names the champion
    tags = client.get_model_version(name, good).tags
    assert tags["approved_by"] == "release-manager" and tags["threshold"] == tags["validation_threshold"]
    assert [e.action for e in events(engine, name, good)] == ["validated", "approved", "promoted"]
    assert [e.action for e in events(engine, name, bad)] == ["validated", "rejected"]

    # the shifted model passed nothing against the new champion: promoting it is refused
    with pytest.raises(PromotionRefused):
        promote(engine, name, registry.versions["shifted"], approver="release-manager")

    back = rollback(engine, name, "previous", actor="on-call", reason="incident 42")
    assert back.champion == "1" and back.previous == good
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    assert events(engine, name, "1")[-1].action == "rolled_back"
    with pytest.raises(PromotionRefused, match="never served"):
        rollback(engine, name, registry.versions["one_site"], actor="on-call")


def test_every_registered_version_stores_the_outputs_its_reproducibility_is_checked_by(registry: Registry) -> None:
    for label in (CHAMPION, "better"):  # the champion was registered as the bootstrap registers its first one
        version = registry.versions[label]
        info = mlflow.models.get_model_info(f"models:/{registry.name}/{version}")
        checks = _technical(load_model(registry.name, version), info, [], CONFIG)
        reproducible = next(c for c in checks if c.name == "reproducible")
        assert reproducible.status == "pass", reproducible.summary
        assert reproducible.numbers["max_abs_difference"] <= CONFIG.reproduce_atol


def test_bad_input_fails_clearly_and_moves_nothing(registry: Registry, engine, pg_url: str) -> None:
    client = MlflowClient()
    with pytest.raises(ValidationError, match="has no version '999'"):
        validate(engine, registry.name, "999", config=CONFIG)

    with mlflow.start_run(run_name="unsigned"):
        info = mlflow.pytorch.log_model(
            NormalFilterNet(NET), name="model", registered_model_name=registry.name, serialization_format="pickle"
        )
    unsigned = str(info.registered_model_version)
    with pytest.raises(ValidationError, match="has no signature"):
        validate(engine, registry.name, unsigned, config=CONFIG)

    empty = make_engine(pg_url)
    upgrade(empty)
    with pytest.raises(ValidationError, match="regression test set is empty"):
        validate(empty, registry.name, registry.versions["better"], config=CONFIG)
    empty.dispose()
    champion = client.get_model_version_by_alias(registry.name, CHAMPION).version
    assert champion in ("1", registry.versions["better"])  # whatever the other tests left, nothing moved here
    assert "validation_status" not in client.get_model_version(registry.name, unsigned).tags


def test_a_candidate_in_shadow_scores_live_traffic_beside_the_champion_and_is_reported(
    registry: Registry, engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, better = registry.name, registry.versions["better"]
    client = MlflowClient()
    with pytest.raises(PromotionRefused, match="validation status"):  # never validated: it cannot go into shadow
        start_shadow(engine, name, registry.versions["one_site"], actor="test")
    with pytest.raises(PromotionRefused, match="serving champion"):
        start_shadow(engine, name, CHAMPION, actor="test")
    record_validation(engine, validate(engine, name, better, config=CONFIG))
    start = start_shadow(engine, name, better, actor="test")
    assert start.started and version_for(name, SHADOW) == better
    assert start_shadow(engine, name, better, actor="test") == dataclasses.replace(start, started=False)

    # a day of live traffic at two hospitals: the champion answers, the candidate scores beside it
    def served() -> dict[str, int]:
        with engine.connect() as conn:
            query = "SELECT model_version, count(*) FROM inference_logs WHERE status = 'ok' GROUP BY model_version"
            return {str(v): int(n) for v, n in conn.execute(sa.text(query)).all()}

    before = served()
    services = registry_services(name, key=KEY, mc_samples=0)
    sites = {"st-anna", "riverside"}
    simulate(
        _world(),
        engine=engine,
        storage_root=tmp_path,
        key=KEY,
        days=[12],
        service_for=services,
        sites=sites,
        progress=False,
    )
    with engine.connect() as conn:
        paired = conn.execute(
            sa.text(
                "SELECT count(*), avg(CASE WHEN (l.prob_abnormal < l.threshold) = (s.prob_abnormal < s.threshold) "
                "THEN 1.0 ELSE 0.0 END) FROM shadow_logs s JOIN inference_logs l "
                "ON l.study_id = s.study_id AND l.model_version = s.champion_version WHERE s.model_version = :v"
            ),
            {"v": better},
        ).one()
    after = served()
    assert set(after) == set(before) == {"1"}  # only the champion's answers are logged as served
    assert after["1"] - before["1"] == paired[0] > 300  # every study it scored, the candidate scored too

    report = shadow_report(engine, name, better)
    assert report.studies == paired[0] and report.agreement == pytest.approx(float(paired[1]))
    assert {s["site"] for s in report.sites} == sites and sum(s["studies"] for s in report.sites) == report.studies
    differ = report.champion_normal_candidate_not + report.candidate_normal_champion_not
    assert differ == round((1 - report.agreement) * report.studies)
    assert report.candidate is not None and report.champion_estimate is not None
    assert 0.5 < report.candidate.expected_auroc <= 1 and 0 < report.champion_estimate.filtered_normal < 1
    assert len(report.examples) == 10 and all(e["decisions_differ"] for e in report.examples[: min(differ, 10)])
    uri = record_shadow(engine, report, actor="test")
    tags = client.get_model_version(name, better).tags
    assert tags["shadow_studies"] == str(report.studies) and tags["shadow_report"] == uri
    run_id = client.get_model_version(name, better).run_id
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "shadow")} == {"shadow.json", "shadow.html"}
    assert "decisions agree on" in report.summary()

    # the release manager decides in the MLflow UI: tags name the decision and who took it
    assert mlflow_decision(name, better) is None
    client.set_model_version_tag(name, better, "approval", "maybe")
    with pytest.raises(PromotionRefused, match="approve' or 'reject"):
        mlflow_decision(name, better)
    client.set_model_version_tag(name, better, "approval", "approve")
    with pytest.raises(PromotionRefused, match="approval_by"):
        mlflow_decision(name, better)
    client.set_model_version_tag(name, better, "approval_by", "Dr. Release")
    decision = mlflow_decision(name, better)
    assert decision == TagDecision(approve=True, by="Dr. Release", reason="")

    # the DAG's decide task acts on the tags: the shadow ends, the version becomes the champion
    deployment = Resources.from_settings(
        Settings(db_url=registry.url, mlflow_tracking_uri=registry.tracking_uri, model_name=name)
    )
    outcome = release.decide(deployment, better, release.answer_of(better, None, dataclasses.asdict(decision)))
    assert outcome["decision"] == "approved" and outcome["source"] == "the MLflow UI"
    assert version_for(name, SHADOW) is None and version_for(name, CHAMPION) == better
    assert client.get_model_version(name, better).tags["approved_by"] == "Dr. Release"
    actions = [e.action for e in events(engine, name, better)]
    assert actions[-5:] == ["shadow_started", "shadow_report", "shadow_ended", "approved", "promoted"]

    simulate(
        _world(),
        engine=engine,
        storage_root=tmp_path,
        key=KEY,
        days=[13],
        service_for=services,
        sites={"st-anna"},
        progress=False,
    )
    assert set(served()) == {"1", better}  # the next day is served by the new champion, with nothing in shadow
    assert shadow_report(engine, name, better).studies == report.studies
    rollback(engine, name, "1", actor="test", reason="leave the module's champion as it was")
