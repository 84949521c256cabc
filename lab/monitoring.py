"""Prometheus, Alertmanager and a webhook receiver for the lab: "a failover pages someone", tested.

DESIGN.md fixes where they run: in the client namespace ``flcli`` (10.77.0.50), Prometheus on
:9090 scraping both daemons' ``/metrics`` (10.77.0.11:9641 and 10.77.0.12:9641, job
``failoverd``) and evaluating the project's ``config/prometheus/alerts.yml``, Alertmanager on
:9093 routing every alert to the webhook receiver on :9099 (``lab/webhook.py``), which appends
each notification to ``webhook.jsonl``. Everything, including the page log, lives in
``<lab root>/flcli/``; ``lab/roles/monitoring.sh`` starts and stops the three by PID file.

It is optional (``lab/lab up --monitoring``, ``lab/lab monitoring up|down|status``): the
namespace lab's own tests run without it, so their timing is what it was, and the systemd lab
starts it the same way, since its containers join the same fln1/fln2 namespaces and so have the
same scrape targets::

    mon = Monitoring(lab_root, venv=venv)   # or start_monitoring(lab_root, venv)
    mon.up() -> seconds     mon.down() -> seconds     mon.pids() -> {component: pid or None}
    mon.pages()             every alert of every notification received, oldest first
    mon.wait_page("FailoverdFailoverHappened", timeout=60, since=t, node="fln2") -> Page
    mon.query("up")         a PromQL instant query through Prometheus's HTTP API
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.process import wait_for

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "lab" / "roles" / "monitoring.sh"
RULES = REPO / "config" / "prometheus" / "alerts.yml"
DEFAULT_VENV = Path(os.environ.get("LAB_VENV") or REPO / ".venv")
NAMESPACE = "flcli"
ADDRESS = "10.77.0.50"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
WEBHOOK_PORT = 9099
TARGETS = ("10.77.0.11:9641", "10.77.0.12:9641")
COMPONENTS = ("prometheus", "alertmanager", "webhook")
PAGES_FILE = "webhook.jsonl"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MonitoringError(RuntimeError):
    """A monitoring component could not be started, stopped or asked; the message says which."""


@dataclass(frozen=True)
class Page:
    """One alert of one notification the webhook receiver got."""

    received: float  # wall time the receiver wrote it
    status: str  # "firing" or "resolved"
    alertname: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str  # Alertmanager's RFC 3339 startsAt


def parse_pages(lines: Sequence[str]) -> list[Page]:
    """Pages from the receiver's JSON lines; a torn last line (being written) is skipped."""
    pages: list[Page] = []
    for line in lines:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
            continue
        for alert in doc["payload"].get("alerts") or []:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            pages.append(
                Page(
                    received=float(doc.get("received", 0.0)),
                    status=str(alert.get("status", "")),
                    alertname=labels.get("alertname", ""),
                    labels=labels,
                    annotations={
                        str(k): str(v) for k, v in (alert.get("annotations") or {}).items()
                    },
                    starts_at=str(alert.get("startsAt", "")),
                )
            )
    return pages


class Monitoring:
    """The three monitoring processes of one lab, rooted at ``root`` (the lab directory).

    ``namespace`` is where they run (None: the caller's own network namespace, as the loopback
    integration test does, with ``address`` 127.0.0.1 and free ports).
    """

    def __init__(
        self,
        root: Path,
        *,
        venv: Path = DEFAULT_VENV,
        namespace: str | None = NAMESPACE,
        address: str = ADDRESS,
        targets: Sequence[str] = TARGETS,
        rules: Path = RULES,
        ports: tuple[int, int, int] = (PROMETHEUS_PORT, ALERTMANAGER_PORT, WEBHOOK_PORT),
        scrape_interval: str = "1s",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.venv = Path(venv).absolute()
        self.namespace = namespace
        self.address = address
        self.targets = tuple(targets)
        self.rules = Path(rules).absolute()
        self.prometheus_port, self.alertmanager_port, self.webhook_port = ports
        self.scrape_interval = scrape_interval
        self._log = log or (lambda _line: None)

    @property
    def dir(self) -> Path:
        """Configs, data, logs, PID files and the page log."""
        return self.root / (self.namespace or "monitoring")

    @property
    def pages_path(self) -> Path:
        return self.dir / PAGES_FILE

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.address}:{self.prometheus_port}"

    # -- life cycle ---------------------------------------------------------------------------

    def up(self) -> float:
        """Start whatever of the three is not running (idempotent); the seconds it took."""
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._role("start", timeout=90.0)
        return time.monotonic() - started

    def down(self) -> float:
        """Stop the three by PID (idempotent); the seconds it took. The page log stays."""
        started = time.monotonic()
        if self.dir.exists():
            self._role("stop", timeout=60.0, in_namespace=False)  # by PID: no namespace needed
        return time.monotonic() - started

    def pids(self) -> dict[str, int | None]:
        """Each component's PID, None when it does not run (a dead or reused PID is None)."""
        return {c: self._pid(c) for c in COMPONENTS}

    def running(self) -> bool:
        return all(pid is not None for pid in self.pids().values())

    def requested(self) -> bool:
        """Monitoring was started in this lab (it left PID files), running or not."""
        return any((self.dir / f"{c}.pid").exists() for c in COMPONENTS)

    # -- what it saw --------------------------------------------------------------------------

    def pages(self) -> list[Page]:
        try:
            text = self.pages_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return parse_pages(text.splitlines())

    def wait_page(
        self,
        alertname: str,
        timeout: float,
        *,
        since: float = 0.0,
        status: str = "firing",
        **labels: str,
    ) -> Page:
        """The first page of ``alertname`` in ``status``, received at or after wall time
        ``since``, whose labels include ``labels``; MonitoringError after ``timeout`` s."""

        def found() -> Page | None:
            for page in self.pages():
                if (
                    page.alertname == alertname
                    and page.status == status
                    and page.received >= since
                    and all(page.labels.get(k) == v for k, v in labels.items())
                ):
                    return page
            return None

        page = wait_for(found, timeout, step=0.1)
        if page is None:
            seen = sorted({f"{p.alertname} {p.status}" for p in self.pages()})
            raise MonitoringError(
                f"no {status} {alertname} {labels or ''} page within {timeout:g} s "
                f"(pages so far: {', '.join(seen) or 'none'}; log {self.pages_path})"
            )
        return page

    def query(self, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """An instant query through Prometheus's HTTP API: the result vector."""
        argv = [
            "curl", "-sS", "--fail-with-body", "--max-time", f"{timeout:g}",
            f"{self.prometheus_url}/api/v1/query", "--data-urlencode", f"query={promql}",
        ]  # fmt: skip
        proc = self._run(argv, timeout=timeout + 5)
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise MonitoringError(f"query {promql!r}: not JSON: {proc.stdout[:200]!r}") from None
        if proc.returncode != 0 or doc.get("status") != "success":
            raise MonitoringError(f"query {promql!r} failed: {doc.get('error', proc.stderr)}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    # -- internals ----------------------------------------------------------------------------

    def _markers(self) -> dict[str, str]:
        """What each component's command line contains (as the role script checks)."""
        return {
            "prometheus": f"--config.file={self.dir}/prometheus.yml",
            "alertmanager": f"--config.file={self.dir}/alertmanager.yml",
            "webhook": f"lab.webhook --listen {self.address} --port {self.webhook_port}",
        }

    def _pid(self, component: str) -> int | None:
        try:
            text = (self.dir / f"{component}.pid").read_text().strip()
            pid = int(text.splitlines()[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            return None
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return None  # a zombie is dead
        return pid if self._markers()[component] in cmdline else None

    def _env(self) -> dict[str, str]:
        return {
            "PATH": SYSTEM_PATH,
            "LC_ALL": "C",
            "HOME": "/root",
            "REPO": str(REPO),
            "VENV": str(self.venv),
            "LAB_DIR": str(self.dir),
            "ADDR": self.address,
            "TARGETS": " ".join(self.targets),
            "RULES": str(self.rules),
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "ALERTMANAGER_PORT": str(self.alertmanager_port),
            "WEBHOOK_PORT": str(self.webhook_port),
            "SCRAPE_INTERVAL": self.scrape_interval,
        }

    def _run(
        self, argv: Sequence[str], timeout: float, *, in_namespace: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if in_namespace and self.namespace is not None:
            if not Path(f"/run/netns/{self.namespace}").exists():
                raise MonitoringError(f"namespace {self.namespace} does not exist: lab not up")
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        try:
            return subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(),
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MonitoringError(f"{' '.join(argv)}: no result within {timeout:g} s") from None

    def _role(self, action: str, timeout: float, *, in_namespace: bool = True) -> str:
        proc = self._run(["bash", str(ROLE), action], timeout, in_namespace=in_namespace)
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            raise MonitoringError(f"monitoring {action} failed (exit {proc.returncode}):\n{out}")
        for line in out.splitlines():
            self._log(f"{self.namespace or '-':<5} monitoring {action}: {line.split(': ', 1)[-1]}")
        return out


def start_monitoring(
    root: Path, venv: Path = DEFAULT_VENV, log: Callable[[str], None] | None = None
) -> Monitoring:
    """Start monitoring in ``flcli`` for the lab at ``root`` (the namespace lab's or the systemd
    lab's: the scrape targets are the same); the running Monitoring."""
    mon = Monitoring(root, venv=venv, log=log)
    mon.up()
    return mon


def monitoring_command(mon: Monitoring, action: str) -> int:
    """``lab/lab monitoring up|down|status|pages``; the exit status (status: 3 when not all
    three run, as the role scripts' status says)."""
    match action:
        case "up":
            mon.up()
        case "down":
            mon.down()
        case "status":
            pids = mon.pids()
            for name, pid in pids.items():
                print(f"{name:<12} {'up' if pid else 'down':<5} {pid or '-'}")
            print(f"pages: {mon.pages_path} ({len(mon.pages())} alerts received)")
            return 0 if all(pids.values()) else 3
        case "pages":
            for page in mon.pages():
                when = time.strftime("%H:%M:%S", time.localtime(page.received))
                what = ", ".join(f"{k}={v}" for k, v in sorted(page.labels.items()))
                print(f"{when} {page.status:<8} {page.alertname} {what}")
        case _:
            raise ValueError(f"unknown monitoring action {action!r} (up, down, status, pages)")
    return 0
