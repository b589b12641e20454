"""The unit files in systemd/ are the ones `pipedaemon install-service` writes.

They differ only where install-service puts paths of this machine: ExecStart (the
exact interpreter) and Documentation (the absolute path of docs/systemd.md).
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from pipedaemon.systemd import install_units, unit_texts

REPO_UNITS = Path(__file__).resolve().parents[2] / "systemd"
MACHINE_KEYS = ("ExecStart=", "Documentation=")


def settings_lines(text: str) -> list[str]:
    """The unit's lines without comments, blanks and the machine-specific keys."""
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and not line.startswith(MACHINE_KEYS)]


def parse(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    cp.read_string(text)
    return cp


@pytest.mark.parametrize("name", ["pipedaemon.service", "pipedaemon.socket"])
def test_repo_unit_matches_install_service(name: str) -> None:
    repo = (REPO_UNITS / name).read_text()
    written = unit_texts("/opt/py/bin/python3")[name]
    assert settings_lines(repo) == settings_lines(written)


@pytest.mark.parametrize("source", ["repo", "installed"])
def test_units_parse_with_required_keys(source: str, tmp_path: Path) -> None:
    if source == "repo":
        texts = {n: (REPO_UNITS / n).read_text() for n in ("pipedaemon.service", "pipedaemon.socket")}
    else:
        paths = install_units(tmp_path, python="/opt/py/bin/python3")
        texts = {p.name: p.read_text() for p in paths}
    service, sock = parse(texts["pipedaemon.service"]), parse(texts["pipedaemon.socket"])
    assert service["Service"]["Type"] == "notify"
    assert service["Unit"]["Requires"] == "pipedaemon.socket"
    assert " serve --idle-timeout 0" in service["Service"]["ExecStart"]
    assert sock["Socket"]["ListenStream"] == "%t/pipedaemon/pipedaemon.sock"
    assert sock["Socket"]["SocketMode"] == "0600"
    assert sock["Socket"]["DirectoryMode"] == "0700"
    assert sock["Install"]["WantedBy"] == "sockets.target"


def test_install_service_writes_the_exact_interpreter(tmp_path: Path) -> None:
    paths = install_units(tmp_path, python="/opt/py/bin/python3")
    assert sorted(p.name for p in paths) == ["pipedaemon.service", "pipedaemon.socket"]
    service = parse((tmp_path / "pipedaemon.service").read_text())
    assert service["Service"]["ExecStart"] == "/opt/py/bin/python3 -m pipedaemon serve --idle-timeout 0"
    assert service["Unit"]["Documentation"].endswith("/docs/systemd.md")
