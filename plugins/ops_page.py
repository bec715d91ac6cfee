"""The Airflow plugin of the Ops page: the FastAPI app of `trading_ops.opspage` and its "Trading ops" navigation
entry.

This file is the one module of plugins/ that Airflow's plugin manager loads (plugins/.airflowignore keeps it out of
the trading_ops package, which is a library on PYTHONPATH). It only wires: building the app reads nothing, so
loading the plugin in every Airflow process touches no database, file or network.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from trading_ops.opspage.app import URL_PREFIX, create_app


class TradingOpsPagePlugin(AirflowPlugin):
    name = "trading_ops_page"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Trading ops"}]
    # With a url_route the UI shows the page inside its own frame (same origin: the _token cookie goes along).
    external_views = [
        {
            "name": "Trading ops",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "trading-ops",
            # A button of its own in the navigation bar, not an entry under Plugins.
            "nav_top_level": True,
        }
    ]
