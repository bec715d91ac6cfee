"""Capacity decides whether the trading platform has the room the manual's section 7 gives it, and puts it back.

- `manifests`: the HorizontalPodAutoscaler and container resources the policy asks for (`include/k8s/`, rendered
  by `python -m trading_ops k8s render`, and what `apply` sends).
- `workload`: the live Deployment, HPA and pods (through `kubernetes_default`) against the policy: every difference
  is a finding; the HPA pinned at maxReplicas, OOM kills and evictions are capacity warnings.
- `caches`: each cache's Redis server: maxmemory, maxmemory-policy, a bounded TTL sample, hit ratio and evictions.
- `review`: records each check's findings in the findings history (new / persisting / resolved, waivers from
  `capacity.waivers`) and alerts by severity through the alerting wing.

`tasks` is the only module that touches Airflow's context; nothing here reads a file or the network on import.
"""
