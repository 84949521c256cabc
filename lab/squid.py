"""A real Squid 5.7 reverse proxy (accel mode) in front of the demo app, for tests and the lab.

Why real: the failover path goes through Squid, and what matters is what Squid itself does when
the app behind it is down or slow (how fast it answers 503, whether it recovers when the app
returns). Squid runs in the foreground (``squid -N``) as our child, everything it writes lives
under ``base_dir``, and it is stopped by PID.

Run as root, Squid switches to the ``proxy`` user, so ``base_dir`` is chowned to that user and
must be reachable by it (not under pytest's 0700 ``tmp_path``).

The cache manager answers on the accel port itself, at ``/squid-internal-mgr/ACTION`` (e.g.
``http://127.0.0.1:PORT/squid-internal-mgr/info``), from localhost only.
"""

from __future__ import annotations

import http.client
import os
import pwd
import subprocess
from pathlib import Path

from lab.process import ServerProcess
from lab.zookeeper import free_port

SQUID = "/usr/sbin/squid"
SQUID_USER = "proxy"  # cache_effective_user of Debian's build
DEFAULT_SITE = "failoverd.test"


class SquidError(RuntimeError):
    """Squid could not be configured, started or stopped; the message carries its log's tail."""


class SquidServer(ServerProcess):
    """One Squid process in accel mode: ``host:port`` -> the app at ``127.0.0.1:app_port``."""

    def __init__(
        self,
        base_dir: Path,
        app_port: int,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        app_host: str = "127.0.0.1",
        squid: str = SQUID,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.app_port = app_port
        self.app_host = app_host
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.squid = squid
        self.config_path = self.base_dir / "squid.conf"
        self.cache_log = self.base_dir / "cache.log"
        self.access_log = self.base_dir / "access.log"
        self.output_log = self.base_dir / "squid.out"  # stdout/stderr of the process

    # -- properties -------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """A URL through Squid (what a client of the site would ask)."""
        return f"http://{self.host}:{self.port}{path if path.startswith('/') else '/' + path}"

    def mgr_url(self, action: str = "info") -> str:
        """The cache manager URL Squid 5.7 answers in accel mode: ``/squid-internal-mgr/ACTION``
        on the accel port (``cache_object://`` is gone in Squid 5)."""
        return self.url(f"/squid-internal-mgr/{action}")

    # -- configuration ----------------------------------------------------------------------

    def config_text(self) -> str:
        """The accel-mode configuration (see COMPONENTS.md), with fast failure when the app is down.

        ``never_direct`` stops Squid from resolving the site name and going direct (a DNS wait
        instead of an immediate error); ``no-digest`` stops it asking the app for a cache digest.
        ``connect-fail-limit`` is huge because after that many refused connects (10 by default)
        Squid marks the peer dead and answers 502 without trying, until a probe (at most once
        per ``connect_timeout``) finds the app back. With it, a stopped app gives a 503 in about
        a millisecond on every request, and the first request after the app returns succeeds.
        (Only before Squid has once reached the app since its own start does it answer 502.)
        """
        d = self.base_dir
        return "\n".join(
            [
                "# Written by lab/squid.py: a lab reverse proxy in front of the donations app.",
                f"http_port {self.host}:{self.port} accel defaultsite={DEFAULT_SITE} no-vhost",
                f"cache_peer {self.app_host} parent {self.app_port} 0 no-query no-digest"
                " originserver connect-fail-limit=1000000 name=app",
                "http_access allow localhost manager",
                "http_access deny manager",
                "http_access allow all",
                "cache_peer_access app allow all",
                "never_direct allow all",
                "cache deny all",
                "cachemgr_passwd none info menu server_list counters",
                "connect_timeout 1 second",
                "peer_connect_timeout 1 second",
                "forward_max_tries 1",
                "pinger_enable off",
                "httpd_suppress_version_string on",
                f"pid_filename {d}/squid.pid",
                f"access_log stdio:{d}/access.log",
                f"cache_log {d}/cache.log",
                "cache_store_log none",
                f"coredump_dir {d}",
                "netdb_filename none",
                "logfile_rotate 0",
                "shutdown_lifetime 0 seconds",
                "",
            ]
        )

    def write_config(self) -> None:
        """Write ``squid.conf`` and check it with ``squid -k parse``."""
        self._prepare_dir()
        self.config_path.write_text(self.config_text())
        try:
            proc = subprocess.run(
                [self.squid, "-k", "parse", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.base_dir,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SquidError("squid -k parse did not finish within 30 s") from None
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0 or "FATAL" in out or "ERROR" in out:
            raise SquidError(f"squid -k parse -f {self.config_path} failed:\n{out}")

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Run ``squid -N -f CONF`` as a child; ready once the cache manager answers over HTTP
        (the port accepts and Squid's request path works, whether or not the app is up)."""
        if self.running:
            return
        self.write_config()
        cmd = [self.squid, "-N", "-f", str(self.config_path)]
        self._spawn(cmd, self.output_log, self.base_dir, header=False)

        def probe() -> str | None:
            status, _ = self.get("/squid-internal-mgr/info", timeout=1.0)
            return None if status == 200 else f"cache manager answered {status}"

        self._wait_ready(
            probe,
            timeout,
            SquidError,
            "Squid",
            verb="serve",
            on_timeout=self.kill,
            log_path=self.cache_log,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID (Squid takes 1.5-2 s even with shutdown_lifetime 0), SIGKILL after
        ``timeout``; idempotent."""
        super().stop(timeout)

    # -- helpers ----------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` through Squid: (status, body). Raises OSError when nothing answers."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def mgr(self, action: str = "info", timeout: float = 5.0) -> str:
        """A cache manager report (``info``, ``menu``, ``server_list``, ``counters``)."""
        status, body = self.get(f"/squid-internal-mgr/{action}", timeout)
        if status != 200:
            raise SquidError(f"cache manager {action!r} answered {status}")
        return body.decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        parts: list[str] = []
        for path in (self.cache_log, self.output_log):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            parts.extend(text.splitlines())
        return "\n".join(parts[-lines:]) if parts else "(no log)"

    def _prepare_dir(self) -> None:
        """Squid (run as root) writes its logs as ``proxy``: the directory must be its."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(SQUID_USER)
        os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
        self.base_dir.chmod(0o755)
        probe = subprocess.run(
            ["runuser", "-u", SQUID_USER, "--", "test", "-w", str(self.base_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd="/",
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise SquidError(
                f"user {SQUID_USER!r} cannot write {self.base_dir}: every parent directory must "
                "be searchable by it (use a directory under /tmp with mode 0755, not pytest's "
                "tmp_path)"
            )

    def __repr__(self) -> str:
        return f"SquidServer({self.host}:{self.port} -> {self.app_port}, pid={self.pid})"
