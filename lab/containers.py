"""The systemd tier of the lab: fln1 and fln2 as booted Debian 12 containers (DESIGN.md, "Real
nodes: the systemd tier"; COMPONENTS.md, "systemd in a container").

``lab/lab up --systemd`` builds the same network and ZooKeeper ensemble as the namespace lab
(lab/cluster.py), but instead of running each node's processes itself it boots a Debian 12
container with systemd as PID 1 in each node's network namespace (``systemd-nspawn --boot
--network-namespace-path=/run/netns/NODE --private-network``), so addresses and faults stay the
same. In there, the project's own ``scripts/install-node`` installs failoverd as the README says,
on Debian's PostgreSQL layout; failoverd runs as ``failoverd.service``, the installed unit,
unchanged; the demo app, Squid and sshd are systemd units too.

Why a container and not a VM: it boots in about a second on two shared cores, and the host
sees everything (the rootfs, the journal, the processes) for tests to check.

Files (under the lab root, default /var/tmp/failoverd-lab)::

    systemd-lab                     marker: this lab runs containers (``lab/lab down`` knows)
    containers/fln1/rootfs/         the container's own copy of the cached rootfs
                    nspawn.pid      systemd-nspawn's PID; PID 1 of the container is its child
                    nspawn.log      its console output
                    keys/           the peer's public parts, copied here by the lab (the
                                    operator's scp)
    fln1/failoverd.toml             the node's configuration, as written into the container

and, kept across labs (once per machine), under /var/cache/failoverd-lab (lab/rootfs.py): the
rootfs tarball (debootstrap from the machine's own apt source, the node packages installed
without booting) and a wheelhouse for installing failoverd offline (the lab network has no
route out). What the lab writes into a container is in lab/node_files.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lab.cluster import (
    ADDRESSES,
    CLIENT_NS,
    INITIAL_PRIMARY,
    NODES,
    PG_DB,
    REPO,
    SYSTEM_PATH,
    ZK_SERVERS,
    Lab,
    LabError,
)
from lab.node_files import SRC_IN_CONTAINER, app_unit, failoverd_toml, squid_conf
from lab.process import wait_for
from lab.rootfs import ContainerError, build_rootfs, build_wheels, nspawn_offline, run_host

WHEELS_IN_CONTAINER: Final = "/opt/failoverd-wheels"
KEYS_IN_CONTAINER: Final = "/root/failoverd-peer"
MARKER: Final = "systemd-lab"
CONTAINER_PATH: Final = SYSTEM_PATH
BOOT_TIMEOUT: Final = 60.0
APP_UNIT: Final = "donations.service"


@dataclass(frozen=True)
class Container:
    """One booted node: its directory on the host and its processes."""

    name: str
    home: Path

    @property
    def rootfs(self) -> Path:
        return self.home / "rootfs"

    @property
    def pid_file(self) -> Path:
        return self.home / "nspawn.pid"

    def nspawn_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not cmdline or not cmdline[0].endswith(b"systemd-nspawn"):
            return None
        return pid

    def leader(self) -> int | None:
        """PID 1 of the container as the host sees it: the nspawn process's child."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None


SAMPLER_HBA = (
    f"host    postgres        postgres        {ADDRESSES[CLIENT_NS]}/32    trust"
    "    # lab only: the sampler's pg_is_in_recovery()"
)


def cgroup_dirs(name: str) -> list[Path]:
    """The cgroups each container's nspawn is started from (COMPONENTS.md: without them two
    containers land in one ``/payload`` and share unit cgroups)."""
    return [Path("/sys/fs/cgroup/systemd") / name, Path("/sys/fs/cgroup/unified") / name]


class SystemdLab:
    """Containers on top of a namespace lab's network and ZooKeeper (``Lab``), and the API
    the system tests drive: ``run`` in a container, ``journal``, ``failoverctl``, ``status``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.root = lab.root
        self._log = lab._log

    def container(self, node: str) -> Container:
        if node not in NODES:
            raise ValueError(f"no such node {node!r} (one of {', '.join(NODES)})")
        return Container(node, self.root / "containers" / node)

    def is_systemd_lab(self) -> bool:
        return (self.root / MARKER).exists()

    # -- life cycle ---------------------------------------------------------------------------

    def up(self) -> float:
        """Network and ZooKeeper as the namespace lab runs them, then fln1 and fln2 booted,
        installed by scripts/install-node and started; returns the seconds it took, once one
        node is active and the other streams from it."""
        t0 = time.monotonic()
        lab = self.lab
        lab._preflight()
        for tool in ("systemd-nspawn", "debootstrap", "nsenter", "tar"):
            if not shutil.which(tool):
                raise ContainerError(
                    f"missing: {tool} (apt-get install --no-install-recommends "
                    "systemd-container debootstrap)"
                )
        if any(self.container(n).leader() is not None for n in NODES):
            raise ContainerError("the containers are already up (lab/lab down first)")
        if not self.is_systemd_lab() and any(lab.pid(n, "failoverd") for n in NODES):
            raise ContainerError("a namespace lab runs: lab/lab down first")
        lab._prepare_dirs()
        (self.root / MARKER).touch()
        with ThreadPoolExecutor(max_workers=6) as pool:
            tarball = pool.submit(build_rootfs, self._log)
            wheels = pool.submit(build_wheels, lab.venv, self._log)
            lab._network("start")
            zks = [pool.submit(lab._start, s, "zookeeper") for s in ZK_SERVERS]
            tar_path, wheel_dir = tarball.result(), wheels.result()
            copies = [pool.submit(self._prepare, n, tar_path) for n in NODES]
            for f in copies:
                f.result()
            for node in NODES:  # one at a time: each from its own cgroup
                self._boot(node, wheel_dir)
            booted = [pool.submit(self._wait_booted, n) for n in NODES]
            for done in booted:
                done.result()
            for zk in zks:
                zk.result()
        self._install()
        active = self.wait_redundant(120.0)
        took = time.monotonic() - t0
        self._log(f"systemd lab up in {took:.1f} s, {active} active")
        return took

    def down(self) -> float:
        """Power the containers off (then kill what is left by PID), remove their cgroups,
        propagation directories and copies; the namespace lab's ``down`` does the rest."""
        t0 = time.monotonic()
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
            for f in [pool.submit(self.stop_container, n) for n in NODES]:
                try:
                    f.result()
                except ContainerError as e:
                    errors.append(str(e))
        for node in NODES:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.container(node).home.parent / node)
        with contextlib.suppress(OSError):
            (self.root / "containers").rmdir()
        with contextlib.suppress(FileNotFoundError):
            (self.root / MARKER).unlink()
        try:
            self.lab.down()
        except LabError as e:
            errors.append(str(e))
        if errors:
            raise ContainerError("systemd lab down: " + "\n".join(errors))
        took = time.monotonic() - t0
        self._log(f"systemd lab down in {took:.1f} s")
        return took

    def _prepare(self, node: str, tarball: Path) -> None:
        """The node's own copy of the rootfs with its identity: hostname, an empty machine-id,
        new SSH host keys, its own PostgreSQL cluster (another initdb, as a package install on
        a real machine makes), and the lab's Squid, app and journal settings."""
        c = self.container(node)
        shutil.rmtree(c.home, ignore_errors=True)
        c.rootfs.mkdir(parents=True)
        run_host(
            ["tar", "-C", str(c.rootfs), "--numeric-owner", "-xpf", str(tarball)], 120, what="untar"
        )
        r = c.rootfs
        (r / "etc/hostname").write_text(f"{node}\n")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in ADDRESSES.items())
        (r / "etc/hosts").write_text(hosts)
        (r / "etc/machine-id").write_text("")
        nspawn_offline(
            r,
            [
                "sh", "-c",
                "ssh-keygen -A >/dev/null && pg_dropcluster 15 main"
                " && pg_createcluster --locale C.UTF-8 15 main >/dev/null",
            ],
            120,
            f"{node}: host keys and its own PostgreSQL cluster",
        )  # fmt: skip
        # The journal on disk, so the host can read it (journalctl -D) after a poweroff.
        (r / "var/log/journal").mkdir(exist_ok=True)
        (r / f"{KEYS_IN_CONTAINER.lstrip('/')}").mkdir(mode=0o700, exist_ok=True)
        (r / "etc/squid/squid.conf").write_text(squid_conf(node))
        (r / f"etc/systemd/system/{APP_UNIT}").write_text(app_unit(node))
        # sshd's default is fine for fencing: root by key only (prohibit-password); the
        # forced command comes from authorized_keys. Only: no DNS lookups of clients.
        (r / "etc/ssh/sshd_config.d/lab.conf").write_text("UseDNS no\n")

    def _boot(self, node: str, wheels: Path) -> None:
        c = self.container(node)
        for d in cgroup_dirs(node):
            d.mkdir(exist_ok=True)
        argv = [
            "systemd-nspawn", "-D", str(c.rootfs), "-b", "-M", node,
            "--register=no", "--keep-unit", "--console=read-only",
            f"--network-namespace-path=/run/netns/{node}", "--private-network",
            f"--bind-ro={REPO}:{SRC_IN_CONTAINER}", f"--bind-ro={wheels}:{WHEELS_IN_CONTAINER}",
        ]  # fmt: skip
        groups = [d / "cgroup.procs" for d in cgroup_dirs(node)]

        def into_own_cgroup() -> None:
            for procs in groups:
                procs.write_text("0")

        with (c.home / "nspawn.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=into_own_cgroup,  # noqa: PLW1509 (no threads touch the child)
                env={"PATH": SYSTEM_PATH, "LC_ALL": "C"},
            )
        c.pid_file.write_text(f"{proc.pid}\n")
        self._log(f"{node:<5} booting (nspawn pid {proc.pid})")

    def _wait_booted(self, node: str) -> None:
        c = self.container(node)
        t0 = time.monotonic()
        leader = wait_for(c.leader, 20.0, step=0.05)
        if leader is None:
            raise ContainerError(f"{node}: no container process; {self._console_tail(node)}")
        state = ""
        deadline = t0 + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            proc = self.run(node, ["systemctl", "is-system-running"], timeout=10.0)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            raise ContainerError(f"{node}: not booted after {BOOT_TIMEOUT:g} s ({state})")
        if state == "degraded":
            failed = self.run(node, ["systemctl", "--failed", "--no-legend"]).stdout.strip()
            self._log(f"{node:<5} booted degraded: {failed}")
        self._log(f"{node:<5} booted in {time.monotonic() - t0:.1f} s (leader pid {leader})")

    def _console_tail(self, node: str) -> str:
        try:
            text = (self.container(node).home / "nspawn.log").read_text(errors="replace")
        except OSError:
            return "no console log"
        return "console:\n" + "\n".join(text.splitlines()[-20:])

    # -- installation, as the README's guide says ------------------------------------------------

    def install_node(self, node: str, *args: str) -> str:
        """``scripts/install-node ARGS`` in the container (the checkout is mounted read-only
        at /opt/failoverd-src); its output, or ContainerError."""
        argv = [f"{SRC_IN_CONTAINER}/scripts/install-node", "--wheels", WHEELS_IN_CONTAINER, *args]
        proc = self.run(node, argv, timeout=300.0)
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            raise ContainerError(f"{node}: install-node {' '.join(args)} failed:\n{out}")
        return out

    def _install(self) -> None:
        first, second = INITIAL_PRIMARY, next(n for n in NODES if n != INITIAL_PRIMARY)
        t0 = time.monotonic()
        # Pass 1, both nodes: packages, PostgreSQL, the venv, the unit, the keys. The first
        # node's cluster is started: it is the first primary, and gets the password.
        with ThreadPoolExecutor(max_workers=2) as pool:
            passes = {
                n: pool.submit(self.install_node, n, *(["--bootstrap"] if n == first else []))
                for n in NODES
            }
            for n, f in passes.items():
                self._log(f"{n:<5} install-node: {f.result().splitlines()[-1]}")
        self._log(f"install-node (pass 1) in {time.monotonic() - t0:.1f} s")
        # The operator's scp: each node's public parts, and the password, to the peer.
        password = self.read_file(first, "/etc/failoverd/postgres.password")
        for node in NODES:
            peer = next(n for n in NODES if n != node)
            keys = self.container(node).rootfs / KEYS_IN_CONTAINER.lstrip("/")
            (keys / "host.pub").write_text(
                self.read_file(peer, "/etc/ssh/ssh_host_ed25519_key.pub")
            )
            (keys / "fencing.pub").write_text(self.read_file(peer, "/etc/failoverd/id_ed25519.pub"))
            (keys / "postgres.password").write_text(password)
            (keys / "postgres.password").chmod(0o600)
        self._create_app_database(first)
        for node in NODES:
            self._let_the_sampler_in(node)
        secret = os.urandom(32).hex()
        for node in NODES:
            self.write_config(node, secret)
        # Pass 2, the first node first: the peer's keys, check-config, failoverd started.
        for node in (first, second):
            peer = next(n for n in NODES if n != node)
            out = self.install_node(
                node,
                "--peer-address", ADDRESSES[peer],
                "--peer-host-key", f"{KEYS_IN_CONTAINER}/host.pub",
                "--peer-fencing-key", f"{KEYS_IN_CONTAINER}/fencing.pub",
                "--postgres-password-file", f"{KEYS_IN_CONTAINER}/postgres.password",
                "--enable",
            )  # fmt: skip
            self._log(f"{node:<5} install-node --enable: {out.splitlines()[-1]}")
            self.systemctl(node, "enable", "--now", APP_UNIT)
        self._log(f"installed both nodes in {time.monotonic() - t0:.1f} s")

    def _let_the_sampler_in(self, node: str) -> None:
        """The lab's sampler (lab/workload.py, in flcli) asks each node's PostgreSQL whether it
        is writable, as the postgres user without a password: a lab-only pg_hba.conf line,
        outside the block install-node manages. Between its two passes: the second keeps the
        line, and reloads the running server (the clone starts with it)."""
        hba = self.container(node).rootfs / "etc/postgresql/15/main/pg_hba.conf"
        text = hba.read_text()
        if SAMPLER_HBA not in text:
            hba.write_text(text.rstrip("\n") + "\n" + SAMPLER_HBA + "\n")

    def _create_app_database(self, node: str) -> None:
        """The demo app's database and schema on the first primary (the replica clones it)."""
        exists = self.psql(node, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'")
        if exists.strip() != "1":
            self.psql(node, f'CREATE DATABASE "{PG_DB}"')
        schema = (REPO / "lab" / "donations" / "schema.sql").read_text()
        self.psql(node, None, dbname=PG_DB, input=schema)

    def write_config(self, node: str, failsafe_secret: str) -> None:
        """The lab's failoverd.toml for a container node (Debian layout, /etc/failoverd keys,
        /run/failoverd store), into the container and beside it on the host."""
        text = failoverd_toml(node)
        etc = self.container(node).rootfs / "etc/failoverd"
        etc.mkdir(mode=0o750, exist_ok=True)
        (etc / "failoverd.toml").write_text(text)
        (etc / "failoverd.toml").chmod(0o640)
        (etc / "failsafe.key").write_text(failsafe_secret + "\n")
        (etc / "failsafe.key").chmod(0o600)
        host_copy = self.lab.config_path(node)
        host_copy.parent.mkdir(parents=True, exist_ok=True)
        host_copy.write_text(text)

    # -- inside a container -------------------------------------------------------------------

    def run(
        self,
        node: str,
        argv: Sequence[str],
        timeout: float = 30.0,
        *,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` in the container (``nsenter -t LEADER -a``, a clean environment); never
        raises on a non-zero exit; ContainerError when the container is not running."""
        leader = self.container(node).leader()
        if leader is None:
            raise ContainerError(f"{node}: the container is not running")
        full = [
            "nsenter", "-t", str(leader), "-a",
            "env", "-i", f"PATH={CONTAINER_PATH}", "LC_ALL=C", "HOME=/root", "TERM=dumb",
            *argv,
        ]  # fmt: skip
        return subprocess.run(
            full,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check(self, node: str, argv: Sequence[str], timeout: float = 30.0) -> str:
        """``run`` that raises ContainerError on a non-zero exit; the output."""
        proc = self.run(node, argv, timeout)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()
            raise ContainerError(f"{node}: {' '.join(argv)} failed ({proc.returncode}): {out}")
        return proc.stdout

    def systemctl(self, node: str, *args: str, timeout: float = 90.0) -> str:
        return self.check(node, ["systemctl", *args], timeout)

    def read_file(self, node: str, path: str) -> str:
        return (self.container(node).rootfs / path.lstrip("/")).read_text()

    def psql(
        self, node: str, sql: str | None, *, dbname: str = "postgres", input: str | None = None
    ) -> str:
        """psql as the postgres user over the local socket (peer authentication)."""
        argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-d", dbname, *(["-c", sql] if sql is not None else [])]
        proc = self.run(node, argv, 30.0, input=input)
        if proc.returncode != 0:
            raise ContainerError(f"{node}: psql failed: {(proc.stdout + proc.stderr).strip()}")
        return proc.stdout

    def journal(self, node: str, *args: str) -> str:
        """``journalctl --no-pager ARGS`` in the container (running), else from its files."""
        if self.container(node).leader() is not None:
            return self.run(node, ["journalctl", "--no-pager", *args], 60.0).stdout
        journal_dir = self.container(node).rootfs / "var/log/journal"
        proc = subprocess.run(
            ["journalctl", "--no-pager", "-D", str(journal_dir), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return proc.stdout

    def failoverctl(
        self, node: str, *args: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """The installed failoverctl in the container, with its /etc/failoverd configuration."""
        return self.run(node, ["/opt/failoverd/bin/failoverctl", *args], timeout)

    def unit_state(self, node: str, unit: str = "failoverd.service") -> dict[str, str]:
        """ActiveState, SubState, Result, StatusText, MainPID, NRestarts of a unit."""
        props = "ActiveState,SubState,Result,StatusText,MainPID,NRestarts,ExecMainStatus"
        out = self.run(node, ["systemctl", "show", "-p", props, unit]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cluster_status(self) -> dict[str, Any] | None:
        """``failoverctl status --json`` from the first running container that answers, with
        its exit code as ``exit_code``."""
        for node in NODES:
            if self.container(node).leader() is None:
                continue
            try:
                proc = self.failoverctl(node, "status", "--json", timeout=15.0)
            except subprocess.TimeoutExpired:
                continue
            if proc.stdout.strip().startswith("{"):
                doc: dict[str, Any] = json.loads(proc.stdout)
                doc["exit_code"] = proc.returncode
                return doc
        return None

    def database_state(self, node: str) -> str:
        """``primary``, ``replica (<wal receiver status>)`` or ``down``."""
        if self.container(node).leader() is None:
            return "down"
        try:
            out = self.psql(
                node,
                "SELECT pg_is_in_recovery(),"
                " coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')",
            )
        except (ContainerError, subprocess.TimeoutExpired):
            return "down"
        fields = out.strip().split("|")
        if len(fields) != 2:
            return "down"
        return "primary" if fields[0] == "f" else f"replica ({fields[1]})"

    def redundant(self) -> str | None:
        """The active node when one is active (with the VIP, its database the primary) and
        the other's database streams from it; None otherwise."""
        doc = self.cluster_status()
        if doc is None or doc.get("exit_code") != 0:
            return None
        active = [m["node"] for m in doc.get("members", []) if m.get("role") == "active"]
        if len(active) != 1 or self.lab.vip_holders() != active:
            return None
        passive = next(n for n in NODES if n != active[0])
        if self.database_state(active[0]) != "primary":
            return None
        if self.database_state(passive) != "replica (streaming)":
            return None
        return str(active[0])

    def wait_redundant(self, timeout: float = 60.0) -> str:
        node = wait_for(self.redundant, timeout, step=0.5)
        if node is None:
            doc = self.cluster_status()
            raise ContainerError(
                f"not redundant after {timeout:g} s: status {json.dumps(doc)[:1500]}; "
                + "; ".join(f"{n}: {self.database_state(n)}" for n in NODES)
            )
        return node

    # -- faults and stops ---------------------------------------------------------------------

    def poweroff(self, node: str, timeout: float = 60.0) -> float:
        """``systemctl poweroff`` in the container; waits until nspawn has exited. Seconds."""
        c = self.container(node)
        pid = c.nspawn_pid()
        if pid is None:
            return 0.0
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired, ContainerError):
            self.run(node, ["systemctl", "poweroff", "--no-block"], timeout=10.0)
        if wait_for(lambda: c.nspawn_pid() is None, timeout, step=0.1) is None:
            raise ContainerError(f"{node}: still running {timeout:g} s after poweroff")
        self._clean_after(node)
        return time.monotonic() - t0

    def start_container(self, node: str, *, wait_booted: bool = True) -> float:
        """Boot a stopped container again (its rootfs as it was left). Seconds until booted
        (systemd running: every unit started), or with ``wait_booted=False`` until its systemd
        answers (a unit that waits, as failoverd without ZooKeeper does, holds up the boot)."""
        t0 = time.monotonic()
        if self.container(node).leader() is not None:
            raise ContainerError(f"{node}: already running")
        wheels = build_wheels(self.lab.venv, self._log)
        self._boot(node, wheels)
        if wait_booted:
            self._wait_booted(node)
        elif not wait_for(lambda: self._systemd_answers(node), BOOT_TIMEOUT, step=0.2):
            raise ContainerError(f"{node}: systemd does not answer; {self._console_tail(node)}")
        return time.monotonic() - t0

    def _systemd_answers(self, node: str) -> bool:
        if self.container(node).leader() is None:
            return False
        proc = self.run(node, ["systemctl", "is-system-running"], timeout=10.0)
        return proc.stdout.strip() not in ("", "offline")

    def stop_container(self, node: str) -> None:
        """Power off; when that does not end it within 30 s, SIGKILL every process of its
        cgroups by PID. Then remove what nspawn leaves behind."""
        c = self.container(node)
        if c.nspawn_pid() is not None:
            try:
                self.poweroff(node, timeout=30.0)
            except ContainerError as e:
                self._log(f"{node:<5} {e}: killing it")
                self._kill_cgroup(node)
        self._clean_after(node)

    def crash(self, node: str) -> None:
        """The node dies: its link goes down first (nothing it had open says goodbye), then
        every process of the container, systemd included, is SIGKILLed. ``start_container``
        boots it again from its rootfs as it was left (``restore_link`` first)."""
        self.lab._ip(node, "link", "set", "eth0", "down")
        self._kill_cgroup(node)
        self._clean_after(node)

    def restore_link(self, node: str) -> None:
        self.lab._ip(node, "link", "set", "eth0", "up")

    def _kill_cgroup(self, node: str) -> None:
        for _ in range(50):
            pids = self._cgroup_pids(node)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        raise ContainerError(
            f"{node}: processes survive SIGKILL: {sorted(self._cgroup_pids(node))}"
        )

    @staticmethod
    def _cgroup_pids(node: str) -> set[int]:
        pids: set[int] = set()
        for top in cgroup_dirs(node):
            if not top.exists():
                continue
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in procs.read_text().split()}
        return pids

    def _clean_after(self, node: str) -> None:
        """The empty cgroups (depth first) and the propagation directory nspawn leaves."""
        for top in cgroup_dirs(node):
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{node}", ignore_errors=True)

    def leftovers(self) -> bool:
        """Anything a container left on the host (a lab taken down by an older ``lab/lab``)."""
        return any(d.exists() for n in NODES for d in cgroup_dirs(n)) or any(
            self.container(n).home.exists() for n in NODES
        )

    def collect_logs(self, dest: Path) -> list[Path]:
        """Each container's journal (all units, with priorities) and console log into
        ``dest``, for a test that failed; the files written."""
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for node in NODES:
            c = self.container(node)
            if not c.rootfs.exists():
                continue
            journal = dest / f"{node}-journal.txt"
            with contextlib.suppress(OSError, subprocess.TimeoutExpired, ContainerError):
                journal.write_text(self.journal(node, "-o", "short-precise", "-a"))
                written.append(journal)
            pg_log = c.rootfs / "var/lib/postgresql/15/postgres.log"
            if pg_log.exists():
                shutil.copy(pg_log, dest / f"{node}-postgres.log")
                written.append(dest / f"{node}-postgres.log")
            console = c.home / "nspawn.log"
            if console.exists():
                shutil.copy(console, dest / f"{node}-console.txt")
                written.append(dest / f"{node}-console.txt")
        return written

    def status_lines(self) -> list[str]:
        """One line per container, for ``lab/lab status``."""
        lines = []
        for node in NODES:
            c = self.container(node)
            leader = c.leader()
            if leader is None:
                lines.append(f"container {node}: down")
                continue
            st = self.unit_state(node)
            lines.append(
                f"container {node}: up (leader pid {leader}); failoverd.service "
                f"{st.get('ActiveState')}/{st.get('SubState')}: {st.get('StatusText', '')}"
            )
        return lines
