"""Drill log trust: a cut or replaced log is caught, the trust root is explicit, escapes shown.

Guarantee: every drill records its drill-log entry (sha256, line, log) in its run journal,
so `drill-log verify` reports the log INVALID (exit 1) when an entry a journal recorded is
missing: the last lines deleted or the file emptied, naming the run and the entry;
`verify --expect-head SHA` fails unless the log still ends at the head noted elsewhere;
`check` reports the log's entry count and head (also in --json and --prometheus) and goes
CRITICAL, naming the drill log, when it has fewer lines or another history than the last
check saw, or lost a journal's entry. Signatures are checked only against a trust root
named explicitly (runbook `drill.allowed_signers` or `--allowed-signers`): a file next to
the log is not trusted on its own, so a re-signed log with a planted allowed_signers is
reported "signatures NOT CHECKED" with the signing key's fingerprint, never VALID; an
allowed_signers file writable by group/others or owned by another user is refused. Control
characters in the log's fields (ESC, BEL, C1) are printed escaped by show, verify and export.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from preskool_dr.core.drill.append import append_entry
from preskool_dr.core.drill.entry import canonical_bytes, sha256_hex
from preskool_dr.core.drill.signing import SigningKey, key_from_file, sign
from preskool_dr.core.restore.journal import Journal
from preskool_dr.demo import standin_app
from tests.support.checks import assert_says, the_error
from tests.support.cli import cli_argv, run
from tests.support.runbook import write_runbook
from tests.support.signing import DRILL_FIELDS, make_signing_key
from tests.support.site import Site

PROM_SAMPLE = re.compile(r"^(preskool_dr_[a-z0-9_]+)(\{[^}]*\})? (-?[0-9.e+]+)$")


@pytest.fixture
def drill_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The fault site with a drill section (its own target database, the stand-in app's
    migrate and health URL) and alice's signing key; allowed_signers (alice) sits next to
    the runbook, not named by it (see `name_trust_root`)."""
    for var in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    make_signing_key(site.root, "alice")
    write_drill_runbook(site)
    return site


def write_drill_runbook(site: Site, **drill: Any) -> None:
    drill_db = f"{site.db.name}_drill"
    app = {
        "migrate": standin_app.command("migrate", site.app_dir),
        "health_url": f"{site.server.health_url}?db={drill_db}",
        "health_wait_seconds": 20,
    }
    write_runbook(site.root, app=site.app, drill={"target_db": drill_db, "app": app, **drill})


def name_trust_root(site: Site) -> None:
    """`drill.allowed_signers: allowed_signers` in the runbook: relative to its folder."""
    write_drill_runbook(site, allowed_signers="allowed_signers")


def trusted(site: Site) -> tuple[str, str]:
    return ("--allowed-signers", str(site.root / "allowed_signers"))


def alice_key(site: Site) -> SigningKey:
    return key_from_file(site.root / "alice_ed25519")


def drill(site: Site) -> subprocess.CompletedProcess[str]:
    """A real headless drill, signed by alice, into the default drill log."""
    target = site.config().drill.target_db
    result = site.cli(
        "restore", "latest", "--drill", "--confirm", target, "--drop-after",
        "--performed-by", "alice", "--sign-key", str(site.root / "alice_ed25519"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def default_log(site: Site) -> Path:
    return site.state_dir / "drill-log.jsonl"


def run_of(site: Site, sha: str) -> str:
    """The run whose journal recorded the entry `sha`."""
    (run_id,) = [s.run_id for s in Journal(site.state_dir).runs() if s.drill_log_entry == sha]
    return run_id


def cut_last_line(log: Path) -> bytes:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    return lines[-1].rstrip(b"\n")


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def fault_log(
    site: Site, count: int, key: SigningKey | None, signer: str = "alice", **over: Any
) -> Path:
    """`count` entries appended to the site's default drill log by the core (no journal)."""
    log = default_log(site)
    for i in range(count):
        append_entry(log, {**DRILL_FIELDS, "rto_seconds": 4000 + i, **over}, signer=signer, key=key)
    return log


def check_json(site: Site, prom: Path) -> tuple[int, dict[str, Any], dict[str, float]]:
    result = site.cli("check", "--json", "--prometheus", str(prom))
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    (drill_log,) = [c for c in data["checks"] if c["name"] == "drill_log"]
    values = {}
    for line in prom.read_text().splitlines():
        match = PROM_SAMPLE.match(line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return result.returncode, drill_log, values


# ---------------------------------------------------------------- a cut or emptied log


@pytest.mark.slow
def test_cut_tail_is_invalid_naming_the_missing_runs_entry(drill_site: Site) -> None:
    """Two real drills, then the last line of the drill log deleted: verify, VALID before
    the cut, is INVALID (exit 1) after it, naming the second drill's run and entry."""
    site = drill_site
    site.backup()
    drill(site)
    drill(site)
    log = default_log(site)
    whole = site.cli("drill-log", "verify", *trusted(site))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "VALID: chain intact" in whole.stdout

    last = cut_last_line(log)
    sha = sha256_hex(last)
    cut = site.cli("drill-log", "verify", *trusted(site))
    assert cut.returncode == 1, cut.stdout + cut.stderr
    (verdict,) = [line for line in cut.stdout.splitlines() if line.startswith("INVALID")]
    assert_says(verdict, "line 2 (missing)", f"run {run_of(site, sha)}", sha[:12])


@pytest.mark.slow
def test_emptied_log_is_invalid(drill_site: Site) -> None:
    """A drill, then the drill log emptied (truncated to 0 bytes): verify is INVALID, not
    "0 drills, valid", and names the run whose entry is gone."""
    site = drill_site
    site.backup()
    drill(site)
    log = default_log(site)
    sha = sha256_hex(log.read_bytes().rstrip(b"\n"))
    log.write_bytes(b"")
    result = site.cli("drill-log", "verify", *trusted(site))
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(result.stdout, "INVALID: first bad line 1 (missing)", run_of(site, sha), sha[:12])


def test_expect_head_fails_on_another_head(
    drill_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify --expect-head SHA` (the head noted somewhere else): exit 0 when the log ends
    there; exit 1 when that line is no longer last (the log grew), when the log was cut
    back past it, and when SHA is in no line at all. No journal is involved here."""
    site = drill_site
    log = fault_log(site, 3, alice_key(site))
    heads = [sha256_hex(line) for line in log.read_bytes().splitlines()]
    verify = ("drill-log", "verify", *trusted(site), "--drill-log", str(log), "--expect-head")
    ok = site.cli(*verify, heads[2])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"head {heads[2]}" in ok.stdout

    grown = site.cli(*verify, heads[1][:16])
    assert grown.returncode == 1
    assert_says(grown.stdout, "(head)", "is line 2, but 1 more line(s) follow it")

    cut_last_line(log)
    cut = site.cli(*verify, heads[2])
    assert cut.returncode == 1
    assert_says(cut.stdout, "(head)", f"expected head {heads[2][:12]} is not in the log")

    unknown = site.cli(*verify, "ab" * 32)
    assert unknown.returncode == 1 and "is not in the log" in unknown.stdout


# ---------------------------------------------------------------- check


@pytest.mark.slow
def test_check_after_a_cut_is_critical_naming_the_drill_log(
    drill_site: Site, tmp_path: Path
) -> None:
    """`check` after two drills reports the drill log (2 entries, its head) in --json and
    --prometheus; after its last line is deleted, CRITICAL naming the drill log, the count
    and head it has now and had before, and the run whose entry is gone."""
    site = drill_site
    site.backup()
    drill(site)
    drill(site)
    log = default_log(site)
    prom = tmp_path / "preskool_dr.prom"
    _, before, values = check_json(site, prom)
    head = sha256_hex(log.read_bytes().splitlines()[-1])
    assert before["status"] == "OK" and before["value"] == 2
    assert before["details"] == {"entries": 2, "head_sha256": head}
    assert values["preskool_dr_drill_log_entries"] == 2
    assert values[f'preskool_dr_drill_log_head_info{{head_sha256="{head}"}}'] == 1
    assert (site.state_dir / "drill-log-seen.json").stat().st_mode & 0o777 == 0o600

    cut_last_line(log)
    code, after, values = check_json(site, prom)
    assert code == 2
    assert after["status"] == "CRITICAL" and after["value"] == 1
    assert_says(
        after["summary"],
        f"Drill log cut or rewritten: drill log {log}: 1 entries",
        f"check saw 2 entries (head {head[:12]})",
        f"runs {run_of(site, head)}",
    )
    assert values["preskool_dr_drill_log_entries"] == 1
    assert values['preskool_dr_check_status{check="drill_log"}'] == 2
    nagios = site.cli("check")
    assert nagios.returncode == 2
    assert nagios.stdout.startswith("PRESKOOL_DR CRITICAL - Drill log cut or rewritten")


@pytest.mark.slow
def test_check_notices_a_replaced_history_without_journals(
    drill_site: Site, tmp_path: Path
) -> None:
    """Entries no journal recorded: check remembers the count and head it saw, and a log
    rewritten to as many lines with another history (or cut) is CRITICAL until it is whole
    again; the remembered mark is not moved by the bad log."""
    site = drill_site
    site.backup()  # a fresh backup: the other checks raise nothing critical
    log = fault_log(site, 3, alice_key(site))
    seen = site.cli("check")
    assert seen.returncode in (0, 1) and "OK       drill_log: drill log" in seen.stdout
    original = log.read_bytes()
    log.unlink()
    fault_log(site, 3, alice_key(site), backup="preskool-backup-20260101_020000.sql.gz")
    for _ in range(2):  # still CRITICAL on the next run: the mark was kept
        rewritten = site.cli("check")
        assert rewritten.returncode == 2, rewritten.stdout
        assert "CRITICAL drill_log: Drill log cut or rewritten" in rewritten.stdout
    log.write_bytes(original)
    assert "OK       drill_log: drill log" in site.cli("check").stdout


# ---------------------------------------------------------------- the trust root


def test_group_writable_or_foreign_allowed_signers_is_refused(
    drill_site: Site, tmp_path: Path
) -> None:
    """An allowed_signers file writable by group (0664), and one owned by another non-root
    user, is refused (exit 2) whether named by --allowed-signers or by the runbook (a path
    relative to the runbook's folder); at 0644, owned by us, it is used and verify prints
    alice's key fingerprint."""
    site = drill_site
    log = fault_log(site, 1, alice_key(site))
    allowed = site.root / "allowed_signers"
    name_trust_root(site)
    allowed.chmod(0o664)
    by_flag = site.cli("drill-log", "verify", "--drill-log", str(log), "--allowed-signers",
                       str(allowed))  # fmt: skip
    assert by_flag.returncode == 2
    assert_says(the_error(by_flag), str(allowed), "writable by group or others (mode 0664)")
    by_runbook = site.cli("drill-log", "verify", "--drill-log", str(log))
    assert by_runbook.returncode == 2
    assert_says(the_error(by_runbook), "from drill.allowed_signers in", "mode 0664")

    allowed.chmod(0o644)
    valid = site.cli("drill-log", "verify", "--drill-log", str(log))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert f"Allowed signers: {allowed} (from drill.allowed_signers in {site.runbook})" in (
        valid.stdout
    )
    assert f"alice  {fingerprint(site.root / 'alice_ed25519.pub')}  trusted" in valid.stdout
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    os.chown(allowed, 65534, 65534)  # nobody
    foreign = site.cli("drill-log", "verify", "--drill-log", str(log))
    assert foreign.returncode == 2
    assert_says(the_error(foreign), "uid 65534", "neither you nor root")


def test_planted_allowed_signers_next_to_the_log_is_not_trusted(
    drill_site: Site, tmp_path: Path
) -> None:
    """Mallory edits a drill entry (a better RTO), re-signs it with her own key as "alice"
    and writes an allowed_signers next to the log that names her key alice. With no trust
    root named, verify does not say VALID: signatures NOT CHECKED (exit 2), her key's
    fingerprint shown; with alice's allowed_signers named, INVALID."""
    site = drill_site
    log = fault_log(site, 1, alice_key(site))
    mallory, planted = make_signing_key(log.parent, "alice")  # "alice", mallory's key
    entry = json.loads(log.read_bytes())
    entry["rto_seconds"] = 60
    entry["signature"] = sign(canonical_bytes(entry), key_from_file(mallory))
    log.write_bytes(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
    assert planted == log.parent / "allowed_signers"
    (tmp_path / "plain").mkdir()
    runbook_without_root = write_runbook(tmp_path / "plain", app=site.app)
    unchecked = run(cli_argv("drill-log", "verify", runbook=runbook_without_root), site.env())
    assert unchecked.returncode == 2, unchecked.stdout + unchecked.stderr
    assert not [line for line in unchecked.stdout.splitlines() if line.startswith("VALID")]
    assert_says(unchecked.stdout, "Signatures not checked: no trust root",
                "CHAIN INTACT; signatures NOT CHECKED", f"{fingerprint(Path(f'{mallory}.pub'))}  not checked")  # fmt: skip
    assert_says(unchecked.stderr, "--allowed-signers FILE", "drill.allowed_signers",
                "is no longer used on its own")  # fmt: skip

    checked = site.cli("drill-log", "verify", *trusted(site))
    assert checked.returncode == 1
    assert_says(checked.stdout, "INVALID: first bad line 1 (untrusted)", "NOT trusted")


# ---------------------------------------------------------------- terminal escapes


def test_control_characters_in_fields_are_printed_escaped(drill_site: Site, tmp_path: Path) -> None:
    """An entry whose fields hold `\\x1b[2J` (clear screen), `\\x1b]0;...\\x07` (set the
    window title) and a C1 CSI (`\\x9b`): show, verify and export print them as visible
    escapes, never the raw bytes."""
    site = drill_site
    log = fault_log(
        site,
        1,
        None,
        performed_by="\x1b[2Jalice",
        backup="\x1b]0;pwned\x07evil.sql.gz",
        result="pass\x9b2J",
        signer="\x1b[2Jmallory",
    )
    outputs = {
        action: site.cli("drill-log", action, "--drill-log", str(log))
        for action in ("show", "verify", "export")
    }
    for action, result in outputs.items():
        assert "Traceback" not in result.stderr, result.stderr
        for raw in ("\x1b", "\x07", "\x9b"):
            assert raw not in result.stdout + result.stderr, (action, result.stdout)
    assert_says(outputs["show"].stdout, "by \\x1b[2Jalice", "backup \\x1b]0;pwned\\x07evil",
                "pass\\x9b2J")  # fmt: skip
    assert_says(outputs["verify"].stdout, "UNSIGNED (\\x1b[2Jmallory never signed it)")
    assert_says(outputs["export"].stdout, "| \\x1b[2Jalice | \\x1b]0;pwned\\x07evil.sql.gz |")
