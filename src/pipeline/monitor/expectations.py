"""Great Expectations suites run on a monitoring window, inside the database.

The suites (``great_expectations/gx/expectations/*.json``) are committed; validation results and
Data Docs go to the data folder. Each window is exposed to GX as a pair of views over the store
(the window's inference logs, and the DICOM tags of its studies), so every expectation runs as
SQL where the rows are, on PostgreSQL or SQLite alike, and no row is pulled into pandas.
A view rather than a GX query asset: GX learns a query asset's columns by running the whole
query, which costs a full read of the window (measured in ``make bench-monitor``).

Each outcome is split by site (GX returns the site of every unexpected row), which is what the
per-site quality findings need.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.store.schema import inference_logs, studies

log = logging.getLogger(__name__)

SUITES = ("inference_logs", "dicom_tags")
"""The suites every window is validated against, each on its own view of the window."""

EXAMPLES = 5
"""How many unexpected rows of each failed expectation are kept as examples."""


@dataclass(frozen=True)
class Outcome:
    """One expectation's verdict on a window, split by site.

    Args:
        suite: the suite it belongs to.
        rule: a short name (``not_null``, ``in_set``, ``range``, ``size``, ``unique``...).
        column: the column it checks.
        description: what it expects, in words.
        success: whether GX found the window as expected.
        checked: rows it looked at.
        unexpected: rows that broke it.
        by_site: rows that broke it, per site.
        examples: a few of those rows (pseudonymous ``study_id``, ``site``, the value).
        error: why GX could not evaluate it (a broken column), else None.
    """

    suite: str
    rule: str
    column: str
    description: str
    success: bool
    checked: int
    unexpected: int
    by_site: dict[str, int] = field(default_factory=dict)
    examples: tuple[dict[str, Any], ...] = ()
    error: str | None = None

    @property
    def key(self) -> str:
        """Return ``column.rule``: the feature and statistic the quality findings use."""
        return f"{self.column}.{self.rule}"


@dataclass(frozen=True)
class QualityRun:
    """The outcomes of every suite on a window, the rows per site each suite saw, and the Data Docs page."""

    outcomes: tuple[Outcome, ...]
    rows: dict[str, dict[str, int]]  # suite -> site -> rows
    data_docs: Path | None = None

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]


def _window_selects(start: datetime, end: datetime) -> dict[str, sa.Select]:
    in_window = sa.and_(inference_logs.c.received_at >= start, inference_logs.c.received_at < end)
    logs = sa.select(
        *(
            inference_logs.c[name]
            for name in (
                "study_id",
                "model_version",
                "site",
                "received_at",
                "status",
                "error_type",
                "latency_s",
                "prob_abnormal",
                "threshold",
                "decision",
            )
        ),
        sa.func.length(inference_logs.c.embedding).label("embedding_bytes"),
    ).where(in_window)
    tags = sa.select(
        *(c for c in studies.c if not c.name.startswith("img_") and c.name != "dicom_uri"),
        (studies.c.rows * studies.c.pixel_spacing_mm).label("field_of_view_mm"),
    ).where(studies.c.study_id.in_(sa.select(inference_logs.c.study_id).where(in_window)))
    return {"inference_logs": logs, "dicom_tags": tags}


def _view_names(start: datetime, end: datetime) -> dict[str, str]:
    digest = hashlib.sha1(f"{start.isoformat()}|{end.isoformat()}".encode()).hexdigest()[:12]
    return {suite: f"gx_window_{suite}_{digest}" for suite in SUITES}


@contextmanager
def window_views(engine: Engine, start: datetime, end: datetime) -> Iterator[dict[str, str]]:
    """Create one view per suite over the window ``[start, end)``; drop them on the way out.

    The names are derived from the window, so a crashed run's views are replaced, not piled up.
    """
    names = _view_names(start, end)
    selects = _window_selects(start, end)
    with engine.begin() as conn:
        for suite, name in names.items():
            body = selects[suite].compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE VIEW {name} AS {body}"))
    try:
        yield names
    finally:
        with engine.begin() as conn:
            for name in names.values():
                conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))


def gx_context(project_dir: Path, data_dir: Path) -> Any:
    """Return a GX context reading the committed suites under ``project_dir`` and writing to ``data_dir``.

    An ephemeral context, so that the data sources of a run (which hold the store's URL) are
    never written to the committed ``great_expectations.yml``. Validation results go to
    ``data_dir/validations`` and Data Docs to ``data_dir/data_docs``.
    """
    from pipeline.logs import configure_logging

    configure_logging()  # GX logs loudly at import
    from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

    import great_expectations as gx

    def files(path: Path) -> dict[str, str]:
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(path.resolve())}

    suites_dir = project_dir / "gx" / "expectations"
    if not suites_dir.is_dir():
        raise FileNotFoundError(f"no Great Expectations suites at {suites_dir} (set PIPELINE_GX_PROJECT_DIR)")
    config = DataContextConfig(
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": files(suites_dir)},
            "validation_results_store": {
                "class_name": "ValidationResultsStore",
                "store_backend": files(data_dir / "validations"),
            },
            "checkpoint_store": {
                "class_name": "CheckpointStore",
                "store_backend": {"class_name": "InMemoryStoreBackend"},
            },
            "validation_definition_store": {
                "class_name": "ValidationDefinitionStore",
                "store_backend": {"class_name": "InMemoryStoreBackend"},
            },
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": files(data_dir / "data_docs"),
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _outcome(suite: str, result: Any) -> tuple[Outcome, str | None]:
    """Return the outcome of one expectation and GX's query for its unexpected rows (column checks only)."""
    config = result.expectation_config
    kwargs, meta = config.kwargs, config.meta or {}
    rule = str(meta.get("rule", config.type))
    column = str(kwargs.get("column") or meta.get("column") or "*")
    info = result.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    body = result.result or {}
    by_site: Counter[str] = Counter()
    query = None
    if config.type == "unexpected_rows_expectation":
        rows = (body.get("details") or {}).get("unexpected_rows") or []
        unexpected = checked = int(body.get("observed_value") or 0)
        by_site.update(str(row["site"]) for row in rows if "site" in row)
        examples = [dict(row) for row in rows[:EXAMPLES]]
        description = config.description or rule
    else:
        unexpected = int(body.get("unexpected_count") or 0)
        checked = int(body.get("element_count") or 0)
        examples = [
            {"study_id": row.get("study_id"), "site": row.get("site"), "value": row.get(column)}
            for row in (body.get("unexpected_index_list") or [])[:EXAMPLES]
        ]
        description = _describe(config.type, kwargs)
        query = body.get("unexpected_index_query") if unexpected else None
    outcome = Outcome(
        suite=suite,
        rule=rule,
        column=column,
        description=description,
        success=bool(result.success) and error is None,
        checked=checked,
        unexpected=unexpected,
        by_site=dict(by_site),
        examples=tuple(_plain(e) for e in examples),
        error=error,
    )
    return outcome, query


def _count_by_site(engine: Engine, query: str) -> dict[str, int]:
    """Return the unexpected rows per site, from GX's own query for them (run where the rows are)."""
    with engine.connect() as conn:
        inner = query.strip().rstrip(";")
        result = conn.execute(sa.text(f"SELECT site, count(*) FROM ({inner}) AS unexpected GROUP BY site"))
        return {str(site): int(n) for site, n in result}


def _describe(kind: str, kwargs: dict[str, Any]) -> str:
    column = kwargs.get("column")
    if kind == "expect_column_values_to_not_be_null":
        return f"{column} is present"
    if kind == "expect_column_values_to_be_in_set":
        return f"{column} is one of {', '.join(map(str, kwargs.get('value_set', [])))}"
    if kind == "expect_column_values_to_be_between":
        return f"{column} lies in [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    if kind == "expect_column_value_lengths_to_equal":
        return f"{column} is {kwargs.get('value')} bytes long"
    return f"{kind} on {column}"


def _plain(example: dict[str, Any]) -> dict[str, Any]:
    """Return the example JSON-able (bytes become their length, numbers plain floats)."""
    out: dict[str, Any] = {}
    for key, value in example.items():
        if isinstance(value, bytes | bytearray | memoryview):
            value = f"<{len(bytes(value))} bytes>"
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = float(value) if isinstance(value, int | float) or hasattr(value, "__float__") else str(value)
        out[str(key)] = value
    return out


def _rows_by_site(engine: Engine, views: dict[str, str]) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for suite, name in views.items():
            result = conn.execute(sa.text(f"SELECT site, count(*) FROM {name} GROUP BY site"))
            rows[suite] = {str(site): int(n) for site, n in result}
    return rows


def run_expectations(
    engine: Engine,
    start: datetime,
    end: datetime,
    *,
    project_dir: Path,
    data_dir: Path,
    build_docs: bool = True,
) -> QualityRun:
    """Validate the window ``[start, end)`` against every suite; store the results and build Data Docs.

    Args:
        engine: the store (PostgreSQL or SQLite).
        start: inclusive start of the window.
        end: exclusive end.
        project_dir: the GX project (``great_expectations/``) holding the committed suites.
        data_dir: where validation results and Data Docs are written.
        build_docs: whether to render the window's Data Docs pages.

    Returns:
        Every expectation's outcome split by site, with the rows each suite saw per site.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context = gx_context(project_dir, data_dir)
    url = engine.url.render_as_string(hide_password=False)
    sources = context.data_sources
    source = (sources.add_sqlite if engine.dialect.name == "sqlite" else sources.add_postgres)(
        name="store", connection_string=url
    )
    run_id = RunIdentifier(run_name=f"{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}", run_time=start)
    outcomes: list[Outcome] = []
    keys = []
    with window_views(engine, start, end) as views:
        rows = _rows_by_site(engine, views)
        for suite_name, view in views.items():
            suite = context.suites.get(suite_name)
            asset = source.add_table_asset(suite_name, table_name=view)
            batch = asset.add_batch_definition_whole_table("window").get_batch()
            result = batch.validate(
                suite,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["study_id", "site"],
                    "partial_unexpected_count": EXAMPLES,
                    "return_unexpected_index_query": True,
                },
            )
            for item in result.results:
                outcome, query = _outcome(suite_name, item)
                if query:
                    outcome = replace(outcome, by_site=_count_by_site(engine, query))
                outcomes.append(outcome)
            _trim(result)
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(suite_name),
                run_id=run_id,
                batch_identifier=suite_name,
            )
            context.validation_results_store.set(key, result)
            keys.append(key)
    docs = None
    if build_docs:
        pages = context.build_data_docs(resource_identifiers=keys)
        docs = data_dir / "data_docs" / "index.html" if pages else None
    failed = sum(not o.success for o in outcomes)
    log.info("expectations on %s..%s: %d run, %d failed", start.isoformat(), end.isoformat(), len(outcomes), failed)
    return QualityRun(tuple(outcomes), rows, docs)


def _trim(result: Any) -> None:
    """Keep the stored result small: the unexpected rows beyond the examples are dropped."""
    for item in result.results:
        body = item.result or {}
        body.pop("unexpected_index_query", None)
        for name in ("unexpected_index_list", "unexpected_list"):
            if isinstance(body.get(name), list):
                body[name] = body[name][:EXAMPLES]
        details = body.get("details") or {}
        if isinstance(details.get("unexpected_rows"), list):
            details["unexpected_rows"] = details["unexpected_rows"][:EXAMPLES]
