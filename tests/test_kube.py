"""Scaling and watching trading-api through the real kubernetes client against a fake API on 127.0.0.1."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trading_ops import kube

WORKLOAD = kube.Workload("kubernetes_default", "trading", "trading-api", "app=trading-api")


def test_scale_down_waits_until_the_pods_are_gone(fake_trading_api):
    assert kube.current_replicas(WORKLOAD) == 3
    kube.scale(WORKLOAD, 0)
    assert len(kube.pods(WORKLOAD)) == 3, "pods linger while terminating"
    assert {pod.status for pod in kube.pods(WORKLOAD)} == {"Terminating"}
    kube.wait_for_no_pods(WORKLOAD, timedelta(seconds=10), poll=0.1)
    assert kube.pods(WORKLOAD) == []
    assert fake_trading_api.scale_requests() == [0]
    patch = next(r for r in fake_trading_api.requests if r.method == "PATCH")
    assert patch.path == "/apis/apps/v1/namespaces/trading/deployments/trading-api/scale"
    assert patch.json() == {"spec": {"replicas": 0}}


def test_scale_up_waits_for_ready_and_lists_pods_like_kubectl(fake_trading_api, caplog):
    kube.scale(WORKLOAD, 0)
    kube.wait_for_no_pods(WORKLOAD, timedelta(seconds=10), poll=0.1)
    kube.scale(WORKLOAD, 2)
    assert kube.ready_replicas(WORKLOAD) == 0
    with caplog.at_level("INFO"):
        final = kube.wait_for_ready(WORKLOAD, 2, timedelta(seconds=10), poll=0.1)
    assert [pod.ready for pod in final] == ["1/1", "1/1"]
    table = kube.format_pods(final)
    assert table.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "Running" in table and "kubectl get pods -l app=trading-api" in caplog.text
    assert any(
        r.path == "/api/v1/namespaces/trading/pods" and r.query["labelSelector"] == ["app=trading-api"]
        for r in fake_trading_api.requests
    )


def test_a_timeout_names_what_it_waited_for(fake_trading_api):
    fake_trading_api.deployment.terminate_seconds = 60
    kube.scale(WORKLOAD, 0)
    with pytest.raises(TimeoutError, match="no pod with label app=trading-api remains"):
        kube.wait_for_no_pods(WORKLOAD, timedelta(seconds=0.5), poll=0.1)


def test_an_api_error_is_one_sentence_naming_what_could_not_be_done(fake_trading_api):
    fake_trading_api.fail_with = 403
    with pytest.raises(
        kube.KubernetesUnavailable,
        match=r"^Cannot scale deployment trading/trading-api to 0: the Kubernetes API of kubernetes_default answered "
        r"403 \w+\.$",
    ):
        kube.scale(WORKLOAD, 0)
    assert fake_trading_api.deployment.replica_history == [3], "the refused scale changed nothing"


def test_an_unreachable_api_is_one_sentence_too(fake_trading_api):
    fake_trading_api.stop()
    with pytest.raises(
        kube.KubernetesUnavailable,
        match=r"^Cannot read the scale of deployment trading/trading-api: the Kubernetes API of kubernetes_default "
        r"is unreachable \(.*\)\.$",
    ):
        kube.current_replicas(WORKLOAD)
