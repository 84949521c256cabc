"""The daemon's files in systemd's runtime directory: the role it records for ExecStopPost
(``failoverd/stoppost.py`` fences by it), and the marker ExecStopPost leaves when its fence of
the previous run failed. Outside systemd there are none, and this does nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from failoverd.core import Role, State, supervision_role
from failoverd.stoppost import role_file_path, unfenced_marker_path, write_role


class RunFiles:
    def __init__(self, environ: Mapping[str, str], log: Any) -> None:
        self.log = log
        self.role_file = role_file_path(environ)
        self.unfenced_marker = unfenced_marker_path(environ)
        # The previous run ended unfenced: the core gives this one no start-up grace.
        self.started_unfenced = self.unfenced_marker is not None and self.unfenced_marker.exists()
        self._role_written: str | None = None
        self._role_file_error: str | None = None
        if self.started_unfenced:
            log.warning(
                "previous_life_unfenced",
                detail="the previous run ended abnormally and ExecStopPost's fence-self failed: "
                "fencing at once if this node serves",
                path=str(self.unfenced_marker),
            )

    def record(self, state: State) -> None:
        """Before the step's actions run: the role ExecStopPost judges an abnormal end by, and,
        once a role is taken, the previous run's marker cleared."""
        if self.started_unfenced and state.role is not Role.STARTING:
            self._clear_unfenced_marker(state)
        role = supervision_role(state)
        if self.role_file is None or role == self._role_written:
            return
        try:
            write_role(self.role_file, role)
            self._role_written, self._role_file_error = role, None
        except OSError as e:
            if str(e) != self._role_file_error:
                self.log.warning("role_file_unwritable", path=str(self.role_file), error=str(e))
            self._role_file_error = str(e)

    def _clear_unfenced_marker(self, state: State) -> None:
        """This run's role is taken (fenced, or from a fresh round-trip) and recorded: the next
        run needs no warning from its predecessor. Tried once: a marker left behind only costs
        the next run its grace, which is the safe side, and is said."""
        assert self.unfenced_marker is not None
        self.started_unfenced = False
        try:
            self.unfenced_marker.unlink(missing_ok=True)
        except OSError as e:
            self.log.warning(
                "unfenced_marker_unremovable", path=str(self.unfenced_marker), error=str(e)
            )
            return
        self.log.info("unfenced_marker_removed", role=state.role.value, reason=state.reason.text)
