"""`airflow standalone` as `make demo` starts it: named users, the REST API signed in as one, the clocks off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.demo.stack.airflow import AirflowApiError, start_standalone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAY = datetime(2026, 1, 15, tzinfo=UTC)


def test_standalone_runs_our_dags_for_a_past_day_as_a_named_user(tmp_path: Path, pg_url: str) -> None:
    airflow = start_standalone(
        tmp_path,
        users={"admin": "admin", "release-manager": "admin", "viewer": "viewer"},
        expected_dags=("monitor_inference", "select_for_relabeling", "promote_model"),
        extra_env={
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "PIPELINE_TIME_SCHEDULES": "false",
            "PIPELINE_DB_URL": pg_url,
            "PIPELINE_STORAGE_ROOT": str(tmp_path / "storage"),
        },
    )
    try:
        # a password for each user, and nothing without one
        assert set(airflow.passwords) == {"admin", "release-manager", "viewer"}
        with pytest.raises(AirflowApiError, match="401"):
            airflow.api.request("GET", "/dags")
        with pytest.raises(AirflowApiError, match="sign-in as viewer"):
            airflow.api.as_user("viewer", "not-the-password")
        admin = airflow.api_as("admin")
        dags = {d["dag_id"]: d for d in admin.request("GET", "/dags?limit=100")["dags"]}
        assert not any(d["is_paused"] for d in dags.values())
        # the clocks are off: unpaused DAGs whose schedules are hourly and daily created no run of their own
        assert admin.dag_runs("~") == []
        assert dags["monitor_inference"]["timetable_summary"] in (None, "None")

        # a run for a past day's data interval, triggered by a named user
        manager = airflow.api_as("release-manager")
        run_id = manager.trigger(
            "monitor_inference",
            logical_date=DAY,
            data_interval=(DAY, DAY + timedelta(days=1)),
            run_id="replay__2026-01-15",
        )
        # asking for the same run again finds it (a retried trigger creates nothing twice)
        assert manager.trigger("monitor_inference", logical_date=DAY, run_id=run_id) == run_id
        assert len(manager.dag_runs("monitor_inference")) == 1
        run = manager.request("GET", f"/dags/monitor_inference/dagRuns/{run_id}")
        assert run_id == "replay__2026-01-15" and run["run_type"] == "manual"
        assert run["triggering_user_name"] == "release-manager"
        start, end = (
            datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("data_interval_start", "data_interval_end")
        )
        assert (start, end) == (DAY, DAY + timedelta(days=1))
        # a viewer may look but not trigger
        with pytest.raises(AirflowApiError, match="403"):
            airflow.api_as("viewer").trigger("monitor_inference", logical_date=DAY + timedelta(days=1))
        # the monitoring page's plugin is loaded
        plugins = {p["name"] for p in admin.request("GET", "/plugins")["plugins"]}
        assert "pipeline_monitoring" in plugins
    finally:
        airflow.stop()
    assert not airflow.process.is_running()
