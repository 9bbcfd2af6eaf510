"""The simulation entry: play the hospitals of a scenario and the production inference service
(``pipeline simulate``; the demo's days)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources


def simulate(
    res: Resources,
    scenario_path: Path,
    *,
    days: int | None = None,
    start: date | None = None,
    seed: int | None = None,
    image_size: int | None = None,
    volume_scale: float | None = None,
    model: str | None = "champion",
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate ``days`` of the scenario from ``start`` (default: all of it): DICOM files under the storage root,
    ground truth and feedback in the store, each study scored by the registered ``model`` (an alias or version;
    None only registers the studies' tags) and logged. Deterministic for a seed; a day simulated again changes
    nothing. Returns the summary: studies, abnormal, feedback, inference logs, failures, per site.

    Raises:
        ValueError: the scenario file is invalid, named.
        pipeline.registry.ModelNotFound: no such model version (run ``pipeline bootstrap`` first).
    """
    from pipeline.simulate.run import simulate as run
    from pipeline.simulate.scenario import days_between, load_scenario, with_volume
    from pipeline.store import upgrade

    scenario = load_scenario(scenario_path)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    if volume_scale is not None:
        scenario = with_volume(scenario, factor=volume_scale)
    upgrade(res.store)
    service_for = None
    if model is not None:
        from pipeline.inference import registry_services

        res.registry.use()
        service_for = registry_services(res.registry.model_name, key=res.pseudonym_key, default=model)
    summary = run(
        scenario,
        engine=res.store,
        storage_root=res.storage.root,
        key=res.pseudonym_key,
        days=days_between(scenario, start, days),
        image_size=image_size,
        service_for=service_for,
        progress=progress,
    )
    return {"scenario": scenario.name, **summary.as_dict()}
