"""What an operator feels: the whole `preskool-dr restore` command against the runbook's
steps 4-6 typed by hand, and the start-up of `preskool-dr --help` / `check --json`
against a bare `python -c pass`, each compared in the same rounds."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from common import (
    APP_ROLE,
    TOOL,
    Lab,
    Run,
    Series,
    alternate,
    say,
    shell,
    timed,
    timed_restore,
)

from preskool_dr.core.base.ports import free_port
from preskool_dr.demo.cluster import SUPERUSER

TARGET = "bench_whole"
BY_HAND = "steps 4-6 by hand: md5sum --check; createdb; gunzip -c F | psql"
DEFAULT = "preskool-dr restore F --confirm T --target-db T (default runbook)"
SERIAL = "preskool-dr restore F ... (restore.method: serial)"
PYTHON = "python -c pass"
HELP = "preskool-dr --help"
CHECK = "preskool-dr check --json"
STARTUP_ROUNDS = 10
S3_BY_HAND = "boto3 download_file (aws s3 cp) + steps 4-6 by hand"
S3_DEFAULT = "preskool-dr restore NAME --confirm T --target-db T (only in S3)"
S3_PREFIX = "preskool-backups/"  # the runbook's backups.s3_prefix
# `aws s3 cp` of the backup and its sidecar: boto3's default managed transfer (parallel
# ranged GETs), as the AWS CLI does it
_DOWNLOAD = (
    "import sys, boto3; c = boto3.client('s3'); b, k = sys.argv[1], sys.argv[2]\n"
    "for suffix in ('', '.md5'): c.download_file(b, k + suffix, sys.argv[3] + suffix)"
)


def restore(lab: Lab, plain: Path, repeats: int, *, serial: bool = True) -> dict[str, Series]:
    """`plain` is a default `preskool-dr backup` (its .md5 sidecar beside it). Before every
    run of any variant the target is dropped (the command creates it, as the hand-typed
    steps do) and the server settles (CHECKPOINT, sync). `serial`: also the serial loader."""
    runbooks = {
        DEFAULT: lab.runbook("whole-default"),  # the repo's runbook, app commands removed
        SERIAL: lab.runbook("whole-serial", restore={"method": "serial"}),
    }
    by_hand = (
        f"md5sum --quiet --check '{plain.name}.md5' && "
        f"createdb -U {SUPERUSER} -O {APP_ROLE} {TARGET} && "
        f"gunzip -c '{plain.name}' | psql -X -q -v ON_ERROR_STOP=1 -d {TARGET} > /dev/null"
    )

    def product(name: str, state: str) -> Run:
        env = lab.env(TARGET, runbook=runbooks[name], state=state)
        argv = [TOOL, "restore", str(plain), "--confirm", TARGET, "--target-db", TARGET]
        return timed_restore(argv, env, lab, state)

    variants = {
        BY_HAND: lambda: shell(by_hand, lab.env(TARGET), cwd=plain.parent),
        DEFAULT: lambda: product(DEFAULT, "state-whole-default"),
        SERIAL: lambda: product(SERIAL, "state-whole-serial"),
    }
    if not serial:
        del variants[SERIAL]
    say(f"  whole restore: {len(variants)} variants x {repeats}, alternating")

    def before(name: str) -> None:
        lab.drop_db(TARGET)
        lab.settle()

    series = alternate(variants, repeats, before=before)
    lab.drop_db(TARGET)
    return series


def startup(lab: Lab, repeats: int = STARTUP_ROUNDS) -> dict[str, Series]:
    """Wall time to an answer. `check --json` runs its real checks on a local-only runbook
    (no S3 bucket, no database connection); its exit code is the health, not an error."""
    env = lab.env("postgres", runbook=lab.runbook("startup"), state="state-startup")
    variants = {
        PYTHON: lambda: timed([sys.executable, "-c", "pass"], env)[0],
        HELP: lambda: timed([TOOL, "--help"], env)[0],
        CHECK: lambda: timed([TOOL, "check", "--json"], env, check=False)[0],
    }
    say(f"  start-up: {len(variants)} variants x {repeats}, alternating")
    return alternate(variants, repeats)


@contextlib.contextmanager
def s3_bucket(lab: Lab, plain: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on localhost holding `plain`, its sidecar, its companion (when it
    has one) and meta where `backup` puts them; yields the AWS_* and S3_BUCKET variables that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real",
            "AWS_DEFAULT_REGION": "us-east-1",
            "S3_BUCKET": "preskool-bench",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=env["S3_BUCKET"])
        companion = plain.with_name(plain.name.removesuffix(".sql.gz") + ".dump")
        members = [plain, plain.with_name(plain.name + ".md5")]
        if companion.is_file():  # the default backup's custom-format companion travels too
            members += [companion, companion.with_name(companion.name + ".md5")]
        for member in [*members, plain.with_name(plain.name + ".meta.json")]:  # meta last
            client.upload_file(str(member), env["S3_BUCKET"], S3_PREFIX + member.name)
        yield env
    finally:
        server.stop()


def from_s3(lab: Lab, plain: Path, repeats: int) -> dict[str, Series]:
    """The backup only in S3 (moto on localhost; each variant downloads into an empty
    BACKUP_DIR of its own): `preskool-dr restore NAME` (step 3 downloads with parallel
    ranged GETs, the companion first, from which step 6's load starts at once, then the
    .sql.gz, checking as it writes; step 4 does not read it again) against
    boto3's default transfer of the backup and its sidecar, as `aws s3 cp` makes it, and
    then the same steps 4-6 by hand as `restore` compares with."""
    runbook = lab.runbook("whole-s3")
    by_hand_dir, product_dir = lab.root / "s3-by-hand", lab.root / "s3-product"
    with s3_bucket(lab, plain) as aws:
        hand_env = {**lab.env(TARGET), **aws}
        product_env = {**lab.env(TARGET, runbook=runbook, state="state-whole-s3"), **aws}
        product_env["BACKUP_DIR"] = str(product_dir)
        by_hand = (
            f'{sys.executable} -c "$DOWNLOAD" {aws["S3_BUCKET"]} '
            f"'{S3_PREFIX}{plain.name}' '{plain.name}' && "
            f"md5sum --quiet --check '{plain.name}.md5' && "
            f"createdb -U {SUPERUSER} -O {APP_ROLE} {TARGET} && "
            f"gunzip -c '{plain.name}' | psql -X -q -v ON_ERROR_STOP=1 -d {TARGET} > /dev/null"
        )
        argv = [TOOL, "restore", plain.name, "--confirm", TARGET, "--target-db", TARGET]
        variants = {
            S3_BY_HAND: lambda: shell(
                by_hand, {**hand_env, "DOWNLOAD": _DOWNLOAD}, cwd=by_hand_dir
            ),
            S3_DEFAULT: lambda: timed_restore(argv, product_env, lab, "state-whole-s3"),
        }
        say(f"  whole restore from S3: {len(variants)} variants x {repeats}, alternating")

        def before(name: str) -> None:
            for folder in (by_hand_dir, product_dir):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(mode=0o700)
            lab.drop_db(TARGET)
            lab.settle()

        series = alternate(variants, repeats, before=before)
    lab.drop_db(TARGET)
    for folder in (by_hand_dir, product_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return series
