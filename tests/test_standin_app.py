"""The stand-in app over real HTTP, against a real PostgreSQL database."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from preskool_dr.core.base.procs import run_command
from preskool_dr.demo import standin_app
from preskool_dr.demo.standin_app import (
    HEAD_REVISION,
    StandinServer,
    app_state,
    command,
    read_calls,
    start_server,
)
from tests.support.db import Database, make_database
from tests.support.leaks import PASSWORD


def get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run(action: str, state_dir: Path, *extra: str, timeout: float = 60) -> tuple[int, str, bool]:
    result = run_command(command(action, state_dir, *extra), timeout=timeout)
    return result.returncode, result.output, result.timed_out


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(tmp_path: Path, dr_env: dict[str, str]) -> Iterator[StandinServer]:
    srv = start_server(tmp_path / "app")
    try:
        yield srv
    finally:
        srv.stop()


def test_health_follows_stop_and_start(server: StandinServer) -> None:
    state = server.state_dir
    assert get(server.health_url) == (200, {"status": "ok", "db": "up"})
    assert (state / "app.pid").read_text().strip() == str(server.proc.pid)

    assert run("stop", state)[0] == 0
    assert app_state(state) == "stopped"
    status, body = get(server.health_url)
    assert status == 503
    assert body["status"] == "stopped"

    code, output, _ = run("start", state)
    assert code == 0, output
    assert get(server.health_url)[0] == 200
    assert read_calls(state) == ["stop", "start"]


def test_stopping_the_server_closes_the_port_and_removes_its_files(
    tmp_path: Path, dr_env: dict[str, str]
) -> None:
    srv = start_server(tmp_path / "app")
    assert port_open(srv.port)
    srv.stop()
    assert srv.proc.returncode is not None
    assert not port_open(srv.port)
    assert not (srv.state_dir / "app.pid").exists()
    assert not (srv.state_dir / "app.port").exists()


def test_unknown_path_is_404(server: StandinServer) -> None:
    assert get(server.url + "/nope")[0] == 404


def test_health_reports_a_missing_database_or_table(
    server: StandinServer, pg_cluster: object, database: Database
) -> None:
    status, body = get(server.health_url + "?db=no_such_db")
    assert status == 503
    assert body["db"] == "down"
    assert "no_such_db" in body["reason"]

    empty = make_database(database.cluster, seeded=False)
    status, body = get(f"{server.health_url}?db={empty.name}")
    assert status == 503
    assert "students" in body["reason"]

    assert get(f"{server.health_url}?db={database.name}")[0] == 200


def test_health_with_a_wrong_password_is_503_without_the_password(
    tmp_path: Path, dr_env: dict[str, str]
) -> None:
    srv = start_server(tmp_path / "app", env={"PGPASSWORD": "wrong-password"})
    try:
        status, body = get(srv.health_url)
    finally:
        srv.stop()
    assert status == 503
    assert "password authentication failed" in body["reason"]
    assert "wrong-password" not in json.dumps(body)
    assert PASSWORD not in json.dumps(body)


def test_migrate_is_idempotent_and_uses_the_engine_target(
    tmp_path: Path, database: Database, dr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_database(database.cluster)
    monkeypatch.setenv("PRESKOOL_DR_TARGET_DB", other.name)
    state = tmp_path / "app"

    code, output, _ = run("migrate", state)
    assert code == 0, output
    assert f"<base> -> {HEAD_REVISION}" in output
    code, output, _ = run("migrate", state)
    assert code == 0, output
    assert "already at head" in output

    with other.connect() as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert rows == [(HEAD_REVISION,)]
    with database.connect() as conn:
        missing = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
    assert missing == (None,)
    assert read_calls(state) == ["migrate", "migrate"]


def test_migrate_against_a_missing_database_fails_with_a_message(
    tmp_path: Path, dr_env: dict[str, str]
) -> None:
    code, output, _ = run("migrate", tmp_path / "app", "--db", "no_such_db")
    assert code == 1
    assert "migration of no_such_db failed" in output
    assert PASSWORD not in output


def test_fail_leaves_the_state_alone(tmp_path: Path) -> None:
    state = tmp_path / "app"
    code, output, _ = run("stop", state, "--fail")
    assert code == 1
    assert "stop failed" in output
    assert app_state(state) == "started"
    assert read_calls(state) == ["stop"]


def test_fail_times_fails_only_the_first_calls(tmp_path: Path) -> None:
    state = tmp_path / "app"
    assert run("stop", state, "--fail-times", "2")[0] == 1
    assert run("stop", state, "--fail-times", "2")[0] == 1
    assert app_state(state) == "started"
    assert run("stop", state, "--fail-times", "2")[0] == 0
    assert app_state(state) == "stopped"


def test_spam_prints_the_lines_then_does_the_work(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_command(command("stop", tmp_path / "app", "--spam", "500"), on_line=lines.append)
    assert result.ok
    assert sum(line.startswith("stop: output line") for line in lines) == 500
    assert lines[-1].startswith("Stopping")
    assert app_state(tmp_path / "app") == "stopped"


def test_hang_is_stopped_by_the_timeout_before_acting(tmp_path: Path) -> None:
    state = tmp_path / "app"
    code, _, timed_out = run("stop", state, "--hang", "120", timeout=1)
    assert timed_out
    assert code != 0
    assert read_calls(state) == ["stop"]
    assert app_state(state) == "started"


def test_server_that_cannot_start_reports_why(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_command(command("serve", tmp_path / "app", "--port", str(port)), timeout=60)
    assert result.returncode != 0
    assert "Address already in use" in result.output


def test_command_builds_argv_for_the_runbook(tmp_path: Path) -> None:
    argv = command("migrate", tmp_path, "--spam", "3")
    assert argv[:4] == [sys.executable, "-m", "preskool_dr.demo.standin_app", "migrate"]
    assert argv[-2:] == ["--spam", "3"]
    with pytest.raises(ValueError):
        command("explode", tmp_path)
    assert standin_app.main(["start", "--state-dir", str(tmp_path / "x")]) == 0
