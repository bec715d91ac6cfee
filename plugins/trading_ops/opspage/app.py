"""The FastAPI app of the Ops page, mounted by the Airflow plugin (plugins/ops_page.py) under `URL_PREFIX`.

Routes: `/` the page (server-side HTML), `/api/sections` every section's data, `/api/sections/{name}` one section.

Authentication. Airflow does not protect a plugin's FastAPI app (apache/airflow#72655), so the app itself depends on
`requires_access_view(AccessView.PLUGINS)` from `airflow.api_fastapi.core_api.security`: the API server's own check,
which resolves the user from an `Authorization: Bearer <JWT>` header (what `POST /auth/token` hands a script) or,
without one, from the `_token` cookie (`COOKIE_NAME_JWT_TOKEN`). That cookie is how the browser's page gets the
token: the auth manager's login (`/auth/login`, simple auth manager `routes/login.py`) sets `_token` as an
HttpOnly, SameSite=Lax cookie at `[api] base_url`'s path; the 3.3 UI keeps no token in localStorage (its script
cannot read the cookie, its requests simply carry it), and the same cookie goes with the iframe in
which the UI shows this page (`external_views` with a `url_route`) and every same-origin request it makes; the root
app's JWTRefreshMiddleware refreshes it. No token is ever put in the page. No credential: 401; a bad token: 403;
a user without the Plugins view: 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from trading_ops.opspage.sections import SECTIONS, build_section

URL_PREFIX = "/trading-ops"
TEMPLATES = Path(__file__).parent / "templates"


def _authenticated():
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return Depends(requires_access_view(AccessView.PLUGINS))


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    environment.filters["size"] = human_size
    environment.filters["duration"] = human_duration
    environment.filters["moment"] = moment
    environment.globals["rto_trend"] = rto_trend
    return environment


def human_size(number: int | None) -> str:
    from trading_ops.logs.report import human_size as size

    return "-" if number is None else size(number)


def human_duration(seconds: float | None) -> str:
    from datetime import timedelta

    from trading_ops.alerting import format_duration

    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(timedelta(seconds=round(seconds)))


def moment(value: datetime | str | None) -> str:
    """`2026-11-01 01:00:07` (UTC) for a datetime or an ISO string; the ISO value stays in the <time> element."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def rto_trend(drills: list[dict], budget: float, width: int = 360, height: int = 90) -> dict:
    """Points of a small line chart of the passed drills' RTO, oldest left, scaled to the slowest of them; the
    budget is a line when it falls inside that scale (`budget_y` None: above the chart, far from reached)."""
    passed = [drill for drill in reversed(drills) if drill["outcome"] == "passed" and drill["rto_seconds"]]
    slowest = max((drill["rto_seconds"] for drill in passed), default=budget)
    top = (budget if budget <= slowest * 2 else slowest) * 1.25
    step = width / max(len(passed) - 1, 1)
    points = [
        {
            "x": round(index * step if len(passed) > 1 else width / 2, 1),
            "y": round(height - drill["rto_seconds"] / top * height, 1),
            "rto": drill["rto_seconds"],
            "drill_id": drill["drill_id"],
        }
        for index, drill in enumerate(passed)
    ]
    budget_y = round(height - budget / top * height, 1) if budget <= top else None
    return {"width": width, "height": height, "points": points, "budget_y": budget_y, "top": top}


def page_data(now: datetime | None = None) -> dict:
    from trading_ops.policy import load_policy

    policy = load_policy()
    now = now or datetime.now(UTC)
    return {
        "generated_at": now.isoformat().replace("+00:00", "Z"),
        "sections": {section.name: build_section(section, policy, now) for section in SECTIONS},
    }


def create_app() -> FastAPI:
    app = FastAPI(title="Trading ops", dependencies=[_authenticated()], docs_url=None, redoc_url=None)
    environment = _environment()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        data = page_data()
        return environment.get_template("page.html").render(
            generated_at=data["generated_at"], sections=[(s, data["sections"][s.name]) for s in SECTIONS]
        )

    @app.get("/api/sections")
    def all_sections() -> dict:
        return page_data()

    @app.get("/api/sections/{name}")
    def one_section(name: str) -> dict:
        from trading_ops.policy import load_policy

        for section in SECTIONS:
            if section.name == name:
                return build_section(section, load_policy(), datetime.now(UTC))
        raise HTTPException(
            404, f"There is no section {name!r}; the sections are {', '.join(s.name for s in SECTIONS)}."
        )

    return app
