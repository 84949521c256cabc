"""The production template's paths fit failoverd.service's sandbox.

Under ProtectSystem=strict everything is read-only but ReadWritePaths= and the RuntimeDirectory=;
a data directory outside them is found at the first start as "Read-only file system" from
PostgreSQL. So the unit file itself is parsed here, not a copy of its values.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from failoverd.config import load_config
from tests.unit.test_config import EXAMPLE, TEMPLATE_FILLED

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "failoverd.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """[Service] settings as systemd reads them: repeated keys add up, words are split."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).extend(value.split())
    return settings


def writable_roots(settings: dict[str, list[str]]) -> list[PurePosixPath]:
    """ReadWritePaths= ("-" only means "absent is fine") and /run/<RuntimeDirectory>."""
    assert settings["ProtectSystem"] == ["strict"]
    roots = [PurePosixPath(p.removeprefix("-")) for p in settings.get("ReadWritePaths", [])]
    roots += [PurePosixPath("/run") / d for d in settings.get("RuntimeDirectory", [])]
    return roots


def inside(path: Path, roots: list[PurePosixPath]) -> bool:
    pure = PurePosixPath(path)
    return any(pure == root or root in pure.parents for root in roots)


def filled_template(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    for placeholder, value in TEMPLATE_FILLED.items():
        text = text.replace(placeholder, value)
    file = tmp_path / "failoverd.toml"
    file.write_text(text)
    return file


def test_every_path_the_daemon_writes_is_writable_under_the_unit(tmp_path: Path) -> None:
    roots = writable_roots(unit_settings(UNIT.read_text()))
    assert PurePosixPath("/var/lib/postgresql") in roots
    assert PurePosixPath("/run/failoverd") in roots
    cfg = load_config(filled_template(tmp_path), hostname="db1")
    assert cfg.postgres is not None and cfg.postgres.data_dir is not None
    written = {
        "postgres.data_dir": cfg.postgres.data_dir,
        # the server log and a clone's old directory go next to the data directory
        "postgres.data_dir/..": cfg.postgres.data_dir.parent,
        "failsafe.store_dir": cfg.failsafe.store_dir,
    }
    outside = {key: str(path) for key, path in written.items() if not inside(path, roots)}
    assert outside == {}, f"not writable under {UNIT.name}: {outside}"


def test_the_check_needs_the_unit_as_it_is() -> None:
    """The check can fail: a data directory outside the sandbox, as the lab file had."""
    roots = writable_roots(unit_settings(UNIT.read_text()))
    assert not inside(Path("/var/lib/failoverd/pg"), roots)
    assert not inside(Path("/var/lib/postgresql-old/main"), roots)
    assert inside(Path("/var/lib/postgresql/15/main"), roots)


def test_files_the_daemon_only_reads_are_under_etc(tmp_path: Path) -> None:
    """Keys and configuration stay read-only to the daemon: root-owned files in /etc."""
    cfg = load_config(filled_template(tmp_path), hostname="db1")
    assert cfg.postgres is not None and cfg.postgres.config_file is not None
    read = [
        cfg.fencing.identity_file,
        cfg.fencing.known_hosts,
        cfg.postgres.config_file,
    ]
    assert all(PurePosixPath(p).parts[1] == "etc" for p in read), read
