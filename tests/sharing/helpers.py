"""Real Unix users for the shared-daemon tests: a service account, alice, bob, carol, and eve
outside the socket's group. Each client and each user's own daemon runs as its user."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import secret_scan
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
SETUP_REMOTE = "c = shared().connect(); return c.upsert_remote(ARGS)"  # a remote, as one of the users
ROLES = ("shared", "alice", "bob", "carol", "eve")

RUNNER = """
import json, os, sys
from pipedaemon_sdk import PipeClient, DaemonError
ARGS = json.loads(os.environ["PD_ARGS"])
SHARED = os.environ["PD_SHARED"]
def shared():
    return PipeClient(SHARED, shared=True, request_timeout_s=60)
def own():
    return PipeClient(start_timeout_s=30, request_timeout_s=60)
def main():
{body}
try:
    out = {{"ok": main()}}
except DaemonError as e:
    out = {{"error": e.code, "message": e.message, "data": e.data}}
except OSError as e:
    out = {{"oserror": type(e).__name__, "message": str(e)}}
print(json.dumps(out, default=str))
"""


def python_candidates() -> list[tuple[str, str]]:
    """Interpreters other users might run, with what to add to PYTHONPATH: the suite's own may
    live under a folder only we can enter (/root/.pyenv); the system's of the same version can
    then use our (readable) site-packages."""
    import site
    import sysconfig

    chosen = os.environ.get("PIPEDAEMON_TEST_USER_PYTHON")
    out = [(chosen, "")] if chosen else []
    out.append((sys.executable, ""))
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(system):
        out.append((system, os.pathsep.join([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])))
    return out


@dataclass
class User:
    name: str
    uid: int
    gid: int
    base: Path  # the user's own folder: home/ (daemon state), run/ (socket), data/ (pipe files)
    groups: list[int] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.base / "run" / "pd.sock"


@dataclass
class World:
    root: Path
    group: str
    gid: int
    users: dict[str, User]
    shared_socket: Path
    python: str = sys.executable  # an interpreter every test user may run
    pythonpath: str = str(REPO)
    shared_proc: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)  # everything a user received
    acl: list[tuple[str, str]] = field(default_factory=list)  # (folder, user) traverse grants to undo

    def env(self, u: User, args: Any = None) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(u.base), "PYTHONPATH": self.pythonpath,
                "PIPEDAEMON_HOME": str(u.base / "home"), "PIPEDAEMON_SOCKET": str(u.socket),
                "PD_SHARED": str(self.shared_socket), "PD_ARGS": json.dumps(args)}

    def run(self, who: str, body: str, args: Any = None, timeout: float = 120) -> dict[str, Any]:
        """Run ``body`` (the inside of ``def main():``) as user ``who``; its JSON answer."""
        u = self.users[who]
        code = RUNNER.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
        out = subprocess.run([self.python, "-c", code], env=self.env(u, args), user=u.uid, group=u.gid,
                             extra_groups=u.groups, capture_output=True, text=True, timeout=timeout, cwd="/")
        self.outputs += [out.stdout, out.stderr]
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def ok(self, who: str, body: str, args: Any = None) -> Any:
        got = self.run(who, body, args)
        assert "ok" in got, got
        return got["ok"]


def _useradd(name: str, group: str | None) -> None:
    groups = ["-G", group] if group else []  # members of the socket's group, as an operator adds them
    cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *groups, name]
    subprocess.run(cmd, check=True, capture_output=True)


def make_world(tag: str | None = None) -> World:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        unavailable("the sharing tests need root and useradd to create real users")
    tag = tag or uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="pdsh-", dir="/tmp"))
    root.chmod(0o755)
    group = f"pdg{tag}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    gid = grp.getgrnam(group).gr_gid
    users: dict[str, User] = {}
    for role in ROLES:
        name = f"pd{role[:2]}{tag}"
        _useradd(name, None if role == "eve" else group)
        pw = pwd.getpwnam(name)
        base = root / role
        for sub in ("", "home", "run", "data"):
            (base / sub).mkdir(mode=0o700, exist_ok=True)
            os.chown(base / sub, pw.pw_uid, pw.pw_gid)
        users[role] = User(name, pw.pw_uid, pw.pw_gid, base, [] if role == "eve" else [gid])
    sockdir = root / "pipedaemon-shared"
    sockdir.mkdir(mode=0o700)
    os.chown(sockdir, users["shared"].uid, gid)
    world = World(root, group, gid, users, sockdir / "shared.sock")
    world.acl = _grant_traverse([u.name for u in users.values()])
    tried = []
    for exe, extra in python_candidates():
        world.python, world.pythonpath = exe, os.pathsep.join(p for p in (str(REPO), extra) if p)
        try:
            probe = subprocess.run([exe, "-c", "import pipedaemon.server, pipedaemon.backends.s3"],
                                   user=users["eve"].uid, env=world.env(users["eve"]), capture_output=True,
                                   text=True, cwd="/")
        except OSError as exc:  # not even executable for them
            tried.append(f"{exe}: {exc}")
            continue
        if probe.returncode == 0:
            return world
        tried.append(f"{exe}: {probe.stderr.strip()[-200:]}")
    drop_world(world)
    unavailable("no Python the test users may run (set PIPEDAEMON_TEST_USER_PYTHON): " + "; ".join(tried))


def start_shared(world: World, ttl_s: float | None = None) -> None:
    u = world.users["shared"]
    with open(u.base / "stderr-shared.log", "wb") as err:
        world.shared_proc = subprocess.Popen(
            [world.python, "-m", "pipedaemon", "serve", "--shared", "--group", world.group,
             "--socket", str(world.shared_socket)], env=world.env(u), user=u.uid, group=world.gid,
            extra_groups=[world.gid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            cwd="/")
    deadline = time.monotonic() + 60
    while not world.shared_socket.exists():
        if world.shared_proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((u.base / "stderr-shared.log").read_text()[-3000:])
        time.sleep(0.05)


def _grant_traverse(names: list[str]) -> list[tuple[str, str]]:
    """The test users must reach the checkout and the interpreter: a folder on the way that others
    may not enter (a clone under /root, /root/.pyenv) gets a traverse-only ACL entry for each test
    user alone, removed with the world (per user, so parallel worlds never undo each other's)."""
    import site
    import stat
    import sysconfig

    if not shutil.which("setfacl"):
        return []
    targets = {REPO, Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix),
               Path(sysconfig.get_paths()["purelib"]), *map(Path, site.getsitepackages())}
    folders: set[Path] = set()
    for t in targets:
        folders.update(p for p in [t, *t.parents] if p.is_dir() and not p.stat().st_mode & stat.S_IXOTH)
    grants = []
    for folder in sorted(folders):
        for name in names:
            granted = subprocess.run(["setfacl", "-m", f"u:{name}:x", str(folder)], capture_output=True)
            if granted.returncode == 0:
                grants.append((str(folder), name))
    return grants


def drop_world(world: World) -> list[str]:
    """Stop every daemon, scan every user's folder for secrets, remove users and folders."""
    pids: list[int] = []
    for role in ("alice", "bob", "carol"):
        if (world.users[role].socket).exists():
            with contextlib.suppress(Exception):
                got = world.run(role, "c = own(); c.auto_start = False; c.connect(); pid = c.status().pid\n"
                                      "c.shutdown(); return pid")
                pids += [got["ok"]] if "ok" in got else []
    if world.shared_proc is not None:
        world.shared_proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            world.shared_proc.wait(30)
        if world.shared_proc.poll() is None:
            world.shared_proc.kill()
    leaks: list[str] = []
    for u in world.users.values():
        leaks += secret_scan.check(u.base)
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # userdel refuses a user whose processes still run
    for folder, name in world.acl:  # before userdel: an entry names the user by uid afterwards
        subprocess.run(["setfacl", "-x", f"u:{name}", folder], capture_output=True)
    for u in world.users.values():
        while subprocess.run(["userdel", "-r", u.name], capture_output=True).returncode == 8:  # in use
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    subprocess.run(["groupdel", world.group], capture_output=True)
    shutil.rmtree(world.root, ignore_errors=True)
    return leaks
