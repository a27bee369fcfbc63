"""The PITR form points at the input a refused request is about, from the error's `field`
(not its wording). Pure: no PostgreSQL, no app."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.pitr.request import PitrRequest, check_request
from preskool_dr.tui.widgets.pitr_form import INPUT_FOR_FIELD


def test_a_refused_request_names_its_field(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "PG_VERSION").write_text("15\n")
    new = tmp_path / "new"
    request = PitrRequest(datetime(2026, 2, 20, 4, 30, tzinfo=UTC), new, free_port(), str(new))
    refused = {
        "data_dir": replace(request, data_dir=used, confirm=str(used)),
        "port": replace(request, port=0),
        "confirm": replace(request, confirm=str(used)),
        "target": replace(request, target=datetime(2026, 2, 20, 4, 30)),
    }
    for field, wrong in refused.items():
        with pytest.raises(UsageError) as caught:
            check_request(wrong)
        assert caught.value.field == field, caught.value
    assert INPUT_FOR_FIELD == {"target": "pitr-target", "data_dir": "pitr-dir", "port": "pitr-port"}
