"""Each cache of the policy against its Redis server: size limit, eviction policy, TTLs, and how well it serves.

The server is the Airflow connection `cache.<name>.redis_conn_id` (type redis: host, port, login, password; extra
`db`, `ssl`). `read_cache` reads `CONFIG GET maxmemory` / `maxmemory-policy`, `INFO stats` (keyspace hits and
misses, evicted and expired keys, counted since the server started or `CONFIG RESETSTAT`) and a bounded TTL sample:
`SCAN` under the key prefix, at most `capacity.ttl_sample_keys` keys in at most `capacity.max_scan_calls` calls,
then `PTTL` of each. `cache_findings` turns that into findings of the check `capacity_cache_<name>`:

- maxmemory: 0 (no limit: the cache grows until the host runs out of memory) is critical; another value than
  `max_size` a warning;
- maxmemory-policy: LRU is `allkeys-lru`, LFU `allkeys-lfu`. Redis has no FIFO policy. The closest honest setting
  is `volatile-ttl`: it evicts the keys nearest to expiry first, and when every key is written with the cache's TTL
  those are the oldest written, i.e. first in, first out; Redis picks among a sample of keys
  (`maxmemory-samples`), so the order is approximate, as it is for LRU and LFU, and a key without TTL is never
  evicted under it. `noeviction` is critical (writes fail once the cache is full), any other policy a warning;
- sampled keys without a TTL, or with a TTL longer than the policy's: a warning each, with examples.

Hit ratio and evictions are reported in the summary, not judged: the manual sets no number for them.
`apply` sets maxmemory and maxmemory-policy with `CONFIG SET` (not persisted to redis.conf: `CONFIG REWRITE` or the
server's configuration must follow, which the runbook says). TTLs are the writers' to fix: no key is changed.
A server that cannot be reached, refuses the login or refuses CONFIG fails the cache's review with one sentence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trading_ops.alerting import format_duration
from trading_ops.errors import UserError
from trading_ops.policy import CacheEntry, Policy, cache_check
from trading_ops.security.findings import Finding

log = logging.getLogger(__name__)

REDIS_POLICY = {"LRU": "allkeys-lru", "LFU": "allkeys-lfu", "FIFO": "volatile-ttl"}
FIFO_NOTE = (
    "FIFO has no Redis eviction policy; volatile-ttl is the closest: it evicts the keys nearest to expiry first, which "
    "are the oldest written when every key gets the cache's TTL (approximately: Redis samples keys), and it never "
    "evicts a key without TTL"
)
EXAMPLES = 5


class CacheUnavailable(RuntimeError):
    """A cache's Redis server could not be reviewed; the message is one sentence."""


class CacheConnectionMissing(UserError):
    """The policy names a Redis connection that Airflow does not have."""


@dataclass(frozen=True)
class TtlSample:
    keys: int
    scan_calls: int
    complete: bool
    without_ttl: list[str] = field(default_factory=list)
    too_long: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class CacheState:
    maxmemory: int
    policy: str
    stats: dict
    sample: TtlSample

    def report(self) -> dict:
        hits, misses = self.stats["keyspace_hits"], self.stats["keyspace_misses"]
        return {
            "maxmemory": self.maxmemory,
            "maxmemory_policy": self.policy,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            **self.stats,
            "sampled_keys": self.sample.keys,
            "sample_complete": self.sample.complete,
        }


def redis_client(conn_id: str, timeout_seconds: float):
    """A redis-py client for Airflow connection `conn_id`; the password stays in the client."""
    import redis
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise CacheConnectionMissing(
            f"Airflow has no connection {conn_id}: add it (type redis, the cache's host and port) or fix "
            "cache.<name>.redis_conn_id in the policy."
        ) from None
    extra = conn.extra_dejson or {}
    return redis.Redis(
        host=conn.host or "127.0.0.1",
        port=conn.port or 6379,
        db=int(extra.get("db", 0)),
        username=conn.login or None,
        password=conn.password or None,
        ssl=bool(extra.get("ssl", False)),
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=True,
    )


def _glob_escaped(prefix: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in prefix)


def sample_ttls(client, entry: CacheEntry, sample_keys: int, max_scan_calls: int) -> TtlSample:
    keys: list[str] = []
    cursor, calls = 0, 0
    while calls < max_scan_calls and len(keys) < sample_keys:
        cursor, batch = client.scan(cursor, match=f"{_glob_escaped(entry.key_prefix)}*", count=100)
        calls += 1
        keys.extend(batch)
        if cursor == 0:
            break
    keys = keys[:sample_keys]
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.pttl(key)
    limit_ms = int(entry.ttl.total_seconds() * 1000)
    without, too_long, present = [], [], 0
    for key, ttl in zip(keys, pipeline.execute(), strict=True):
        if ttl == -2:  # expired or deleted between SCAN and PTTL
            continue
        present += 1
        if ttl == -1:
            without.append(key)
        elif ttl > limit_ms:
            too_long.append((key, ttl))
    return TtlSample(present, calls, complete=cursor == 0, without_ttl=without, too_long=too_long)


def read_cache(name: str, entry: CacheEntry, policy: Policy) -> CacheState:
    import redis

    capacity = policy.capacity
    client = redis_client(entry.redis_conn_id, capacity.redis_timeout.total_seconds())
    try:
        config = {**client.config_get("maxmemory"), **client.config_get("maxmemory-policy")}
        info = client.info("stats")
        sample = sample_ttls(client, entry, capacity.ttl_sample_keys, capacity.max_scan_calls)
    except redis.exceptions.RedisError as exc:
        raise CacheUnavailable(_unavailable(name, entry, client, exc)) from None
    finally:
        client.close()
    stats = {key: int(info.get(key, 0)) for key in ("keyspace_hits", "keyspace_misses", "evicted_keys", "expired_keys")}
    return CacheState(int(config["maxmemory"]), config["maxmemory-policy"], stats, sample)


def _unavailable(name: str, entry: CacheEntry, client, exc: Exception) -> str:
    import redis

    kwargs = client.connection_pool.connection_kwargs
    # redis-py's messages are sentences of their own ("Error 111 connecting to h:p. Connection refused."): one here.
    reason = str(exc).rstrip(".").replace(". ", ": ") or type(exc).__name__
    if isinstance(exc, redis.exceptions.AuthenticationError):
        what = f"refused the login ({reason})"
    elif isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        what = f"is unreachable ({reason})"
    else:
        what = f"refused a command ({reason})"
    return (
        f"Cannot review cache {name}: the Redis server of connection {entry.redis_conn_id} "
        f"({kwargs.get('host')}:{kwargs.get('port')}) {what}."
    )


def _size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def cache_findings(name: str, entry: CacheEntry, state: CacheState) -> list[Finding]:
    check, subject = cache_check(name), f"cache {name}"
    findings = []
    if state.maxmemory != entry.max_size:
        unlimited = state.maxmemory == 0
        findings.append(
            Finding(
                check,
                "critical" if unlimited else "warning",
                f"{subject} maxmemory",
                (
                    "maxmemory is 0 (no limit: the cache grows until the host runs out of memory)"
                    if unlimited
                    else f"maxmemory is {_size(state.maxmemory)}"
                )
                + f"; the policy's max_size is {_size(entry.max_size)}",
                {"live": state.maxmemory, "policy": entry.max_size},
            )
        )
    wanted = REDIS_POLICY[entry.eviction]
    if state.policy != wanted:
        note = f" ({FIFO_NOTE})" if entry.eviction == "FIFO" else ""
        findings.append(
            Finding(
                check,
                "critical" if state.policy == "noeviction" else "warning",
                f"{subject} maxmemory-policy",
                f"maxmemory-policy is {state.policy}"
                + (" (writes fail once the cache is full)" if state.policy == "noeviction" else "")
                + f"; the policy's {entry.eviction} is {wanted}{note}",
                {"live": state.policy, "policy": wanted},
            )
        )
    sample = state.sample
    if sample.without_ttl:
        findings.append(
            Finding(
                check,
                "warning",
                f"{subject} keys without TTL",
                f"{len(sample.without_ttl)} of {sample.keys} sampled keys have no TTL (the policy's is "
                f"{format_duration(entry.ttl)}"
                + ("; volatile-ttl never evicts them" if entry.eviction == "FIFO" else "")
                + "): "
                + ", ".join(sample.without_ttl[:EXAMPLES]),
                {"count": len(sample.without_ttl), "sampled": sample.keys, "examples": sample.without_ttl[:EXAMPLES]},
            )
        )
    if sample.too_long:
        findings.append(
            Finding(
                check,
                "warning",
                f"{subject} keys with a TTL over the policy's",
                f"{len(sample.too_long)} of {sample.keys} sampled keys expire later than the policy's "
                f"{format_duration(entry.ttl)}: "
                + ", ".join(f"{key} ({ttl / 1000:.0f}s)" for key, ttl in sample.too_long[:EXAMPLES]),
                {
                    "count": len(sample.too_long),
                    "sampled": sample.keys,
                    "examples": [{"key": key, "ttl_ms": ttl} for key, ttl in sample.too_long[:EXAMPLES]],
                },
            )
        )
    return findings


def planned_settings(entry: CacheEntry, state: CacheState) -> dict[str, str]:
    """The CONFIG SET parameters that differ from the policy, with the policy's values."""
    changes = {}
    if state.maxmemory != entry.max_size:
        changes["maxmemory"] = str(entry.max_size)
    if state.policy != REDIS_POLICY[entry.eviction]:
        changes["maxmemory-policy"] = REDIS_POLICY[entry.eviction]
    return changes


def apply_settings(name: str, entry: CacheEntry, policy: Policy, settings: dict[str, str]) -> None:
    import redis

    client = redis_client(entry.redis_conn_id, policy.capacity.redis_timeout.total_seconds())
    try:
        for parameter, value in settings.items():
            log.info("Cache %s: CONFIG SET %s %s", name, parameter, value)
            client.config_set(parameter, value)
    except redis.exceptions.RedisError as exc:
        raise CacheUnavailable(_unavailable(name, entry, client, exc)) from None
    finally:
        client.close()
