"""`preskool-dr demo`: the sandbox builder in-process, --keep/--stop, and the real command
in tmux (TUI, q, SIGHUP, Ctrl-C), each time checking that nothing it started survives."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest

from preskool_dr.cli.main import main
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.procs import run_command
from preskool_dr.core.drill.signing import trust_root
from preskool_dr.demo.backups import backup_plan
from preskool_dr.demo.sandbox import BUCKET, DATABASE, Sandbox, environment
from tests.support.age_keys import need_age
from tests.support.cli import run_cli
from tests.support.terminal import Tmux, alive, children, wait_gone

REPO = Path(__file__).resolve().parent.parent
PROGRAM = REPO / ".venv" / "bin" / "preskool-dr"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(f"{entry.name}: {cmdline}")
    return found


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def postmaster_port(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[3])


def assert_all_gone(data_dir: Path, pg_pid: int, sandbox_dir: Path) -> None:
    assert not alive(pg_pid), f"postmaster {pg_pid} still runs"
    assert not (data_dir / "postmaster.pid").exists()
    assert not data_dir.parent.exists()
    assert not sandbox_dir.exists()
    assert processes_mentioning(str(data_dir.parent)) == []
    assert processes_mentioning(str(sandbox_dir)) == []


# ---------------------------------------------------------------- the schedule


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 2, 20, 14, 30, tzinfo=UTC),  # a Friday afternoon
        datetime(2026, 2, 22, 0, 30, tzinfo=UTC),  # Sunday before the weekly and the daily
        datetime(2026, 2, 22, 1, 0, tzinfo=UTC),  # exactly the weekly's time
        datetime(2026, 2, 23, 2, 0, 1, tzinfo=UTC),  # just after Monday's daily
    ],
)
def test_backup_plan_follows_the_runbook_schedule(now: datetime) -> None:
    plan = backup_plan(now)
    times = [b.at for b in plan]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert all(t <= now for t in times)
    assert [b.kind for b in plan].count("daily") == 2
    assert [b.kind for b in plan].count("pre-deploy") == 1
    weeklies = [b.at for b in plan if b.kind == "weekly"]
    assert all(t.weekday() == 6 and t.hour == 1 for t in weeklies)
    latest = plan[-1]
    assert latest.kind == "daily"
    assert latest.at.hour == 2
    assert now - latest.at < timedelta(hours=24)  # within the RPO
    assert timedelta(0) < latest.at - weeklies[1] < timedelta(days=7)
    assert weeklies[1] - weeklies[0] > timedelta(days=30)  # past local retention


# ---------------------------------------------------------------- the sandbox in-process


# The tests on the sandbox share one worker (--dist loadgroup), so it is built once.
SANDBOX = pytest.mark.xdist_group("demo_sandbox")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox.create(tmp_path_factory.mktemp("demo"))
    try:
        box.start(scale=0.05)
        yield box
    finally:
        box.stop()


@SANDBOX
def test_sandbox_database_is_seeded(sandbox: Sandbox) -> None:
    assert sandbox.cluster is not None
    conninfo = sandbox.cluster.conninfo(DATABASE, user="preskool")
    with psycopg.connect(conninfo, password=sandbox.password) as conn:
        students = conn.execute("SELECT count(*) FROM students").fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
    assert students is not None and students[0] > 0
    assert owner == ("preskool",)


@SANDBOX
def test_sandbox_backups_are_local_and_in_s3_with_the_weekly_in_glacier(
    sandbox: Sandbox,
) -> None:
    by_name = {r.name: r for r in sandbox.records}
    assert len(by_name) == 5
    kinds = sorted(r.kind for r in sandbox.records)
    assert kinds == ["daily", "daily", "pre-deploy", "weekly", "weekly"]
    newest = sandbox.records[0]
    assert newest.kind == "daily"
    assert newest.locations == ["local", "s3"]

    local = sorted(p.name for p in sandbox.backup_dir.glob("preskool-backup-*.sql.gz*"))
    local = [n for n in local if n.endswith((".sql.gz", ".sql.gz.age"))]
    assert len(local) == 4  # the old weekly is past its 30 days on disk
    # the previous daily is encrypted to the sandbox's age key
    encrypted = [r for r in sandbox.records if r.name.endswith(".sql.gz.age")]
    assert [(r.kind, r.locations) for r in encrypted] == [("daily", ["local", "s3"])]
    assert encrypted[0] is sandbox.records[2]  # after the newest daily and the pre-deploy
    assert [n for n in local if n.endswith(".age")] == [encrypted[0].name]
    for name in local:
        md5_line = (sandbox.backup_dir / f"{name}.md5").read_text()
        assert re.fullmatch(rf"[0-9a-f]{{32}}  {re.escape(name)}\n", md5_line)
    result = run_command(
        ["md5sum", "--check", *[f"{n}.md5" for n in local]], cwd=sandbox.backup_dir
    )
    assert result.ok, result.output

    with environment(sandbox.full_environ()):
        s3 = boto3.client("s3")
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="preskool-backups/")["Contents"]
    classes = {
        obj["Key"].removeprefix("preskool-backups/"): obj.get("StorageClass", "STANDARD")
        for obj in listing
        if obj["Key"].endswith((".sql.gz", ".sql.gz.age"))
    }
    expected = {r.name: ("GLACIER" if r.kind == "weekly" else "STANDARD") for r in sandbox.records}
    pre_deploy = [r.name for r in sandbox.records if r.kind == "pre-deploy"]
    for name in pre_deploy:
        del expected[name]
    assert classes == expected
    oldest = sandbox.records[-1]
    assert oldest.kind == "weekly"
    assert oldest.locations == ["s3"]
    assert oldest.needs_restore


@SANDBOX
def test_sandbox_encrypted_backup_decrypts_by_hand_and_restores_with_the_demo_identity(
    sandbox: Sandbox,
) -> None:
    need_age()
    (record,) = [r for r in sandbox.records if r.name.endswith(".age")]
    path = sandbox.backup_dir / record.name
    assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert oct(sandbox.age_identity.stat().st_mode & 0o777) == "0o600"
    clear = subprocess.run(
        ["age", "-d", "-i", str(sandbox.age_identity), str(path)], check=True, capture_output=True
    ).stdout
    assert b"PostgreSQL database dump" in gzip.decompress(clear)[:4096]
    # what the TUI gets: the sandbox's environment names the identity
    env = sandbox.full_environ()
    assert env["PRESKOOL_DR_AGE_IDENTITY"] == str(sandbox.age_identity)
    result = run_cli("restore-test", record.name, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    without = {k: v for k, v in env.items() if k != "PRESKOOL_DR_AGE_IDENTITY"}
    result = run_cli("restore-test", record.name, env=without)
    assert result.returncode == 1 and "no identity was given" in result.stdout + result.stderr


@SANDBOX
def test_sandbox_backups_hold_different_data(sandbox: Sandbox) -> None:
    attendance = [r.meta.row_counts["attendance"] for r in reversed(sandbox.records) if r.meta]
    assert len(attendance) == 5
    assert attendance == sorted(attendance)
    assert len(set(attendance)) == 5


@SANDBOX
def test_sandbox_runbook_drives_the_stand_in_app(sandbox: Sandbox) -> None:
    config = load_config(sandbox.runbook, env=sandbox.env)
    assert config.database.port == sandbox.cluster.port  # type: ignore[union-attr]
    assert config.backups.dir == sandbox.backup_dir.resolve()
    assert config.backups.s3_bucket == BUCKET
    assert config.app.health_url == sandbox.health_url
    assert config.drill.target_db == "preskool_drill"
    # The drill log's trust root is named (drill.allowed_signers): its drill verifies.
    assert config.drill.allowed_signers == sandbox.allowed_signers.resolve()
    assert trust_root(config.drill.allowed_signers, "the demo").path == config.drill.allowed_signers
    with urllib.request.urlopen(sandbox.health_url, timeout=30) as response:
        assert response.status == 200
    with environment(sandbox.full_environ()):
        stop = run_command(config.app.stop, cwd=config.app.cwd, timeout=60)
        assert stop.ok, stop.output
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(sandbox.health_url, timeout=30)
        assert info.value.code == 503
        migrate = run_command(
            config.app.migrate,
            cwd=config.app.cwd,
            timeout=60,
            env={"PRESKOOL_DR_TARGET_DB": DATABASE},
        )
        assert migrate.ok, migrate.output
        start = run_command(config.app.start, cwd=config.app.cwd, timeout=60)
        assert start.ok, start.output
    with urllib.request.urlopen(sandbox.health_url, timeout=30) as response:
        assert response.status == 200


@SANDBOX
def test_sandbox_writes_no_secret_to_its_files(sandbox: Sandbox) -> None:
    for path in sandbox.dir.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            data = path.read_bytes()
            assert sandbox.password.encode() not in data, path
            assert sandbox.aws_secret.encode() not in data, path
    assert sandbox.password not in (sandbox.dir / "sandbox.json").read_text()


@SANDBOX
def test_sandbox_environment_hides_the_operators_own_settings(sandbox: Sandbox) -> None:
    env = sandbox.full_environ(
        {"PATH": "/bin", "PGSERVICE": "prod", "AWS_PROFILE": "prod", "S3_BUCKET": "prod-bucket"}
    )
    assert env["PATH"] == "/bin"
    assert "PGSERVICE" not in env
    assert "AWS_PROFILE" not in env
    assert env["S3_BUCKET"] == BUCKET


@SANDBOX
def test_sandbox_stop_leaves_nothing_running(sandbox: Sandbox) -> None:
    """Runs last in this module: it stops the shared sandbox."""
    assert sandbox.cluster is not None and sandbox.app is not None
    data_dir = sandbox.cluster.data_dir
    pg_pid, pg_port = postmaster_pid(data_dir), postmaster_port(data_dir)
    s3_port, app_port = sandbox.s3_port, sandbox.app.port
    assert s3_port is not None
    assert alive(pg_pid) and port_open(s3_port) and port_open(app_port)
    running = sandbox.running()  # what --keep would list as left running
    assert [part.split(" ")[1] for part in running] == ["private", "S3", "stand-in", "sandbox"]
    assert str(data_dir) in running[0] and str(sandbox.dir) in running[3]

    assert sandbox.stop() == []

    # what the demo prints when it ends: each part stopped or removed, by name
    stopped = "\n".join(sandbox.removed)
    assert f"stopped the stand-in app (http://127.0.0.1:{app_port}" in stopped
    assert f"stopped the S3 endpoint (moto, http://127.0.0.1:{s3_port}" in stopped
    assert f"stopped the private PostgreSQL (127.0.0.1:{pg_port})" in stopped
    assert f"removed {data_dir.parent} (its data directory)" in stopped
    assert f"removed the temporary folder {sandbox.dir}" in stopped
    assert len(sandbox.removed) == 4

    assert_all_gone(data_dir, pg_pid, sandbox.dir)
    pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
    assert subprocess.run([pg_ctl, "status", "-D", str(data_dir)], check=False).returncode != 0
    assert not port_open(s3_port)
    assert not port_open(app_port)
    assert sandbox.stop() == []  # idempotent
    assert len(sandbox.removed) == 4  # nothing more to stop


# ---------------------------------------------------------------- the command


def test_demo_option_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--no-tui"]) == 2
    assert "--keep" in capsys.readouterr().err
    assert main(["demo", "--stop", str(tmp_path)]) == 2
    assert "not a demo sandbox" in capsys.readouterr().err
    assert main(["demo", "--scale", "0"]) == 2


@pytest.mark.slow
def test_demo_keep_then_stop(tmp_path: Path) -> None:
    kept = subprocess.run(
        [str(PROGRAM), "demo", "--keep", "--no-tui", "--scale", "0.05"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert kept.returncode == 0, kept.stderr
    folder = Path(re.search(r"demo --stop (\S+)", kept.stdout).group(1))  # type: ignore[union-attr]
    left = kept.stdout.split("Left running (--keep), until you stop it:\n", 1)[1].split("\n\n")[0]
    assert [line.split(" ")[4] for line in left.splitlines()] == [
        "private",
        "S3",
        "stand-in",
        "sandbox",
    ]
    assert "[STOP]" not in kept.stdout + kept.stderr  # nothing was stopped
    manifest = json.loads((folder / "sandbox.json").read_text())
    data_dir = Path(manifest["cluster"]["data_dir"])
    pg_pid = postmaster_pid(data_dir)
    assert alive(pg_pid)
    assert alive(manifest["pids"]["s3"]) and alive(manifest["pids"]["app"])

    # what --keep printed is enough to use the sandbox from another shell
    exports = dict(re.findall(r"^  export (\w+)=(\S+)$", kept.stdout, re.MULTILINE))
    listing = subprocess.run(
        [str(PROGRAM), "list", "--json"],
        env={"PATH": os.environ["PATH"], **exports},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert len(json.loads(listing.stdout)) == 5

    stopped = subprocess.run(
        [str(PROGRAM), "demo", "--stop", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "[STOP]  stopped the private PostgreSQL" in stopped.stdout
    assert "[STOP]  stopped the S3 endpoint (moto, pid " in stopped.stdout
    assert "[STOP]  stopped the stand-in app" in stopped.stdout
    assert f"[STOP]  removed the temporary folder {folder}" in stopped.stdout
    assert_all_gone(data_dir, pg_pid, folder)
    assert not alive(manifest["pids"]["s3"]) and not alive(manifest["pids"]["app"])


# ---------------------------------------------------------------- in a terminal (tmux)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    sessions: list[Tmux] = []

    def start(command: str) -> Tmux:
        sessions.append(Tmux(command, tmp_path))
        return sessions[-1]

    yield start
    for session in sessions:
        session.kill()


def sandbox_paths(screen: str) -> tuple[Path, Path]:
    data_dir = re.search(r"data in (/\S+/data)", screen)
    folder = re.search(r"Sandbox folder: (/\S+)", screen)
    assert data_dir and folder, screen
    return Path(data_dir.group(1)), Path(folder.group(1))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_opens_the_tui_and_q_removes_everything(tmux: Callable[[str], Tmux]) -> None:
    session = tmux(f"{PROGRAM} demo; echo DEMO-EXIT=$?; sleep 600")
    screen = session.wait_for("Press Enter to open the TUI", seconds=600)
    data_dir, folder = sandbox_paths(screen)
    pg_pid = postmaster_pid(data_dir)
    assert alive(pg_pid)

    session.keys("Enter")
    session.wait_for("Identify backup", "Recreate database", seconds=120)
    session.keys("Escape")  # the incident-time prompt: use the time shown
    time.sleep(1)
    session.keys("q")
    deadline = time.monotonic() + 120
    while "DEMO-EXIT=" not in (screen := session.screen()):
        if "y quits" in screen:
            session.keys("y")
        assert time.monotonic() < deadline, screen
        time.sleep(1)
    code = re.search(r"DEMO-EXIT=(\d+)", screen)
    assert code and code.group(1) in ("0", "130"), screen
    assert "Traceback" not in screen
    # what it stopped and removed, once the TUI has given the terminal back
    for line in ("stopped the stand-in app", "stopped the S3 endpoint", "stopped the private PostgreSQL",
                 f"removed the temporary folder {folder}"):  # fmt: skip
        assert f"[STOP]  {line}" in screen, screen
    # the shell's last lines say what ran and that the sandbox is gone (not "Press Enter")
    shell = [line for line in screen.splitlines() if line.strip()]
    at = next(i for i, line in enumerate(shell) if line.startswith("DEMO-EXIT="))
    assert shell[at - 2 : at] == [
        "preskool-dr: no run was started.",
        "  sandbox stopped and removed: its PostgreSQL, S3, app and backups are gone",
    ], screen
    assert_all_gone(data_dir, pg_pid, folder)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_closed_terminal_removes_everything(tmux: Callable[[str], Tmux]) -> None:
    session = tmux(f"exec {PROGRAM} demo --scale 0.05")
    demo_pid = session.pane_pid
    screen = session.wait_for("Press Enter to open the TUI", seconds=600)
    data_dir, folder = sandbox_paths(screen)
    pg_pid = postmaster_pid(data_dir)
    session.keys("Enter")
    session.wait_for("Identify backup", "Recreate database", seconds=120)

    session.kill()  # the terminal goes away: SIGHUP

    wait_gone(demo_pid)
    assert_all_gone(data_dir, pg_pid, folder)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_sigterm_in_the_tui_restores_the_terminal_and_removes_everything(
    tmux: Callable[[str], Tmux],
) -> None:
    session = tmux(f"{PROGRAM} demo --scale 0.05; echo DEMO-EXIT=$?; sleep 600")
    screen = session.wait_for("Press Enter to open the TUI", seconds=600)
    data_dir, folder = sandbox_paths(screen)
    pg_pid = postmaster_pid(data_dir)
    (demo_pid,) = children(session.pane_pid)  # the shell's one child: preskool-dr
    session.keys("Enter")
    session.wait_for("Identify backup", "Recreate database", seconds=120)

    os.kill(demo_pid, signal.SIGTERM)

    screen = session.wait_for("DEMO-EXIT=", seconds=120)
    assert f"DEMO-EXIT={128 + signal.SIGTERM}" in screen, screen
    assert "stopped by SIGTERM" in screen
    assert "Recreate database" not in screen  # the TUI's screen is gone, the shell's is back
    assert_all_gone(data_dir, pg_pid, folder)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_ctrl_c_during_setup_removes_everything(tmux: Callable[[str], Tmux]) -> None:
    session = tmux(f"{PROGRAM} demo; echo DEMO-EXIT=$?; sleep 600")
    screen = session.wait_for("Seeding", seconds=600)
    data_dir, folder = sandbox_paths(screen)
    pg_pid = postmaster_pid(data_dir)

    session.keys("C-c")

    screen = session.wait_for("DEMO-EXIT=", seconds=120)
    assert "DEMO-EXIT=130" in screen, screen
    assert_all_gone(data_dir, pg_pid, folder)


@pytest.mark.slow
def test_demo_sigterm_during_setup_removes_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(PROGRAM), "demo", "--scale", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Seeding" in line:
                break
        data_dir, folder = sandbox_paths("".join(lines))
        pg_pid = postmaster_pid(data_dir)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "stopped by SIGTERM" in rest
    # it says what it stopped and removed (the app and S3 may not have started yet)
    assert "[STOP]  stopped the private PostgreSQL (127.0.0.1:" in rest
    assert f"removed {data_dir.parent} (its data directory)" in rest
    assert f"[STOP]  removed the temporary folder {folder}" in rest
    assert_all_gone(data_dir, pg_pid, folder)
