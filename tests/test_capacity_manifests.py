"""The capacity policy (caches' Redis endpoints, autoscaling, pod resources) and the manifests rendered from it."""

from __future__ import annotations

import copy

import pytest
import yaml

from trading_ops.capacity.manifests import HPA_FILE, K8S_DIR, RESOURCES_FILE, rendered, stale
from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy, parse_quantity


@pytest.fixture(scope="module")
def shipped_data() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def test_the_committed_manifests_are_the_policys():
    """include/k8s/ is what `python -m trading_ops k8s render` writes from the shipped policy, byte for byte."""
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert stale(policy, K8S_DIR) == [], "run `python -m trading_ops k8s render` and commit include/k8s/"
    hpa = yaml.safe_load((K8S_DIR / HPA_FILE).read_text())
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 75},
    }
    patch = yaml.safe_load((K8S_DIR / RESOURCES_FILE).read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "trading-api",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    }


def test_a_policy_change_makes_the_manifests_stale_until_rendered(shipped_data, tmp_path, monkeypatch):
    from trading_ops.__main__ import main

    changed = copy.deepcopy(shipped_data)
    changed["resources"]["autoscaling"]["max_replicas"] = 12
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(changed))
    out = tmp_path / "k8s"
    out.mkdir()
    for name, text in rendered(load_policy(DEFAULT_POLICY_PATH)).items():
        (out / name).write_text(text)
    policy = load_policy(policy_file)
    assert stale(policy, out) == [HPA_FILE]
    monkeypatch.setenv("TRADING_OPS_POLICY", str(policy_file))
    assert main(["k8s", "render", "--check", "--output-dir", str(out)]) == 1
    assert main(["k8s", "render", "--output-dir", str(out)]) == 0
    assert main(["k8s", "render", "--check", "--output-dir", str(out)]) == 0
    assert yaml.safe_load((out / HPA_FILE).read_text())["spec"]["maxReplicas"] == 12


def test_each_cache_names_its_redis_server():
    caches = load_policy(DEFAULT_POLICY_PATH).cache
    assert {name: (c.redis_conn_id, c.key_prefix) for name, c in caches.items()} == {
        "market_data": ("redis_market_data", "market_data:"),
        "user_portfolio": ("redis_user_portfolio", "user_portfolio:"),
        "trading_signals": ("redis_trading_signals", "trading_signals:"),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["cache"]["market_data"].pop("redis_conn_id"), "cache.market_data.redis_conn_id is required"),
        (
            lambda p: p["cache"]["user_portfolio"].update(redis_conn_id="redis_market_data"),
            "cache: market_data and user_portfolio share the Redis connection redis_market_data",
        ),
        (lambda p: p["cache"]["market_data"].update(redis_conn_id="redis://x"), "cache.market_data.redis_conn_id"),
        (lambda p: p["cache"]["market_data"].update(ttl="0s"), "cache.market_data.ttl: must be longer than 0s"),
        (lambda p: p["cache"]["market_data"].update(eviction="MRU"), "cache.market_data.eviction"),
        (
            lambda p: p["resources"]["autoscaling"].update(min_replicas=11),
            "resources.autoscaling: max_replicas must not be below min_replicas",
        ),
        (
            lambda p: p["resources"]["autoscaling"].update(cpu_target=70.5),
            "resources.autoscaling.cpu_target: must be a whole percentage",
        ),
        (
            lambda p: p["resources"]["pod_resources"]["limits"].update(memory="4 gigs"),
            "resources.pod_resources.limits.memory: '4 gigs' is not a Kubernetes quantity",
        ),
        (
            lambda p: p["resources"]["pod_resources"]["requests"].update(cpu="2500m"),
            "resources.pod_resources: requests.cpu 2500m is above limits.cpu 2",
        ),
        (
            lambda p: p["capacity"].update(
                waivers=[{"check": "capacity_cache_sessions", "subject": "x", "reason": "y", "expires": "2027-01-01"}]
            ),
            "capacity.waivers.0 names the check 'capacity_cache_sessions'",
        ),
        (lambda p: p["capacity"].update(disabled_reviews={"pods": "no"}), "capacity.disabled_reviews.pods"),
    ],
)
def test_a_bad_capacity_setting_is_one_sentence_naming_it(shipped_data, change, message):
    data = copy.deepcopy(shipped_data)
    change(data)
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(data, "ops_policy.yaml")
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("500m", "0.5"), ("1", "1"), ("2Gi", str(2 * 1024**3)), ("512Mi", str(512 * 1024**2)), ("1e3", "1000")],
)
def test_quantities_compare_as_numbers(quantity, value):
    assert parse_quantity(quantity) == parse_quantity(value)
