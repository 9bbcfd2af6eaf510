"""The `pipeline` console script: help everywhere, JSON results, clear errors."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import get_settings


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, (*prefix, name)))
    return found


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("PIPELINE_LABEL_STUDIO_TOKEN", "tok-should-not-show")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.mark.parametrize("path", all_commands(main), ids=" ".join)
def test_every_subcommand_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 3


def test_config_masks_secrets(env):
    result = CliRunner().invoke(main, ["config", "--json", str(env / "c.json")])
    assert result.exit_code == 0
    assert "tok-should-not-show" not in result.output + (env / "c.json").read_text()
    assert json.loads((env / "c.json").read_text())["label_studio_token"] == "**********"


HEADER = "study_id,model_version,site,received_at,finished_at,status,latency_s,prob_abnormal,decision\n"
S1, S2 = "1" * 32, "2" * 32  # pseudonymous ids


def test_ingest_reports_rejects_and_exits_1(env):
    batch = env / "b.csv"
    batch.write_text(
        HEADER + f"{S1},1,a,2026-01-01T00:00:00Z,2026-01-01T00:00:01Z,ok,1.0,0.3,abnormal\n"
        f"{S2},1,a,2026-01-01T00:00:00Z,2026-01-01T00:00:01Z,ok,1.0,1.3,abnormal\n"
    )
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(main, ["ingest", "--table", "inference_logs", str(batch), "--json", str(env / "r.json")])
    assert result.exit_code == 1
    report = json.loads((env / "r.json").read_text())[0]
    assert (report["written"], report["rejected"]) == (1, 1)
    assert report["errors"] == [f"row 1 (study_id={S2}): field 'prob_abnormal': 1.3 is outside [0.0, 1.0]"]
    assert result.stdout.splitlines() == [report["summary"]]
    assert f"  rejected {report['errors'][0]}" in result.stderr.splitlines()


def test_ingest_landing_says_one_line_per_file_and_exits_1_only_for_what_this_run_quarantined(env):
    inbox = env / "landing" / "inference_logs"
    inbox.mkdir(parents=True)
    (inbox / "good.csv").write_text(HEADER + f"{S1},1,a,2026-01-01T00:00:00Z,2026-01-01T00:00:01Z,ok,1.0,0.3,normal\n")
    (inbox / "broken.parquet").write_bytes(b"not parquet")
    (inbox / "notes.txt").write_text("not a batch\n")
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    first = runner.invoke(main, ["ingest-landing", "--landing", str(env / "landing")])
    assert first.exit_code == 1, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("inference_logs from good.csv: 1 received, 1 written")
    assert lines[1].startswith("quarantined broken.parquet: ") and "broken.parquet: broken" not in lines[1]
    assert any(line.startswith("ignored inference_logs/notes.txt: ") for line in first.stderr.splitlines())
    again = runner.invoke(main, ["ingest-landing", "--landing", str(env / "landing")])
    assert again.exit_code == 0, again.output
    assert again.stdout == "" and "still in quarantine from earlier runs: 1 file" in again.stderr


def test_simulate_names_a_bad_scenario_field(env):
    bad = env / "bad.yaml"
    bad.write_text("name: x\nstart: 2026-01-01\nsites: [{id: a, devices: [{id: d, gama: 2}]}]\n")
    result = CliRunner().invoke(main, ["simulate", "--scenario", str(bad), "--model", "none"])
    assert result.exit_code != 0
    assert "sites.0.devices.0.gama: Extra inputs are not permitted" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 3\nlearning_rat: 0.1\n", "learning_rat"),
        ("epochs: 0\n", "epochs"),
        ("net: {name: resnet}\n", "net.name"),
        ("epochs: [3\n", "while parsing"),
        ("- epochs\n", "a mapping of RetrainParams fields, got list"),
        ("seed: 2026-02-30\n", "day is out of range for month"),
    ],
)
def test_train_names_what_is_wrong_in_its_config_before_anything_starts(env, tmp_path, text, message):
    config = tmp_path / "train.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 1
    assert message in result.output and str(config) in result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auroc_margn: 0.02\n", "auroc_margn"),
        ("sensitivity_target: 1.5\n", "sensitivity_target"),
        ("0.02\n", "a mapping of ValidationConfig fields, got float"),
    ],
)
def test_validate_names_what_is_wrong_in_its_config_before_anything_starts(env, tmp_path, text, message):
    config = tmp_path / "gate.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["validate", "--candidate", "2", "--config", str(config)])
    assert result.exit_code == 1
    assert message in result.output and str(config) in result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_promote_needs_an_approver(env):
    result = CliRunner().invoke(main, ["promote", "--version", "2"])
    assert result.exit_code == 2 and "--approver" in result.output


def test_testsets_freeze_says_what_is_wrong_in_one_line(env):
    empty = CliRunner().invoke(main, ["testsets", "list"])
    assert empty.exit_code == 0 and empty.output == ""
    nothing = CliRunner().invoke(main, ["testsets", "freeze", "--by", "release-manager"])
    assert nothing.exit_code == 1 and "no test sets in the store to freeze" in nothing.output
    assert "Traceback" not in nothing.output
    malformed = CliRunner().invoke(main, ["testsets", "freeze", "--by", "rm", "--version", "regression"])
    assert malformed.exit_code == 2 and "'regression' is not NAME=HASH" in malformed.output
    unknown = CliRunner().invoke(main, ["testsets", "freeze", "--by", "rm", "--version", "regression=abc"])
    assert unknown.exit_code == 1 and "no version of test set 'regression' starting with 'abc'" in unknown.output
    blank = CliRunner().invoke(main, ["testsets", "freeze", "--by", " ", "--version", "regression=abc"])
    assert blank.exit_code == 1 and "needs the name of who decides it" in blank.output
