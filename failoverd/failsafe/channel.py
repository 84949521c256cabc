"""Both ends of the failsafe channel as the daemon uses them.

The server grants (passive side) and the client asks (active side); the daemon runs both,
whatever its role, because the core decides which one matters. ``ask`` never blocks the loop: it
hands the epoch to one background worker and returns; at most one request is in flight, and an
ask while one is in flight is dropped (the next tick asks again). The latest pledge granted to us
is kept for the observation; a refusal or a silence does not take it away (it lapses by itself,
and the core judges that).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failoverd.clock import boottime
from failoverd.config import Config
from failoverd.core import Pledge
from failoverd.failsafe.client import AskOutcome, PledgeClient
from failoverd.failsafe.errors import FailsafeError
from failoverd.failsafe.protocol import check_fits
from failoverd.failsafe.secret import read_secret
from failoverd.failsafe.server import PledgeServer
from failoverd.failsafe.stats import FailsafeStats
from failoverd.failsafe.store import BOOT_ID_PATH, PromiseStore, read_boot_id


class FailsafeChannel:
    def __init__(
        self,
        cfg: Config,
        log: Any,
        clock: Callable[[], float] = boottime,
        boot_id_path: Path = BOOT_ID_PATH,
    ) -> None:
        if cfg.failsafe.secret_file is None:
            raise ValueError("the failsafe needs [failsafe] secret_file")
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.boot_id_path = boot_id_path
        self.server: PledgeServer | None = None
        self.client: PledgeClient | None = None
        self._cv = threading.Condition()
        self._pending: int | None = None  # epoch handed to the worker, not yet taken
        self._busy = False  # an ask is pending or in flight
        self._closed = False
        self._dropped = 0
        self._pledge: Pledge | None = None
        self._received = 0
        self._last_result: str | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Read the secret and the boot id, restore the promises, listen, start the asker.
        FailsafeError (with the ``[failsafe]`` key to look at) when any of it fails."""
        cfg, fs = self.cfg, self.cfg.failsafe
        assert fs.secret_file is not None
        secret = read_secret(fs.secret_file)
        me, peer = cfg.self_member, cfg.peer
        cluster = cfg.cluster.name
        try:
            check_fits(cluster, me.name, peer.name)
        except ValueError as e:
            raise FailsafeError(f"cluster and member names too long for the channel: {e}") from None
        store = PromiseStore(fs.store_dir, cluster, me.name, read_boot_id(self.boot_id_path))
        server = PledgeServer(
            secret=secret,
            cluster=cluster,
            node=me.name,
            peer=peer.name,
            address=me.address,
            port=fs.port,
            ttl=fs.pledge_ttl,
            store=store,
            log=self.log,
            clock=self.clock,
        )
        server.start()
        self.server = server
        self.client = PledgeClient(
            secret=secret,
            cluster=cluster,
            node=me.name,
            peer=peer.name,
            peer_address=peer.address,
            port=fs.port,
            ttl=fs.pledge_ttl,
            bind_address=me.address,
            log=self.log,
            clock=self.clock,
        )
        self._worker = threading.Thread(target=self._work, name="failsafe-ask", daemon=True)
        self._worker.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=2.0)
        if self.server is not None:
            self.server.close()

    # -- the active's side ----------------------------------------------------------------------

    def ask(self, epoch: int) -> bool:
        """Hand a request for ``epoch`` to the worker; False (dropped) when one is in flight."""
        with self._cv:
            if self._busy or self._closed or self._worker is None:
                self._dropped += 1
                return False
            self._busy = True
            self._pending = epoch
            self._cv.notify_all()
        return True

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                epoch, self._pending = self._pending, None
            assert epoch is not None and self.client is not None
            try:
                outcome = self.client.ask(epoch)
            except Exception as e:  # a bug here must not end the asker
                self.log.exception("failsafe_ask_crashed")
                outcome = AskOutcome("unanswered", detail=f"crashed: {e!r}")
            with self._cv:
                got = outcome.pledge
                if got is not None:
                    self._received += 1
                    if self._pledge is None or got.sent_at >= self._pledge.sent_at:
                        self._pledge = got
                self._busy = False
                changed = outcome.result != self._last_result
                self._last_result = outcome.result
            if changed:  # a line when the peer starts or stops granting, not one per ask
                self.log.info(
                    "failsafe_ask", result=outcome.result, epoch=epoch, detail=outcome.detail
                )

    # -- the passive's side ---------------------------------------------------------------------

    def set_granting(self, epoch: int | None) -> None:
        """See ``PledgeServer.set_granting``: returns once the new setting binds every grant."""
        if self.server is None:
            raise FailsafeError("the failsafe channel is not running")
        self.server.set_granting(epoch)

    # -- what the loop observes -----------------------------------------------------------------

    def observed(self) -> tuple[Pledge | None, float | None, int | None]:
        """(the latest pledge granted to us, until when we promised, whom we grant now)."""
        with self._cv:
            pledge = self._pledge
        if self.server is None:
            return pledge, None, None
        return pledge, self.server.pledged_until, self.server.granting

    def stats(self) -> FailsafeStats:
        refused: dict[str, int] = {}
        asks: dict[str, int] = {}
        for end in (self.server, self.client):
            if end is not None:
                for reason, n in end.refusals.counts().items():
                    refused[reason] = refused.get(reason, 0) + n
        if self.client is not None:
            asks.update(self.client.results())
        with self._cv:
            asks["dropped"] = self._dropped
            received = self._received
        granted = 0 if self.server is None else self.server.granted
        return FailsafeStats(refused=refused, granted=granted, received=received, asks=asks)
