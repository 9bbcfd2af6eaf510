"""The monitoring page inside the Airflow UI (an Airflow 3.1+ plugin).

``fastapi_apps`` mounts the page's app (``pipeline.web``) in Airflow's API server under
``/pipeline-monitoring``, behind Airflow's own authentication (any user allowed to see the UI): the app is
made with ``auth="airflow"``, so it asks for no credential of its own and relies on the dependency passed here;
``external_views`` adds "Monitoring" to the UI's Browse menu, rendered in an iframe at
``/plugin/pipeline-monitoring``. Plugin API: Airflow's "Plugins" docs (administration-and-deployment/plugins,
"External Views" and the example there). The page itself lives in ``src/pipeline/web/``.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends

from pipeline.web import create_app

#: Where Airflow's API server mounts the page (the UI frames ``<base url>/pipeline-monitoring/``).
URL_PREFIX = "/pipeline-monitoring"


class MonitoringPagePlugin(AirflowPlugin):
    """Per site: the headline metric, open alerts, drift by feature and day, the relabel queue, model versions."""

    name = "pipeline_monitoring"
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin declares these as class-level lists)
        {
            # Airflow's sign-in guards the page here, so it needs no PIPELINE_WEB_TOKEN of its own
            "app": create_app(auth="airflow", dependencies=[Depends(requires_access_view(AccessView.WEBSITE))]),
            "url_prefix": URL_PREFIX,
            "name": "Pipeline monitoring page",
        }
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Monitoring",
            # relative (no leading slash): the UI resolves it against its base URL, so a proxy prefix works
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": "pipeline-monitoring",
            "destination": "nav",
            "category": "browse",
        }
    ]
