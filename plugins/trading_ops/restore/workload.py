"""The workload around a restore: what `trading-api` runs before, and what it is scaled back to after.

The scale-back count is the one observed before the scale-down, but never below the manual's
`resources.autoscaling.min_replicas` (3): a restore is often run because the service is down, and bringing it back
at the 0 replicas it had would leave it down with a green run. Only the form's `replicas` goes below (or above) it.
A HorizontalPodAutoscaler managing the deployment is named in the plan and left exactly as it was: with the
deployment at 0 replicas Kubernetes pauses it, and once scaled back it resumes within its own bounds.
"""

from __future__ import annotations

from trading_ops import kube


def observe(workload: kube.Workload) -> dict:
    """The deployment's replica count and its autoscaler now (plain JSON, for the plan)."""
    hpa = kube.autoscaler(workload)
    return {
        "deployment": str(workload),
        "replicas": kube.current_replicas(workload),
        "autoscaler": None if hpa is None else {"name": hpa.name, "min": hpa.min_replicas, "max": hpa.max_replicas},
    }


def scale_back_target(recorded: int, requested: int | None, min_replicas: int) -> int:
    """`requested` (the form's replicas) when given; otherwise the count before the scale-down, at least the floor."""
    if requested is not None:
        return requested
    return max(recorded, min_replicas)


def describe(observed: dict, requested: int | None, min_replicas: int) -> list[str]:
    """The plan's lines about the workload: now, after the restore, and its autoscaler."""
    replicas = observed["replicas"]
    after = scale_back_target(replicas, requested, min_replicas)
    if requested is not None:
        why = "the form's replicas"
    elif replicas < min_replicas:
        why = f"not the {replicas} now: never below resources.autoscaling.min_replicas {min_replicas}"
    else:
        why = "the count before the scale-down"
    lines = [
        f"workload          {observed['deployment']}: {replicas} replicas now; scaled back to {after} ({why}; "
        "the count is read again just before the scale-down)"
    ]
    hpa = observed["autoscaler"]
    if hpa:
        lines.append(
            f"autoscaler        HorizontalPodAutoscaler {hpa['name']} manages it (min {hpa['min']}, max {hpa['max']}): "
            "its bounds are left as they are; it pauses while the deployment is at 0 and resumes after the scale-back"
        )
    else:
        lines.append("autoscaler        none manages the deployment")
    return lines


def plan_lines(plan: dict, policy) -> list[str]:
    """`describe` for a plan whose `workload` validate_request observed."""
    return describe(plan["workload"], plan["request"]["replicas"], policy.resources.autoscaling.min_replicas)
