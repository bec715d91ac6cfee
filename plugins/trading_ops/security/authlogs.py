"""auth_log_review and failed_login_attempts: sshd, sudo and PostgreSQL authentication logs.

The ssh/sudo logs are syslog files (`/var/log/auth.log`), in rsyslog's RFC 3339 format
(`2026-11-01T09:12:01.123456+09:00 host sshd[123]: ...`, Debian 12's default) or the traditional one
(`Nov  1 09:12:01 host sshd[123]: ...`, read in the policy's timezone). The PostgreSQL logs need
`log_connections = on` and a `log_line_prefix` that starts with `%m [%p] ` (PostgreSQL's default; Debian's
`%m [%p] %q%u@%d ` works too). Only events inside the policy's window
before the run's time count, so a rerun of a day reviews the same day.

A login counts as the manual's "public key + 2FA" when its sshd session shows a `publickey` step and a second
factor (`Partial publickey ...` then `Accepted keyboard-interactive/pam ...`). A PostgreSQL login without a
`connection authenticated` line authenticated by `trust`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from trading_ops.policy import Policy
from trading_ops.security.findings import Finding
from trading_ops.security.sources import read_log_files

# host, program[pid]: message
_SYSLOG_REST = r"\s+\S+\s+(?P<program>[\w./-]+)(?:\[(?P<pid>\d+)\])?:\s?(?P<message>.*)$"
_RFC3339_LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))" + _SYSLOG_REST)
_BSD_LINE = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)" + _SYSLOG_REST)
_POSTGRES_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<tz>\S+) \[(?P<pid>\d+)\] .*?"
    r"(?P<level>LOG|FATAL):  (?P<message>.*)$"
)

_SSH_RESULT = re.compile(
    r"^(?P<result>Accepted|Partial|Failed) (?P<method>\S+) for (?:invalid user )?(?P<user>\S*) "
    r"from (?P<source>\S+) port \d+"
)
_SSH_INVALID_USER = re.compile(r"^Invalid user (?P<user>\S*) from (?P<source>\S+) port \d+")
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?P<rest>.*)$")
_SUDO_DENIED = ("user NOT in sudoers", "incorrect password attempt", "command not allowed", "user NOT authorized")

_PG_RECEIVED = re.compile(r"^connection received: host=(?P<source>\S+)")
_PG_AUTHENTICATED = re.compile(r'^connection authenticated: identity=".*" method=(?P<method>\S+)')
_PG_AUTHORIZED = re.compile(r"^(?:replication )?connection authorized: user=(?P<user>\S+)")
_PG_FAILED = (
    re.compile(r'^(?P<method>[\w-]+) authentication failed for user "(?P<user>[^"]*)"'),
    re.compile(r'^no pg_hba\.conf entry for (?:replication connection from )?host "[^"]*", user "(?P<user>[^"]*)"'),
    re.compile(r'^role "(?P<user>[^"]*)" does not exist'),
)

SSH_SERVICES = ("sshd", "sshd-session")


@dataclass(frozen=True)
class AuthEvent:
    time: datetime
    service: str  # ssh, sudo, postgresql
    outcome: str  # accepted, failed, sudo, sudo_denied
    user: str
    source: str
    # ssh: every method of the session up to this login (publickey, keyboard-interactive/pam); postgresql: one.
    methods: tuple[str, ...] = ()
    line: str = ""


@dataclass
class _Session:
    source: str = ""
    methods: list[str] = field(default_factory=list)
    failed: bool = False
    # (time, user, source, line) of an "Invalid user" probe
    invalid_user: tuple[datetime, str, str, str] | None = None


def _parse_offset_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _parse_bsd_time(text: str, zone: ZoneInfo, as_of: datetime) -> datetime:
    """Traditional syslog has no year: take the run's, unless that puts the line in the future."""
    local = as_of.astimezone(zone)
    parsed = datetime.strptime(f"{local.year} {text}", "%Y %b %d %H:%M:%S").replace(tzinfo=zone)
    if parsed > as_of + timedelta(days=1):
        parsed = parsed.replace(year=local.year - 1)
    return parsed


def _parse_postgres_time(stamp: str, tz: str, zone: ZoneInfo) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    if tz in ("UTC", "GMT"):
        return parsed.replace(tzinfo=UTC)
    if re.fullmatch(r"[+-]\d\d(?::?\d\d)?", tz):
        return datetime.fromisoformat(f"{stamp}{tz if len(tz) > 3 else tz + ':00'}")
    # A zone abbreviation (KST, CET) is ambiguous; the server logs in the team's timezone.
    return parsed.replace(tzinfo=zone)


def parse_syslog(lines: Iterable[str], zone: ZoneInfo, as_of: datetime) -> list[AuthEvent]:
    """sshd and sudo events of an auth log."""
    events: list[AuthEvent] = []
    sessions: dict[str, _Session] = defaultdict(_Session)
    for raw in lines:
        line = raw.rstrip("\n")
        match = _RFC3339_LINE.match(line)
        if match:
            time = _parse_offset_time(match["ts"])
        else:
            match = _BSD_LINE.match(line)
            if not match:
                continue
            time = _parse_bsd_time(match["ts"], zone, as_of)
        program, message = match["program"], match["message"]
        if program in SSH_SERVICES:
            session = sessions[match["pid"] or ""]
            result = _SSH_RESULT.match(message)
            if result:
                user, source, method = result["user"], result["source"], result["method"]
                if result["result"] == "Failed":
                    session.failed = True
                    events.append(AuthEvent(time, "ssh", "failed", user, source, (method,), line))
                elif result["result"] == "Partial":
                    session.methods.append(method)
                else:
                    methods = (*session.methods, method)
                    events.append(AuthEvent(time, "ssh", "accepted", user, source, methods, line))
                    sessions.pop(match["pid"] or "", None)
                continue
            invalid = _SSH_INVALID_USER.match(message)
            if invalid:
                session.invalid_user = (time, invalid["user"], invalid["source"], line)
        elif program == "sudo":
            sudo = _SUDO.match(message)
            if sudo and "COMMAND=" in sudo["rest"]:
                denied = any(reason in sudo["rest"] for reason in _SUDO_DENIED)
                events.append(
                    AuthEvent(time, "sudo", "sudo_denied" if denied else "sudo", sudo["user"], "local", (), line)
                )
    # A session that only probed a user name ("Invalid user x", then disconnect) is one failed attempt.
    for session in sessions.values():
        if session.invalid_user and not session.failed:
            time, user, source, line = session.invalid_user
            events.append(AuthEvent(time, "ssh", "failed", user, source, ("none",), line))
    return events


def parse_postgres_log(lines: Iterable[str], zone: ZoneInfo) -> list[AuthEvent]:
    events: list[AuthEvent] = []
    sessions: dict[str, _Session] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        match = _POSTGRES_LINE.match(line)
        if not match:
            continue
        pid, message = match["pid"], match["message"]
        time = _parse_postgres_time(match["ts"], match["tz"], zone)
        received = _PG_RECEIVED.match(message)
        if received:
            source = received["source"]
            sessions[pid] = _Session(source="local" if source == "[local]" else source)
            continue
        session = sessions.get(pid)
        if session is None:
            continue
        authenticated = _PG_AUTHENTICATED.match(message)
        if authenticated:
            session.methods.append(authenticated["method"])
            continue
        authorized = _PG_AUTHORIZED.match(message)
        if authorized:
            methods = tuple(session.methods) or ("trust",)
            events.append(AuthEvent(time, "postgresql", "accepted", authorized["user"], session.source, methods, line))
            sessions.pop(pid)
            continue
        if match["level"] == "FATAL":
            for pattern in _PG_FAILED:
                failed = pattern.match(message)
                if failed:
                    method = failed.groupdict().get("method") or "none"
                    events.append(
                        AuthEvent(time, "postgresql", "failed", failed["user"], session.source, (method,), line)
                    )
                    sessions.pop(pid)
                    break
    return events


def collect_events(policy: Policy, as_of: datetime, window: timedelta) -> list[AuthEvent]:
    """Every ssh, sudo and PostgreSQL authentication event in [as_of - window, as_of)."""
    config = policy.security.auth_logs
    zone = ZoneInfo(policy.timezone)
    events: list[AuthEvent] = []
    for _, text in read_log_files(config.ssh_paths, "the ssh/sudo auth log"):
        events += parse_syslog(text.splitlines(), zone, as_of)
    for _, text in read_log_files(config.postgres_paths, "the PostgreSQL log"):
        events += parse_postgres_log(text.splitlines(), zone)
    start = as_of - window
    return sorted((e for e in events if start <= e.time < as_of), key=lambda e: e.time)


def _method_name(method: str) -> str:
    """`keyboard-interactive/pam` (sshd's log) and `keyboard-interactive:pam` (its config) are keyboard-interactive."""
    return re.split(r"[/:]", method, maxsplit=1)[0]


def pairs_key_and_second_factor(methods: Iterable[str], second_factors: set[str]) -> bool:
    """The manual's "public key + 2FA": the methods of one login (or one AuthenticationMethods list) include
    publickey and one of the policy's second factors. security_policy_review judges sshd's config with it too."""
    names = {_method_name(m) for m in methods}
    return "publickey" in names and bool(names & second_factors)


def _span(events: list[AuthEvent]) -> dict:
    return {"count": len(events), "first": events[0].time.isoformat(), "last": events[-1].time.isoformat()}


AUTH_LOG_REVIEW = "auth_log_review"


def auth_log_review(policy: Policy, as_of: datetime) -> list[Finding]:
    security = policy.security
    events = collect_events(policy, as_of, security.auth_logs.window)
    roles_of: dict[str, list] = defaultdict(list)
    for entry in security.access_control.ssh_access:
        for user in entry.users:
            roles_of[user].append(entry)
    second_factors = set(security.ssh_second_factor_methods)
    allowed_pg_methods = set(security.auth_logs.postgres_allowed_methods)
    findings: list[Finding] = []

    def add(severity, subject, message, matched: list[AuthEvent], **evidence):
        findings.append(
            Finding(
                AUTH_LOG_REVIEW,
                severity,
                subject,
                message,
                {**_span(matched), **evidence, "sample": [e.line for e in matched[:3]]},
            )
        )

    logins: dict[tuple[str, str, str], list[AuthEvent]] = defaultdict(list)
    for event in events:
        if event.outcome == "accepted":
            logins[(event.service, event.user, event.source)].append(event)
    for (service, user, source), matched in sorted(logins.items()):
        methods = sorted({"+".join(e.methods) for e in matched})
        add(
            "info",
            f"{service} login {user} from {source}",
            f"{len(matched)} {service} login(s) of {user} from {source} ({', '.join(methods)})",
            matched,
            methods=methods,
        )
        if service == "ssh":
            if user == "root":
                add("critical", f"ssh root login from {source}", f"root logged in over ssh from {source}", matched)
            weak = [e for e in matched if not pairs_key_and_second_factor(e.methods, second_factors)]
            if weak:
                without_key = [e for e in weak if "publickey" not in {_method_name(m) for m in e.methods}]
                add(
                    "critical" if without_key else "warning",
                    f"ssh login without public key + 2FA: {user} from {source}",
                    f"{user} logged in from {source} with {', '.join(sorted({'+'.join(e.methods) for e in weak}))}"
                    " instead of public key + second factor",
                    weak,
                )
            if user not in roles_of and user != "root":
                add(
                    "warning",
                    f"ssh login by unlisted user {user}",
                    f"{user} logged in over ssh but holds no ssh_access role in the policy",
                    matched,
                )
        elif service == "postgresql":
            weak = [e for e in matched if not set(e.methods) <= allowed_pg_methods]
            if weak:
                methods_used = sorted({m for e in weak for m in e.methods} - allowed_pg_methods)
                add(
                    "warning",
                    f"postgresql {'/'.join(methods_used)} login {user} from {source}",
                    f"{user} connected to PostgreSQL from {source} authenticated by {', '.join(methods_used)}, "
                    f"not one of {', '.join(sorted(allowed_pg_methods))}",
                    weak,
                )

    # The manual's developers are read_only: sudo belongs to roles without that restriction.
    sudo_allowed = {
        user
        for entry in security.access_control.ssh_access
        if "read_only" not in entry.restrictions
        for user in entry.users
    }
    sudo_events: dict[tuple[str, str], list[AuthEvent]] = defaultdict(list)
    for event in events:
        if event.service == "sudo":
            sudo_events[(event.user, event.outcome)].append(event)
    for (user, outcome), matched in sorted(sudo_events.items()):
        if user in sudo_allowed:
            continue
        commands = sorted({e.line.split("COMMAND=", 1)[1] for e in matched})
        if outcome == "sudo":
            add(
                "critical",
                f"sudo by {user}",
                f"{user}, outside the roles allowed to sudo, ran {len(matched)} command(s) as another user",
                matched,
                commands=commands[:20],
            )
        else:
            add(
                "warning",
                f"sudo denied for {user}",
                f"{user} tried sudo {len(matched)} time(s) and was refused",
                matched,
                commands=commands[:20],
            )
    return findings


FAILED_LOGIN_ATTEMPTS = "failed_login_attempts"


def failed_login_attempts(policy: Policy, as_of: datetime) -> list[Finding]:
    config = policy.security.failed_logins
    failures = [e for e in collect_events(policy, as_of, config.window) if e.outcome == "failed"]
    window = f"{config.window.total_seconds() / 3600:g} h"
    findings = []

    def level(count: int, thresholds) -> str | None:
        if count >= thresholds.critical:
            return "critical"
        return "warning" if count >= thresholds.warning else None

    by_source: dict[tuple[str, str], list[AuthEvent]] = defaultdict(list)
    by_user: dict[tuple[str, str], list[AuthEvent]] = defaultdict(list)
    for event in failures:
        by_source[(event.service, event.source)].append(event)
        by_user[(event.service, event.user)].append(event)

    for (service, source), matched in sorted(by_source.items()):
        users = Counter(e.user for e in matched)
        evidence = {**_span(matched), "users": dict(users.most_common(20)), "sample": [e.line for e in matched[:3]]}
        if len(users) >= config.brute_force_users_per_source:
            findings.append(
                Finding(
                    FAILED_LOGIN_ATTEMPTS,
                    "critical",
                    f"{service} brute force from {source}",
                    f"{source} failed {service} authentication as {len(users)} different users "
                    f"({len(matched)} attempts): a brute-force pattern",
                    evidence,
                )
            )
        severity = level(len(matched), config.per_source)
        if severity:
            findings.append(
                Finding(
                    FAILED_LOGIN_ATTEMPTS,
                    severity,
                    f"{service} failures from {source}",
                    f"{len(matched)} failed {service} authentications from {source} in {window}",
                    evidence,
                )
            )
    for (service, user), matched in sorted(by_user.items()):
        severity = level(len(matched), config.per_user)
        if severity:
            sources = Counter(e.source for e in matched)
            findings.append(
                Finding(
                    FAILED_LOGIN_ATTEMPTS,
                    severity,
                    f"{service} failures for user {user}",
                    f"{len(matched)} failed {service} authentications for {user} from {len(sources)} source(s) "
                    f"in {window}",
                    {
                        **_span(matched),
                        "sources": dict(sources.most_common(20)),
                        "sample": [e.line for e in matched[:3]],
                    },
                )
            )
    return findings
