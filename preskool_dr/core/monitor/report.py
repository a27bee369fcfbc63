"""What `check` reports: each check's result, the whole report as Nagios text, JSON and
Prometheus gauges (core/monitor/check.py runs the checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.storage.meta import iso_utc

PLUGIN = "PRESKOOL_DR"


class Status(IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    value: float | int | bool | str | None = None
    details: Mapping[str, Any] | None = None  # more than one value (in --json only)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "status": self.status.name,
            "summary": self.summary,
            "value": self.value,
        }
        if self.details is not None:
            data["details"] = dict(self.details)
        return data


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()  # values from a safe alphabet (hex, names)


@dataclass(frozen=True)
class HealthReport:
    checks: tuple[CheckResult, ...]
    metrics: tuple[Metric, ...] = ()
    perfdata: str = ""  # Nagios performance data, after the `|` of the first line
    at: datetime = field(default_factory=utcnow)

    @property
    def status(self) -> Status:
        return max((c.status for c in self.checks), default=Status.UNKNOWN)

    @property
    def summary(self) -> str:
        """The alerts, worst first; when all is well, what the backup check found."""
        alerts = sorted((c for c in self.checks if c.status != Status.OK), key=lambda c: -c.status)
        if alerts:
            return "; ".join(c.summary for c in alerts)
        return self.checks[0].summary if self.checks else "no checks ran"

    def with_check(self, check: CheckResult) -> HealthReport:
        return HealthReport((*self.checks, check), self.metrics, self.perfdata, self.at)

    def nagios_text(self) -> str:
        first = f"{PLUGIN} {self.status.name} - {self.summary}"
        if self.perfdata:
            first += f" | {self.perfdata}"
        lines = [first] + [f"{c.status.name:<8} {c.name}: {c.summary}" for c in self.checks]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.name,
            "exit_code": int(self.status),
            "summary": self.summary,
            "checked_at": iso_utc(self.at),
            "checks": [c.to_json() for c in self.checks],
        }

    def prometheus_text(self) -> str:
        """node-exporter textfile format; a gauge whose value is unknown is left out."""
        out = [
            "# HELP preskool_dr_status Overall check status (0 OK, 1 WARNING, 2 CRITICAL, "
            "3 UNKNOWN).",
            "# TYPE preskool_dr_status gauge",
            f"preskool_dr_status {int(self.status)}",
            "# HELP preskool_dr_check_status Status of each check (0 OK, 1 WARNING, "
            "2 CRITICAL, 3 UNKNOWN).",
            "# TYPE preskool_dr_check_status gauge",
        ]
        out += [
            f'preskool_dr_check_status{{check="{c.name}"}} {int(c.status)}' for c in self.checks
        ]
        metrics = (
            *self.metrics,
            Metric(
                "preskool_dr_check_timestamp_seconds", "When the check ran.", self.at.timestamp()
            ),
        )
        for metric in metrics:
            out += [
                f"# HELP {metric.name} {metric.help}",
                f"# TYPE {metric.name} gauge",
                f"{metric.name}{_labels(metric.labels)} {_number(metric.value)}",
            ]
        return "\n".join(out) + "\n"


def unknown_report(reason: str) -> HealthReport:
    """The report when the check itself cannot run (bad config, unreadable BACKUP_DIR)."""
    return HealthReport((CheckResult("check", Status.UNKNOWN, reason),))


def write_prometheus(report: HealthReport, path: Path) -> None:
    """node-exporter's textfile collector reads *.prom: the temp name never matches it."""
    atomic_write(path, report.prometheus_text().encode(), mode=0o644)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))
