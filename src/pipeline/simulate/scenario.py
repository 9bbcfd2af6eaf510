"""Scenario files: the hospitals, their scanners and patients, and the incidents to inject.

A scenario is YAML validated by the pydantic models below; an unknown key or a bad value
fails with a message naming it. ``docs/scenarios.md`` documents every field and event type.
The state of a site on a given day is the base site with every event up to that day applied
(``site_state``), so any day can be generated on its own, which keeps re-runs idempotent.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.simulate.phantom import FINDINGS
from pipeline.store.schema import ErrorType


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Device(_Strict):
    """One scanner and its systematic effect on images and tags."""

    id: str
    manufacturer: str = "Acme Medical"
    model_name: str = "DX-1000"
    modality: Literal["DX", "CR"] = "DX"
    share: float = Field(1.0, gt=0, description="Relative share of the site's studies on this device.")
    brightness: float = Field(0.0, ge=-0.5, le=0.5, description="Offset added to intensities in [0, 1].")
    contrast: float = Field(1.0, gt=0, le=3)
    gamma: float = Field(1.0, gt=0, le=5)
    noise_std: float = Field(0.01, ge=0, le=0.3)
    blur_sigma_px: float = Field(0.0, ge=0, le=10)
    downsample: int = Field(1, ge=1, le=8, description="Resolution loss: acquire at 1/downsample and upscale.")
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2"
    bits_stored: int = Field(12, ge=8, le=16)
    kvp: float = Field(110.0, gt=0, le=200)
    exposure_mas: float = Field(2.0, gt=0, le=100)
    pixel_spacing_mm: float = Field(0.15, gt=0, le=2)


class Population(_Strict):
    """Who the site's patients are."""

    age_mean: float = Field(55.0, ge=0, le=110)
    age_sd: float = Field(16.0, ge=0, le=50)
    child_share: float = Field(0.0, ge=0, le=1, description="Share of patients aged 0-15.")
    female_share: float = Field(0.5, ge=0, le=1)
    prevalence: float = Field(0.25, ge=0, le=1, description="Share of studies with a finding.")
    finding_mix: dict[str, float] = Field(
        default_factory=lambda: {"nodule": 0.4, "pneumothorax": 0.25, "effusion": 0.35}
    )

    @model_validator(mode="after")
    def _known_findings(self) -> Population:
        unknown = sorted(set(self.finding_mix) - set(FINDINGS))
        if unknown:
            raise ValueError(f"finding_mix: unknown finding(s) {unknown}; known: {list(FINDINGS)}")
        if not any(v > 0 for v in self.finding_mix.values()):
            raise ValueError("finding_mix: at least one finding needs a positive weight")
        return self


class Positioning(_Strict):
    """How studies are acquired at the site."""

    ap_share: float = Field(0.1, ge=0, le=1, description="Share of AP (bedside) instead of PA views.")
    rotation_sd_deg: float = Field(2.0, ge=0, le=45)
    apex_cut_rate: float = Field(0.01, ge=0, le=1, description="Share of studies whose collimation cuts the lung apex.")
    foreign_object_rate: float = Field(0.05, ge=0, le=1)


class TagErrors(_Strict):
    """Rates of mis-filled DICOM tags."""

    missing_age: float = Field(0.0, ge=0, le=1)
    wrong_view_position: float = Field(0.0, ge=0, le=1)
    wrong_body_part: float = Field(0.0, ge=0, le=1)


class Site(_Strict):
    """A hospital: its devices, patients, positioning habits, tags and failure rates."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    institution: str = "General Hospital"
    daily_volume: int = Field(200, ge=0, le=1_000_000)
    devices: tuple[Device, ...] = Field(min_length=1)
    population: Population = Population()
    positioning: Positioning = Positioning()
    tag_errors: TagErrors = TagErrors()
    failure_rates: dict[ErrorType, float] = Field(
        default_factory=lambda: {ErrorType.TIMEOUT: 0.002, ErrorType.CUDA_OOM: 0.0005},
        description="Per-study probability of a processing failure of each type.",
    )

    @model_validator(mode="after")
    def _unique_devices(self) -> Site:
        ids = [d.id for d in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError(f"site {self.id}: device ids repeat: {ids}")
        return self


# --- events -------------------------------------------------------------------------------


class _Event(_Strict):
    day: int = Field(ge=0, description="Day index (0 = the scenario's start) the event begins.")


class SiteJoins(_Event):
    """A new hospital starts sending studies."""

    type: Literal["site_joins"]
    site: Site


class DeviceSwap(_Event):
    """A site's device is replaced by another (all its studies move to the new one)."""

    type: Literal["device_swap"]
    site: str
    replaces: str
    device: Device


class DeviceAdded(_Event):
    """A site adds a device beside the ones it has."""

    type: Literal["device_added"]
    site: str
    device: Device


class CalibrationDrift(_Event):
    """A device's brightness (and optionally contrast) drifts linearly over ``days`` days."""

    type: Literal["calibration_drift"]
    site: str
    device: str | None = Field(None, description="Default: every device of the site.")
    days: int = Field(ge=1)
    brightness: float = Field(0.0, ge=-0.5, le=0.5, description="Offset reached at the end of the drift.")
    contrast_factor: float = Field(1.0, gt=0, le=3, description="Contrast multiplier reached at the end.")


class PrevalenceChange(_Event):
    """The share of studies with a finding changes (e.g. a screening programme starts)."""

    type: Literal["prevalence_change"]
    site: str
    prevalence: float = Field(ge=0, le=1)


class PopulationChange(_Event):
    """The site's patients change (e.g. a paediatric ward starts sending studies)."""

    type: Literal["population_change"]
    site: str
    child_share: float | None = Field(None, ge=0, le=1)
    age_mean: float | None = Field(None, ge=0, le=110)
    female_share: float | None = Field(None, ge=0, le=1)


class TagErrorChange(_Event):
    """Rates of mis-filled tags change (e.g. a modality worklist misconfiguration)."""

    type: Literal["tag_error_change"]
    site: str
    tag_errors: TagErrors


class PositioningProblem(_Event):
    """Positioning degrades for ``days`` days (default: for good)."""

    type: Literal["positioning_problem"]
    site: str
    days: int | None = Field(None, ge=1)
    positioning: Positioning


class ErrorBurst(_Event):
    """Processing failures of one type rise to ``rate`` for ``days`` days."""

    type: Literal["error_burst"]
    site: str | None = Field(None, description="Default: every site.")
    error_type: ErrorType
    rate: float = Field(ge=0, le=1)
    days: int = Field(1, ge=1)


class VolumeChange(_Event):
    """A site's daily volume changes for ``days`` days (default: for good); 0 is an outage: the site goes silent."""

    type: Literal["volume_change"]
    site: str
    factor: float = Field(ge=0, le=100, description="Multiplier of the site's daily volume.")
    days: int | None = Field(None, ge=1)


class ModelVersionChange(_Event):
    """The inference service switches to another registered model version (or alias)."""

    type: Literal["model_version_change"]
    model: str = Field(description="A version number or an alias such as 'champion'.")


Event = Annotated[
    SiteJoins
    | DeviceSwap
    | DeviceAdded
    | CalibrationDrift
    | PrevalenceChange
    | PopulationChange
    | TagErrorChange
    | PositioningProblem
    | ErrorBurst
    | VolumeChange
    | ModelVersionChange,
    Field(discriminator="type"),
]
EVENT_TYPES = tuple(
    cls.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for cls in (
        SiteJoins,
        DeviceSwap,
        DeviceAdded,
        CalibrationDrift,
        PrevalenceChange,
        PopulationChange,
        TagErrorChange,
        PositioningProblem,
        ErrorBurst,
        VolumeChange,
        ModelVersionChange,
    )
)


class Feedback(_Strict):
    """How radiologists' outcomes come back: a share of studies, after a delay."""

    rate: float = Field(0.3, ge=0, le=1)
    min_delay_days: float = Field(1.0, ge=0)
    max_delay_days: float = Field(7.0, ge=0)
    extra_rate_when_flagged: float = Field(
        0.5, ge=0, le=1, description="Further share of studies sent to a radiologist that get an outcome back."
    )


class Scenario(_Strict):
    """A simulated world: sites, the passage of time, and what happens when."""

    name: str
    description: str = ""
    start: date
    days: int = Field(60, ge=1, le=3650)
    seed: int = 0
    image_size: int = Field(128, ge=32, le=4096)
    sites: tuple[Site, ...] = Field(min_length=1)
    events: tuple[Event, ...] = ()
    feedback: Feedback = Feedback()

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        sites = {s.id for s in self.sites}
        if len(sites) != len(self.sites):
            raise ValueError("site ids repeat")
        for i, event in enumerate(self.events):
            if isinstance(event, SiteJoins):
                if event.site.id in sites:
                    raise ValueError(f"events[{i}] (site_joins): site {event.site.id!r} already exists")
                sites.add(event.site.id)
        devices = {s.id: {d.id for d in s.devices} for s in self.sites}
        for event in self.events:
            if isinstance(event, SiteJoins):
                devices[event.site.id] = {d.id for d in event.site.devices}
            elif isinstance(event, DeviceAdded | DeviceSwap) and event.site in devices:
                devices[event.site].add(event.device.id)
        for i, event in enumerate(self.events):
            site = getattr(event, "site", None)
            if isinstance(site, str) and site not in sites:
                raise ValueError(f"events[{i}] ({event.type}): unknown site {site!r}; known: {sorted(sites)}")
            device = getattr(event, "replaces", None) or getattr(event, "device", None)
            if isinstance(device, str) and isinstance(site, str) and device not in devices[site]:
                raise ValueError(f"events[{i}] ({event.type}): site {site!r} has no device {device!r}")
        return self


def with_volume(scenario: Scenario, *, factor: float | None = None, per_site: int | None = None) -> Scenario:
    """Return ``scenario`` with every site's daily volume (joining sites too) scaled by ``factor`` or set to ``per_site``."""

    def scaled(site: Site) -> Site:
        volume = (
            per_site if per_site is not None else round(site.daily_volume * (factor if factor is not None else 1.0))
        )
        return site.model_copy(update={"daily_volume": volume})

    events = tuple(
        e.model_copy(update={"site": scaled(e.site)}) if isinstance(e, SiteJoins) else e for e in scenario.events
    )
    return scenario.model_copy(update={"sites": tuple(scaled(s) for s in scenario.sites), "events": events})


def days_between(scenario: Scenario, first: date | None = None, count: int | None = None) -> list[int]:
    """Return the day indexes from calendar date ``first`` (default the start) for ``count`` days (default all).

    Raises:
        ScenarioError: ``first`` lies before the scenario's start.
    """
    offset = 0 if first is None else (first - scenario.start).days
    if offset < 0:
        raise ScenarioError(f"{scenario.name}: start {first} is before the scenario's start {scenario.start}")
    return list(range(offset, offset + (count if count is not None else scenario.days)))


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


class _ScenarioLoader(yaml.SafeLoader):
    """YAML's safe loader without implicit timestamps: a date stays text until the schema parses it, so a day that
    does not exist (``2026-02-30``) is named by its field instead of failing inside the YAML parser."""


_ScenarioLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _events(path: Path, raw: dict) -> list:
    events = raw.get("events", [])
    if not isinstance(events, list):
        got = "nothing" if events is None else type(events).__name__
        raise ScenarioError(f"{path}: events: a list of events, got {got}")
    return events


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Return the mapping in ``path``, merged over the file its ``extends`` key names (events appended)."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ScenarioLoader)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping, got {type(raw).__name__}")
    _events(path, raw)
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return raw
    if not isinstance(parent_name, str):
        raise ScenarioError(f"{path}: extends: the path of another scenario file, got {type(parent_name).__name__}")
    parent_path = (path.parent / parent_name).resolve()
    if parent_path in seen:
        raise ScenarioError(f"{path}: extends {parent_name!r} in a cycle")
    if not parent_path.is_file():
        raise ScenarioError(f"{path}: extends: no scenario file {parent_name!r} (looked for {parent_path})")
    parent = _read_yaml(parent_path, (*seen, parent_path))
    events = [*_events(parent_path, parent), *_events(path, raw)]
    raw.pop("events", None)
    return {**parent, **raw, "events": events}


def load_scenario(path: str | Path) -> Scenario:
    """Return the scenario in the YAML file at ``path``.

    A file may start from another with ``extends: other.yaml`` (relative to it): its keys
    replace the other's, and its events are added to the other's.

    Raises:
        ScenarioError: the file is missing, is not YAML, or does not fit the schema; the message names the file
            and the field, on one line.
    """
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{path}: {problems}") from exc
