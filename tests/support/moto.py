"""moto's own control API over HTTP: restore transitions and credential checks."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def moto_api(path: str, body: bytes) -> None:
    """Drive moto's own control API (state transitions, auth) over HTTP."""
    request = urllib.request.Request(
        os.environ["AWS_ENDPOINT_URL"] + path,
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as response:
        response.read()


@contextmanager
def restores_stay_in_progress_briefly() -> Iterator[None]:
    """Moto finishes restores at once; with a manual transition the first HEAD after the
    request still reports `ongoing-request="true"` (later reads move it to restored)."""
    model = {"model_name": "s3::keyrestore"}
    transition = {**model, "transition": {"progression": "manual", "times": 1}}
    moto_api("/moto-api/state-manager/set-transition", json.dumps(transition).encode())
    try:
        yield
    finally:
        moto_api("/moto-api/state-manager/unset-transition", json.dumps(model).encode())


@contextmanager
def moto_checks_credentials() -> Iterator[None]:
    moto_api("/moto-api/reset-auth", b"0")
    try:
        yield
    finally:
        moto_api("/moto-api/reset-auth", b"inf")
