"""
# capacity_review

The manual's section 7 (performance) as checked policy: the trading-api autoscaling and pod resources, and the
three caches, compared every day with what runs, and put back to the policy when asked.

**Schedule**: every day at 06:00 Asia/Seoul, after the night's backups, maintenance and security checks.

## Tasks
- `review_workload` (findings check `capacity_workload`): reads the Deployment `kubernetes.deployment`, its
  HorizontalPodAutoscaler `capacity.hpa` (autoscaling/v2) and its pods through the `kubernetes_default`
  connection. Drift: HPA missing (critical), scale target, minReplicas/maxReplicas, cpu/memory utilization targets
  (warning); the Deployment or container `capacity.container` missing (critical); each request and limit of the
  container (warning; 1000m equals 1). Out of room (warning): the HPA at maxReplicas for longer than
  `capacity.at_max_replicas_for` (15m; measured from the HPA's `lastScaleTime`, else its ScalingLimited /
  TooManyReplicas condition), containers OOM-killed (`lastState.terminated.reason`) in the day before the run, pods
  evicted. CPU throttling is not in a pod's status: watch cAdvisor's
  `container_cpu_cfs_throttled_periods_total` in Prometheus for it.
- `review_caches` (checks `capacity_cache_<name>`): for each cache, its Redis server (`cache.<name>.redis_conn_id`):
  `maxmemory` vs `max_size` (0 = no limit: critical), `maxmemory-policy` vs the eviction (LRU `allkeys-lru`, LFU
  `allkeys-lfu`; FIFO has no Redis policy: `volatile-ttl`, the closest, evicts the keys nearest to expiry first,
  the oldest written when every key gets the same TTL; `noeviction`: critical), and a bounded sample of keys under
  `key_prefix` (`SCAN` + `PTTL`, `capacity.ttl_sample_keys`) without TTL or with a TTL over the policy's (warning).
  Hit ratio, evicted and expired keys (`INFO stats`, since the server started) are in the summary.
- `summarize_review`: a table of both reviews' counts; runs even when a review failed and then fails the run.

Each check's findings go to the findings history (`ops.security_findings`, as the security checks'): new,
persisting, resolved, waived; alerts by severity (critical P1 pages, warning P2, info P3), under the dedup key
`capacity:<check>:<severity>`, resolved when a severity has nothing active left.

## Params
- `dry_run`: print every change `apply` would send, change nothing (apply is ignored).
- `apply` (off by default, ignored in a dry run): first prints each change, then sends it, then reads again and
  records what is left. Workload: a strategic-merge PATCH of the Deployment's container resources
  (`include/k8s/trading-api-resources-patch.yaml`; the Deployment rolls its pods), a merge PATCH of the HPA's spec
  (scale target, min/max, metrics), or the HPA created from `include/k8s/trading-api-hpa.yaml`. Caches: `CONFIG SET
  maxmemory` and `maxmemory-policy`. It does not add a missing container, change keys' TTLs (the writers' to fix),
  or persist CONFIG SET to redis.conf: run `CONFIG REWRITE` or update the server's configuration, or a restart
  undoes it.

## Waiving a deliberate difference
Copy check and subject from the run summary or the task log into `capacity.waivers` of
`include/config/ops_policy.yaml` with a reason and an expiry date, e.g. `- {check: capacity_workload, subject:
"hpa trading/trading-api maxReplicas", reason: "raised for the sale (CHG-77)", expires: 2026-12-01}`. The finding
is still recorded (waived) but not alerted until that date. `apply` still changes what a waiver covers: leave it
off while a deliberate difference stands.

## Idempotency
The findings of a run replace an earlier try's for the same run id; the comparison is with the latest earlier run.
`apply` sends the policy's values, so repeating it changes nothing more. Windows (OOM kills, time at
maxReplicas) end at the run's logical date (or run_after for manual runs).

## Triage
- `review_workload` failed: its last line names the request the Kubernetes API refused or could not answer
  (connection `kubernetes_default`, RBAC: it needs get on deployments, horizontalpodautoscalers and pods, and patch
  and create for apply).
- `review_caches` failed: one sentence per cache that could not be reviewed (unreachable, wrong password, CONFIG
  refused: managed Redis services rename CONFIG). The other caches were still recorded.
- Findings: `SELECT * FROM ops.security_findings WHERE check_name LIKE 'capacity%' AND run_id = '<run id>'`.
  At maxReplicas or OOM-killed: raise `resources.autoscaling.max_replicas` or the memory limit in the policy
  (render include/k8s/ and apply), or find what grew.

## Recovery
Without `apply` nothing changes. An apply that went wrong: set the policy back, render, and apply again (or
`kubectl rollout undo deployment/trading-api`; `CONFIG SET` the old value printed in the log).

## Owner
sre-dba (SRE on-call for the workload, the cache owners for Redis). Code: `trading_ops.capacity`.
"""

from datetime import UTC, datetime

from airflow.sdk import Param, dag

from trading_ops.capacity.tasks import capacity_review_tasks
from trading_ops.dag_defaults import cron, default_args, dry_run_param


@dag(
    description="Daily: trading-api autoscaling, pod resources and the Redis caches against the policy; apply fixes.",
    schedule=cron("0 6 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "dry_run": dry_run_param(default=False),
        "apply": Param(
            False,
            type="boolean",
            title="Apply",
            description_md="Patch the HPA and Deployment and CONFIG SET the caches to the policy, after printing "
            "each change. Off by default; never in a dry run.",
        ),
    },
    tags=["kubernetes", "monitoring", "daily"],
    doc_md=__doc__,
)
def capacity_review():
    capacity_review_tasks()


capacity_review()
