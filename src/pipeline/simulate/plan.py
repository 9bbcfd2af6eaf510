"""What happens on one simulated day: which studies arrive, from whom, on which device, with which truth.

Planning is separate from rendering so the ground truth of a day is cheap to compute and every
random draw is seeded by (scenario seed, day, site): the same day always plans the same
studies, and adding a site or an event elsewhere does not change another site's stream.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal

import numpy as np

from pipeline.simulate.phantom import FOREIGN_OBJECTS, Acquisition, Patient
from pipeline.simulate.scenario import Device, Scenario, Site
from pipeline.simulate.world import sites_on
from pipeline.store.schema import ErrorType

UID_ROOT = "1.2.826.0.1.3680043.10.1543"  # a private UID root for simulated studies

# Share of a day's studies per hour (outpatient hours busier than the night).
_HOURLY = np.array([1, 1, 1, 1, 1, 1, 2, 4, 7, 8, 8, 7, 6, 7, 8, 8, 7, 6, 4, 3, 2, 2, 1, 1], dtype=float)
HOURLY_SHARE = _HOURLY / _HOURLY.sum()


@dataclass(frozen=True)
class TagOverrides:
    """How the stored DICOM tags differ from the truth (mis-filled tags)."""

    drop_age: bool = False
    view_position: str | None = None  # written instead of the true view
    body_part: str | None = None  # written instead of CHEST


@dataclass(frozen=True)
class PlannedStudy:
    """One study a site sends on a day, with everything needed to render it and its ground truth."""

    study_uid: str
    site: Site
    device: Device
    acquired_at: datetime
    patient: Patient
    acquisition: Acquisition
    tags: TagOverrides
    failure: ErrorType | None  # a processing failure the production service will hit
    render_seed: int
    day: int

    @property
    def abnormal(self) -> bool:
        return bool(self.patient.findings)


def site_rng(scenario: Scenario, day: int, site_id: str) -> np.random.Generator:
    """Return the generator for one site's day: seeded by (scenario seed, day, site id)."""
    return np.random.default_rng([scenario.seed, day, zlib.crc32(site_id.encode())])


def plan_day(scenario: Scenario, day: int) -> list[PlannedStudy]:
    """Return every study of ``day`` (0 = ``scenario.start``) across sites, in acquisition order."""
    studies: list[PlannedStudy] = []
    for site in sites_on(scenario, day):
        studies.extend(_plan_site_day(scenario, site, day))
    studies.sort(key=lambda s: (s.acquired_at, s.study_uid))
    return studies


def _plan_site_day(scenario: Scenario, site: Site, day: int) -> list[PlannedStudy]:
    rng = site_rng(scenario, day, site.id)
    midnight = datetime.combine(scenario.start + timedelta(days=day), time(0), tzinfo=UTC)
    count = int(rng.poisson(site.daily_volume)) if site.daily_volume else 0
    hours = rng.choice(24, size=count, p=HOURLY_SHARE)
    seconds = np.sort(hours * 3600 + rng.uniform(0, 3600, count))
    shares = np.array([d.share for d in site.devices])
    device_index = rng.choice(len(site.devices), size=count, p=shares / shares.sum())
    pop, pos, tags = site.population, site.positioning, site.tag_errors
    findings = list(pop.finding_mix)
    finding_p = np.array([pop.finding_mix[f] for f in findings])
    finding_p = finding_p / finding_p.sum()
    failure_types = list(site.failure_rates)
    failure_p = np.array([site.failure_rates[t] for t in failure_types])
    site_key = zlib.crc32(site.id.encode())

    planned = []
    for i in range(count):
        device = site.devices[int(device_index[i])]
        child = rng.random() < pop.child_share
        age = rng.uniform(0.2, 15.0) if child else float(np.clip(rng.normal(pop.age_mean, pop.age_sd), 16, 100))
        u = rng.random()
        sex = "F" if u < pop.female_share else "M"
        finding = (findings[int(rng.choice(len(findings), p=finding_p))],) if rng.random() < pop.prevalence else ()
        view: Literal["PA", "AP"] = "AP" if rng.random() < pos.ap_share else "PA"
        apex_cut = rng.random() < pos.apex_cut_rate
        objects = (str(rng.choice(FOREIGN_OBJECTS)),) if rng.random() < pos.foreign_object_rate else ()
        acquisition = Acquisition(
            view=view,
            brightness=device.brightness,
            contrast=device.contrast,
            gamma=device.gamma,
            noise_std=device.noise_std,
            blur_sigma_px=device.blur_sigma_px,
            downsample=device.downsample,
            collimation_top=float(rng.uniform(0.3, 0.4)) if apex_cut else float(rng.uniform(0.0, 0.03)),
            rotation_deg=float(rng.normal(0, pos.rotation_sd_deg)),
            foreign_objects=objects,
        )
        overrides = TagOverrides(
            drop_age=bool(rng.random() < tags.missing_age),
            view_position=("LL" if view == "PA" else "PA") if rng.random() < tags.wrong_view_position else None,
            body_part=str(rng.choice(["ABDOMEN", "SHOULDER", ""])) if rng.random() < tags.wrong_body_part else None,
        )
        draws = rng.random(len(failure_types))
        failed = [t for t, d, p in zip(failure_types, draws, failure_p, strict=True) if d < p]
        planned.append(
            PlannedStudy(
                study_uid=f"{UID_ROOT}.{scenario.seed}.{day}.{site_key}.{i + 1}",
                site=site,
                device=device,
                acquired_at=midnight + timedelta(seconds=float(seconds[i])),
                patient=Patient(age_years=float(age), sex=sex, findings=finding),  # type: ignore[arg-type]
                acquisition=acquisition,
                tags=overrides,
                failure=ErrorType(failed[0]) if failed else None,
                render_seed=int(rng.integers(0, 2**63 - 1)),
                day=day,
            )
        )
    return planned
