"""A capacity review: read the live objects, print what `apply` would change, change it only when asked, and record
what differs from the policy afterwards in the findings history, alerting by severity.

`review_workload` and `review_caches` are what capacity_review's tasks call (and tests). Findings go to the security
findings history (`security.findings_conn_id`, schema `security.findings_schema`) under the checks
`capacity_workload` and `capacity_cache_<name>`, with `capacity.waivers`; alerts go through the alerting wing under
the dedup key `capacity:<check>:<severity>` and resolve when a severity has no active findings left. `apply` runs
only when asked and never in a dry run; after it, the objects are read again, so the recorded findings are what is
left (and what it fixed shows as resolved).
"""

from __future__ import annotations

import json
import logging
from zoneinfo import ZoneInfo

from trading_ops.capacity import caches, workload
from trading_ops.policy import WORKLOAD_CHECK, Policy, cache_check
from trading_ops.security.findings import CheckReport, Finding, RunInfo, record_findings

log = logging.getLogger(__name__)

REVIEWS = ("workload", "caches")


def _mode(apply: bool, dry_run: bool) -> str:
    if dry_run:
        return "dry run: nothing is changed" + (" (apply is ignored in a dry run)" if apply else "")
    return "apply: the changes below are sent" if apply else "report only (apply is off): nothing is changed"


def record(policy: Policy, check: str, run: RunInfo, findings: list[Finding]) -> CheckReport:
    from trading_ops.opsstate import connection
    from trading_ops.security.runner import alert_report

    security = policy.security
    today = run.as_of.astimezone(ZoneInfo(policy.timezone)).date()
    # The ops state's own connection, as the security checks open it: migrated, the legacy state moved.
    with connection(security.findings_conn_id) as conn:
        report = record_findings(conn, security.findings_schema, check, run, findings, policy.capacity.waivers, today)
    lines = [
        f"  {item.finding.severity:<8} {item.status:<10} {item.finding.subject}: {item.finding.message}"
        + (f" [waived until {item.waiver.expires}: {item.waiver.reason}]" if item.waiver else "")
        for item in report.findings
    ] + [f"  resolved            {item['subject']} (was {item['severity']})" for item in report.resolved]
    log.info("%s: %d finding(s)\n%s", check, len(report.findings), "\n".join(lines) or "  (none)")
    alert_report(report, dedup_prefix="capacity")
    return report


def _print_changes(what: str, changes: list[dict], sending: bool) -> None:
    if not changes:
        log.info("%s matches the policy where apply can change it: nothing to send.", what)
    for change in changes:
        log.info(
            "%s: %s %s\n%s",
            what,
            "sending" if sending else "apply would send",
            change["description"],
            json.dumps(change["body"], indent=2),
        )


def review_workload(policy: Policy, run: RunInfo, *, apply: bool, dry_run: bool) -> dict:
    log.info("Reviewing the trading-api workload (%s)", _mode(apply, dry_run))
    state = workload.read_workload(policy)
    changes = workload.planned_changes(policy, state)
    applied = apply and not dry_run and bool(changes)
    _print_changes("Workload", [change.as_dict() for change in changes], applied)
    if applied:
        workload.apply_changes(policy, changes)
        state = workload.read_workload(policy)
    report = record(policy, WORKLOAD_CHECK, run, workload.workload_findings(policy, state, run.as_of))
    return {
        **report.summary(),
        "changes": [change.as_dict() for change in changes],
        "applied": applied,
    }


def review_caches(policy: Policy, run: RunInfo, *, apply: bool, dry_run: bool) -> dict:
    """Every cache of the policy; one that cannot be read is left unrecorded (its history untouched) and fails the
    review after the others are recorded."""
    log.info("Reviewing %d cache(s) (%s)", len(policy.cache), _mode(apply, dry_run))
    results, unavailable, missing = {}, [], []
    for name, entry in policy.cache.items():
        try:
            state = caches.read_cache(name, entry, policy)
            settings = caches.planned_settings(entry, state)
            applied = apply and not dry_run and bool(settings)
            _print_changes(
                f"Cache {name}",
                [{"description": f"CONFIG SET {key} {value}", "body": {key: value}} for key, value in settings.items()],
                applied,
            )
            if applied:
                caches.apply_settings(name, entry, policy, settings)
                state = caches.read_cache(name, entry, policy)
        except caches.CacheUnavailable as exc:
            log.error("%s", exc)
            unavailable.append(str(exc))
            continue
        except caches.CacheConnectionMissing as exc:
            log.error("Cache %s: %s", name, exc)
            missing.append(f"Cache {name}: {exc}")
            continue
        stats = state.report()
        log.info("Cache %s: %s", name, json.dumps(stats))
        if entry.eviction == "FIFO":
            log.info("Cache %s: %s.", name, caches.FIFO_NOTE)
        report = record(policy, cache_check(name), run, caches.cache_findings(name, entry, state))
        results[name] = {
            **report.summary(),
            "stats": stats,
            "config_set": settings,
            "applied": applied,
            **({"note": caches.FIFO_NOTE} if entry.eviction == "FIFO" else {}),
        }
    if unavailable:
        raise caches.CacheUnavailable(" ".join(unavailable + missing))
    if missing:
        raise caches.CacheConnectionMissing(" ".join(missing))
    return results


def summarize(summaries: dict[str, dict | None], disabled: dict[str, str]) -> dict:
    """The run's reviews in one table; fails after logging it when a review did not finish."""
    rows = []
    for review, summary in summaries.items():
        if summary is None:
            rows.append(f"{review:<24} {f'disabled: {disabled[review]}' if review in disabled else 'did not finish'}")
            continue
        per_check = {"workload": summary} if review == "workload" else summary
        for check in per_check.values():
            counts = check["counts"]
            rows.append(
                f"{check['check']:<34} {counts['critical']:>8} {counts['warning']:>8} {counts['info']:>5} "
                f"{len(check['new']):>4} {len(check['resolved']):>8} {len(check['waived']):>6}  "
                f"{'applied' if check['applied'] else ''}"
            )
    header = f"{'check':<34} {'critical':>8} {'warning':>8} {'info':>5} {'new':>4} {'resolved':>8} {'waived':>6}"
    log.info("Capacity review:\n%s", "\n".join([header, *rows]))
    failed = [review for review, summary in summaries.items() if summary is None and review not in disabled]
    if failed:
        raise RuntimeError(
            f"The capacity review of {' and '.join(failed)} did not finish (see its task log): this run's "
            "findings are incomplete."
        )
    return {
        "reviews": {review: summary for review, summary in summaries.items() if summary is not None},
        "disabled": {review: disabled[review] for review in summaries if review in disabled},
    }
