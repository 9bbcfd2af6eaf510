"""The state of every site on a given day: the base scenario with the events up to that day applied."""

from __future__ import annotations

from pipeline.simulate.scenario import (
    CalibrationDrift,
    DeviceAdded,
    DeviceSwap,
    ErrorBurst,
    ModelVersionChange,
    PopulationChange,
    PositioningProblem,
    PrevalenceChange,
    Scenario,
    Site,
    SiteJoins,
    TagErrorChange,
    VolumeChange,
)


def _ramp(day: int, start: int, days: int) -> float:
    """Share of a linear change reached on ``day`` (0 before ``start``, 1 from ``start + days - 1``)."""
    if day < start:
        return 0.0
    return min(1.0, (day - start + 1) / days)


def sites_on(scenario: Scenario, day: int) -> list[Site]:
    """Return every site sending studies on ``day``, with all events up to ``day`` applied.

    Args:
        scenario: the world.
        day: day index, 0 being ``scenario.start``.
    """
    sites = {s.id: s for s in scenario.sites}
    for event in sorted(scenario.events, key=lambda e: e.day):
        if event.day > day:
            continue
        if isinstance(event, SiteJoins):
            sites[event.site.id] = event.site
            continue
        if isinstance(event, ModelVersionChange):
            continue
        targets = [event.site] if isinstance(event.site, str) else list(sites) if event.site is None else []
        for site_id in targets:
            site = sites[site_id]
            if isinstance(event, DeviceSwap):
                share = {d.id: d.share for d in site.devices}.get(event.replaces, event.device.share)
                kept = tuple(d for d in site.devices if d.id != event.replaces)
                site = site.model_copy(update={"devices": (*kept, event.device.model_copy(update={"share": share}))})
            elif isinstance(event, DeviceAdded):
                site = site.model_copy(update={"devices": (*site.devices, event.device)})
            elif isinstance(event, CalibrationDrift):
                reached = _ramp(day, event.day, event.days)
                devices = tuple(
                    d.model_copy(
                        update={
                            "brightness": d.brightness + reached * event.brightness,
                            "contrast": d.contrast * (1 + reached * (event.contrast_factor - 1)),
                        }
                    )
                    if event.device in (None, d.id)
                    else d
                    for d in site.devices
                )
                site = site.model_copy(update={"devices": devices})
            elif isinstance(event, PrevalenceChange):
                population = site.population.model_copy(update={"prevalence": event.prevalence})
                site = site.model_copy(update={"population": population})
            elif isinstance(event, PopulationChange):
                changes = {
                    k: v
                    for k, v in {
                        "child_share": event.child_share,
                        "age_mean": event.age_mean,
                        "female_share": event.female_share,
                    }.items()
                    if v is not None
                }
                site = site.model_copy(update={"population": site.population.model_copy(update=changes)})
            elif isinstance(event, TagErrorChange):
                site = site.model_copy(update={"tag_errors": event.tag_errors})
            elif isinstance(event, PositioningProblem):
                if event.days is None or day < event.day + event.days:
                    site = site.model_copy(update={"positioning": event.positioning})
            elif isinstance(event, VolumeChange):
                if event.days is None or day < event.day + event.days:
                    site = site.model_copy(update={"daily_volume": round(site.daily_volume * event.factor)})
            elif isinstance(event, ErrorBurst) and day < event.day + event.days:
                rates = {**site.failure_rates, event.error_type: event.rate}
                site = site.model_copy(update={"failure_rates": rates})
            sites[site_id] = site
    return list(sites.values())


def model_on(scenario: Scenario, day: int, default: str = "champion") -> str:
    """Return the model version or alias the inference service uses on ``day``."""
    chosen = default
    for event in sorted(scenario.events, key=lambda e: e.day):
        if isinstance(event, ModelVersionChange) and event.day <= day:
            chosen = event.model
    return chosen


def changed_sites(scenario: Scenario, base: Scenario, day: int) -> set[str]:
    """Return the sites whose stream on ``day`` differs from ``base``'s (same seed assumed).

    Planning is seeded by (seed, day, site), so a site in the same state on a day sends the same
    studies in both worlds: a variant of a simulated world needs only its changed site-days simulated.
    """
    if scenario.seed != base.seed or model_on(scenario, day) != model_on(base, day):
        return {s.id for s in sites_on(scenario, day)} | {s.id for s in sites_on(base, day)}
    ours = {s.id: s for s in sites_on(scenario, day)}
    theirs = {s.id: s for s in sites_on(base, day)}
    return {site for site in ours.keys() | theirs.keys() if ours.get(site) != theirs.get(site)}
