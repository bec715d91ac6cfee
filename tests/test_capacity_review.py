"""capacity_review against real Redis servers and the Kubernetes fake, through the real clients and connections."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.kubernetes_api import MERGE_PATCH, STRATEGIC_MERGE_PATCH, KubernetesApiFake
from trading_ops.policy import load_policy

# 06:00 on 2 November in Seoul, the daily schedule's run; the next day's run.
FIRST_RUN = datetime(2026, 11, 1, 21, 0, tzinfo=UTC)
SECOND_RUN = FIRST_RUN + timedelta(days=1)
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/trading/deployments/trading-api"
HPA_PATH = "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers/trading-api"

# What runs when the platform drifted: smaller pods, an HPA capped at 6 on CPU only.
DRIFTED_DEPLOYMENT = {
    "metadata": {"name": "trading-api", "namespace": "trading", "labels": {"app": "trading-api"}},
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "trading-api"}},
        "template": {
            "metadata": {"labels": {"app": "trading-api"}},
            "spec": {
                "containers": [
                    {
                        "name": "trading-api",
                        "image": "trading-api:1.4",
                        "resources": {
                            "requests": {"cpu": "1000m", "memory": "1Gi"},
                            "limits": {"cpu": "2", "memory": "2Gi"},
                        },
                    },
                    {"name": "log-shipper", "image": "fluent-bit:3"},
                ]
            },
        },
    },
}
DRIFTED_HPA = {
    "metadata": {"name": "trading-api", "namespace": "trading"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"},
        "minReplicas": 3,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
            }
        ],
    },
    "status": {"currentReplicas": 4, "desiredReplicas": 4},
}


def _pod(name: str, *, oom_at: datetime | None = None) -> dict:
    status = {
        "name": "trading-api",
        "ready": True,
        "restartCount": int(bool(oom_at)),
        "image": "trading-api:1.4",
        "imageID": "",
    }
    if oom_at:
        status["lastState"] = {
            "terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": oom_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        }
    return {
        "metadata": {"name": name, "namespace": "trading", "labels": {"app": "trading-api"}},
        "spec": {"containers": [{"name": "trading-api", "image": "trading-api:1.4"}]},
        "status": {"phase": "Running", "containerStatuses": [status]},
    }


@pytest.fixture
def kubernetes_api(tmp_path, monkeypatch):
    """The Kubernetes API with the drifted Deployment and HPA and two healthy pods, as `kubernetes_default`."""
    with KubernetesApiFake() as api:
        api.add("deployments", copy.deepcopy(DRIFTED_DEPLOYMENT))
        api.add("horizontalpodautoscalers", copy.deepcopy(DRIFTED_HPA))
        api.add("pods", _pod("trading-api-1"))
        api.add("pods", _pod("trading-api-2"))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="trading")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", api.connection_json(kubeconfig, "trading"))
        yield api


@pytest.fixture
def caches(redis_caches):
    """The three caches drifted: default maxmemory (0) and noeviction on market_data, 100MB allkeys-lru on
    user_portfolio, allkeys-lru on trading_signals; keys written with good, missing and too long TTLs."""
    settings = {
        "market_data": ("0", "noeviction"),
        "user_portfolio": (str(100 * 1024**2), "allkeys-lru"),
        "trading_signals": (str(200 * 1024**2), "allkeys-lru"),
    }
    for name, server in redis_caches.items():
        client = server.client()
        client.flushall()
        client.config_resetstat()
        maxmemory, policy = settings[name]
        client.config_set("maxmemory", maxmemory)
        client.config_set("maxmemory-policy", policy)
    md = redis_caches["market_data"].client()
    for n in range(20):
        md.set(f"market_data:quote:{n}", "1", ex=55)
    md.set("market_data:quote:stale", "1")
    md.set("market_data:quote:long", "1", ex=3600)
    md.set("other:unrelated", "1")  # outside the prefix: never sampled
    md.get("market_data:quote:1")
    md.get("market_data:missing")
    up = redis_caches["user_portfolio"].client()
    up.set("user_portfolio:42", "{}", ex=300)
    ts = redis_caches["trading_signals"].client()
    ts.set("trading_signals:btc", "buy", ex=30)
    return redis_caches


def _config(server) -> tuple[str, str]:
    client = server.client()
    return client.config_get("maxmemory")["maxmemory"], client.config_get("maxmemory-policy")["maxmemory-policy"]


def _subjects(summary: dict, state: str) -> set[str]:
    return {item["subject"] for item in summary[state]}


def test_drift_is_found_then_resolved_after_apply(
    airflow_db, fresh_db, ops_conn, kubernetes_api, caches, alert_fakes, caplog
):
    from tests.support.dagbag import run_dag

    slack, pagerduty = alert_fakes
    caplog.set_level("INFO")
    states, values = run_dag("capacity_review", {}, logical_date=FIRST_RUN)
    assert states == dict.fromkeys(("review_workload", "review_caches", "summarize_review"), "success")
    workload = values["review_workload"]
    assert _subjects(workload, "new") == {
        "deployment trading/trading-api container trading-api requests.memory",
        "deployment trading/trading-api container trading-api limits.memory",
        "hpa trading/trading-api maxReplicas",
        "hpa trading/trading-api cpu target",
        "hpa trading/trading-api memory target",
    }, "1000m is 1 CPU: no finding for requests.cpu"
    assert workload["counts"] == {"critical": 0, "warning": 5, "info": 0}
    assert not workload["applied"] and kubernetes_api.patches() == []
    # The patches apply would send are printed even without apply.
    assert '"maxReplicas": 10' in caplog.text and '"memory": "4Gi"' in caplog.text

    cache_summaries = values["review_caches"]
    market = cache_summaries["market_data"]
    assert {item["subject"]: item["severity"] for item in market["new"]} == {
        "cache market_data maxmemory": "critical",
        "cache market_data maxmemory-policy": "critical",
        "cache market_data keys without TTL": "warning",
        "cache market_data keys with a TTL over the policy's": "warning",
    }
    messages = {item["subject"]: item["message"] for item in market["new"]}
    assert "market_data:quote:stale" in messages["cache market_data keys without TTL"]
    assert re.search(
        r"market_data:quote:long \(3\d\d\ds\)", messages["cache market_data keys with a TTL over the policy's"]
    )
    assert market["stats"]["sampled_keys"] == 22, "the key outside the prefix is not sampled"
    assert market["stats"]["keyspace_hits"] == 1 and market["stats"]["keyspace_misses"] == 1
    assert market["stats"]["hit_ratio"] == 0.5
    assert market["config_set"] == {"maxmemory": str(1024**3), "maxmemory-policy": "allkeys-lru"}
    assert _subjects(cache_summaries["user_portfolio"], "new") == {
        "cache user_portfolio maxmemory",
        "cache user_portfolio maxmemory-policy",
    }
    signals = cache_summaries["trading_signals"]
    assert _subjects(signals, "new") == {"cache trading_signals maxmemory-policy"}
    assert "volatile-ttl" in signals["new"][0]["message"] and "FIFO has no Redis eviction policy" in signals["note"]
    assert _config(caches["market_data"]) == ("0", "noeviction"), "no CONFIG SET without apply"
    # The critical cache findings page; the workload's warnings go to Slack.
    paged = {e["dedup_key"] for e in pagerduty.events() if e["event_action"] == "trigger"}
    assert paged == {"capacity:capacity_cache_market_data:critical"}
    assert any("capacity_workload: 5 warning finding(s), 5 new" in m["text"] for m in slack.messages())

    states, values = run_dag("capacity_review", {"apply": True}, logical_date=SECOND_RUN)
    assert set(states.values()) == {"success"}
    workload = values["review_workload"]
    assert workload["applied"] and workload["new"] == [] and workload["persisting"] == []
    assert len(workload["resolved"]) == 5
    patches = kubernetes_api.patches()
    assert [(p.path, p.headers["Content-Type"]) for p in patches] == [
        (DEPLOYMENT_PATH, STRATEGIC_MERGE_PATCH),
        (HPA_PATH, MERGE_PATCH),
    ]
    (deployment,) = kubernetes_api.objects["deployments"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers["trading-api"]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert containers["trading-api"]["image"] == "trading-api:1.4" and "log-shipper" in containers
    (hpa,) = kubernetes_api.objects["horizontalpodautoscalers"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], len(hpa["spec"]["metrics"])) == (3, 10, 2)
    assert all(cache["applied"] for cache in values["review_caches"].values())
    market = values["review_caches"]["market_data"]
    assert _subjects(market, "resolved") == {"cache market_data maxmemory", "cache market_data maxmemory-policy"}
    assert _subjects(market, "persisting") == {
        "cache market_data keys without TTL",
        "cache market_data keys with a TTL over the policy's",
    }, "apply does not touch keys: their writers must set the TTL"
    assert _config(caches["market_data"]) == (str(1024**3), "allkeys-lru")
    assert _config(caches["user_portfolio"]) == (str(500 * 1024**2), "allkeys-lfu")
    assert _config(caches["trading_signals"]) == (str(200 * 1024**2), "volatile-ttl")
    resolved = {e["dedup_key"] for e in pagerduty.events() if e["event_action"] == "resolve"}
    assert "capacity:capacity_cache_market_data:critical" in resolved
    rows = ops_conn.execute(
        "SELECT check_name, count(*) FROM ops.security_findings WHERE run_id = %s GROUP BY 1 ORDER BY 1",
        (workload["run_id"],),
    ).fetchall()
    assert rows == [("capacity_cache_market_data", 2)]


def test_a_dry_run_sends_no_patch_and_no_config_set(airflow_db, fresh_db, kubernetes_api, caches, alert_fakes, caplog):
    from tests.support.dagbag import run_dag

    caplog.set_level("INFO")
    states, values = run_dag("capacity_review", {"dry_run": True, "apply": True}, logical_date=FIRST_RUN)
    assert set(states.values()) == {"success"}
    assert [r.method for r in kubernetes_api.requests if r.method != "GET"] == []
    assert {name: _config(server) for name, server in caches.items()} == {
        "market_data": ("0", "noeviction"),
        "user_portfolio": (str(100 * 1024**2), "allkeys-lru"),
        "trading_signals": (str(200 * 1024**2), "allkeys-lru"),
    }
    assert "apply is ignored in a dry run" in caplog.text
    assert "CONFIG SET maxmemory-policy allkeys-lfu" in caplog.text and "PATCH hpa trading/trading-api" in caplog.text
    assert not values["review_workload"]["applied"]
    assert values["review_workload"]["changes"][0]["action"] == "patch_deployment"


def test_a_missing_hpa_is_critical_and_apply_creates_it(fresh_db, kubernetes_api, caches, alert_fakes):
    from trading_ops.capacity.review import review_workload
    from trading_ops.security.findings import RunInfo

    kubernetes_api.objects["horizontalpodautoscalers"].clear()
    policy = load_policy()
    run = RunInfo("capacity_review", "scheduled__1", FIRST_RUN, "http://127.0.0.1:8080/x")
    summary = review_workload(policy, run, apply=False, dry_run=False)
    assert [(i["severity"], i["subject"]) for i in summary["new"] if i["severity"] == "critical"] == [
        ("critical", "hpa trading/trading-api")
    ]
    run = RunInfo("capacity_review", "scheduled__2", SECOND_RUN, "http://127.0.0.1:8080/x")
    summary = review_workload(policy, run, apply=True, dry_run=False)
    assert "hpa trading/trading-api" in _subjects(summary, "resolved")
    create = next(r for r in kubernetes_api.requests if r.method == "POST")
    assert create.path == "/apis/autoscaling/v2/namespaces/trading/horizontalpodautoscalers"
    assert create.json()["spec"]["maxReplicas"] == 10


def _status_at_max(since: datetime, *, with_scale_time: bool = True) -> dict:
    status = {
        "currentReplicas": 10,
        "desiredReplicas": 10,
        "conditions": [
            {
                "type": "ScalingLimited",
                "status": "True",
                "reason": "TooManyReplicas",
                "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "message": "the desired replica count is more than the maximum replica count",
            }
        ],
    }
    if with_scale_time:
        status["lastScaleTime"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return status


@pytest.mark.parametrize(
    ("pinned_for", "with_scale_time", "warned"),
    [(timedelta(minutes=16), True, True), (timedelta(minutes=14), True, False), (timedelta(hours=1), False, True)],
    ids=["16m-at-max", "14m-at-max", "condition-only"],
)
def test_an_hpa_pinned_at_max_raises_the_capacity_warning(pinned_for, with_scale_time, warned):
    from trading_ops.capacity.manifests import desired_hpa
    from trading_ops.capacity.workload import WorkloadState, workload_findings

    policy = load_policy()
    hpa = {**desired_hpa(policy), "status": _status_at_max(FIRST_RUN - pinned_for, with_scale_time=with_scale_time)}
    findings = workload_findings(policy, WorkloadState(DRIFTED_DEPLOYMENT, hpa, []), FIRST_RUN)
    at_max = [f for f in findings if f.subject == "hpa trading/trading-api at maxReplicas"]
    assert len(at_max) == warned
    if warned:
        assert at_max[0].severity == "warning"
        assert "the platform has run out of room" in at_max[0].message
        assert "wants more (ScalingLimited: TooManyReplicas)" in at_max[0].message


def test_oom_killed_pods_of_the_last_day_are_a_warning(fresh_db, kubernetes_api, alert_fakes):
    from trading_ops.capacity.review import review_workload
    from trading_ops.security.findings import RunInfo

    slack, _ = alert_fakes
    kubernetes_api.add("pods", _pod("trading-api-3", oom_at=FIRST_RUN - timedelta(hours=3)))
    kubernetes_api.add("pods", _pod("trading-api-4", oom_at=FIRST_RUN - timedelta(days=3)))
    policy = load_policy()
    run = RunInfo("capacity_review", "scheduled__1", FIRST_RUN, "http://127.0.0.1:8080/x")
    summary = review_workload(policy, run, apply=False, dry_run=False)
    (oom,) = [i for i in summary["new"] if i["subject"] == "deployment trading/trading-api pods OOM-killed"]
    assert oom["severity"] == "warning"
    assert "trading-api-3/trading-api" in oom["message"] and "trading-api-4" not in oom["message"]
    assert [m["channel"] for m in slack.messages()] == ["#alerts-warning"]


def test_an_unreachable_redis_fails_the_review_in_one_sentence(fresh_db, caches, make_policy, monkeypatch, alert_fakes):
    from trading_ops.capacity.caches import CacheConnectionMissing, CacheUnavailable
    from trading_ops.capacity.review import review_caches
    from trading_ops.dev.localpg import free_port
    from trading_ops.security.findings import RunInfo

    closed = free_port()
    make_policy({"cache.user_portfolio.redis_conn_id": "redis_closed"})
    run = RunInfo("capacity_review", "scheduled__1", FIRST_RUN, "http://127.0.0.1:8080/x")
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_CLOSED", f'{{"conn_type": "redis", "host": "127.0.0.1", "port": {closed}}}')
    with pytest.raises(CacheUnavailable) as excinfo:
        review_caches(load_policy(), run, apply=False, dry_run=False)
    monkeypatch.delenv("AIRFLOW_CONN_REDIS_CLOSED")
    message = str(excinfo.value)
    assert message.startswith(
        f"Cannot review cache user_portfolio: the Redis server of connection redis_closed (127.0.0.1:{closed}) is "
        "unreachable ("
    )
    assert message.endswith(".") and "\n" not in message and message.count(". ") == 0
    with pytest.raises(CacheConnectionMissing, match="Airflow has no connection redis_closed"):
        review_caches(load_policy(), run, apply=False, dry_run=False)


def test_a_wrong_password_is_a_failure_not_a_clean_cache(fresh_db, caches, make_policy, monkeypatch, alert_fakes):
    import json

    from trading_ops.capacity.caches import CacheUnavailable
    from trading_ops.capacity.review import review_caches
    from trading_ops.security.findings import RunInfo

    server = caches["trading_signals"]
    wrong = json.loads(server.connection_json()) | {"password": "wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_TRADING_SIGNALS", json.dumps(wrong))
    run = RunInfo("capacity_review", "scheduled__1", FIRST_RUN, "http://127.0.0.1:8080/x")
    with pytest.raises(
        CacheUnavailable, match="^Cannot review cache trading_signals: .* refused the login "
    ) as excinfo:
        review_caches(load_policy(), run, apply=False, dry_run=False)
    assert "wrong" not in str(excinfo.value)


def test_the_ttl_sample_is_bounded_and_escapes_the_prefix(caches):
    from trading_ops.capacity.caches import sample_ttls
    from trading_ops.policy import CacheEntry

    client = caches["user_portfolio"].client()
    for n in range(500):
        client.set(f"user[1]:{n}", "x")
    client.set("user1:x", "x")  # would match the unescaped glob user[1]*
    entry = CacheEntry(ttl="300s", max_size="500MB", eviction="LFU", redis_conn_id="redis_user_portfolio")
    entry = entry.model_copy(update={"key_prefix": "user[1]:"})
    sample = sample_ttls(client, entry, sample_keys=50, max_scan_calls=100)
    assert sample.keys == 50 and len(sample.without_ttl) == 50 and not sample.complete
    assert all(key.startswith("user[1]:") for key in sample.without_ttl)
    few_calls = sample_ttls(client, entry, sample_keys=10_000, max_scan_calls=2)
    assert few_calls.scan_calls == 2 and not few_calls.complete


def test_make_ups_policy_skips_the_workload_review_saying_what_it_needs(
    airflow_db, fresh_db, pg_cluster, caches, tmp_path, monkeypatch, alert_fakes
):
    """`make up` has local redis-servers for the caches but no Kubernetes: the workload review is skipped with the
    sentence saying so, the caches are reviewed, and the run succeeds."""
    from tests.support.dagbag import run_dag
    from trading_ops.dev.local_policy import LOCAL_DISABLED_REVIEWS, write_local_policy

    policy = write_local_policy(
        tmp_path / "ops_policy.yaml",
        tmp_path,
        wal_archive_dir=pg_cluster.wal_archive_dir,
        airflow_url="http://127.0.0.1:8080",
        postgres=pg_cluster,
    )
    monkeypatch.setenv("TRADING_OPS_POLICY", str(policy))
    states, values = run_dag("capacity_review", {}, logical_date=FIRST_RUN)
    assert states == {"review_workload": "skipped", "review_caches": "success", "summarize_review": "success"}
    assert values["summarize_review"]["disabled"] == LOCAL_DISABLED_REVIEWS
    assert set(values["review_caches"]) == {"market_data", "user_portfolio", "trading_signals"}


def test_a_waived_difference_is_recorded_but_not_alerted(fresh_db, kubernetes_api, make_policy, alert_fakes):
    from trading_ops.capacity.review import review_workload
    from trading_ops.security.findings import RunInfo

    slack, _ = alert_fakes
    subject = "hpa trading/trading-api maxReplicas"
    waiver = {"check": "capacity_workload", "subject": subject, "reason": "sale week (CHG-77)", "expires": "2026-12-01"}
    make_policy({"capacity.waivers": [waiver]})
    run = RunInfo("capacity_review", "scheduled__1", FIRST_RUN, "http://127.0.0.1:8080/x")
    summary = review_workload(load_policy(), run, apply=False, dry_run=False)
    assert [(item["subject"], item["reason"]) for item in summary["waived"]] == [(subject, "sale week (CHG-77)")]
    assert subject not in _subjects(summary, "new") and summary["counts"]["warning"] == 4
    (message,) = slack.messages()
    assert "capacity_workload: 4 warning finding(s), 4 new" in message["text"] and "maxReplicas" not in message["text"]
