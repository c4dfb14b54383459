"""prefect.yaml: every deployment loads its flow, and its parameters and schedules are valid.

`prefect deploy --all` would only find a renamed parameter or a bad cron
string at deploy time on the user's server; these checks find them here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def _by_name(name: str) -> dict:
    return next(d for d in DEPLOYMENTS if d["name"] == name)


def test_the_three_deployments_are_there():
    assert {d["name"] for d in DEPLOYMENTS} == {
        "nightly-pseudo-label",
        "weekly-retrain",
        "hourly-review-sync",
    }


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_entrypoint_parameters_and_schedules_are_valid(deployment: dict, monkeypatch):
    monkeypatch.chdir(ROOT)  # entrypoints are relative to the repository root, as for a worker
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    flow.validate_parameters(deployment["parameters"])  # raises on unknown or mistyped ones
    for schedule in deployment["schedules"]:
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert deployment["work_pool"]["name"] == "wsss-process"


def test_nightly_and_weekly_runs_never_share_a_day():
    def days(name: str) -> set[int]:
        (schedule,) = _by_name(name)["schedules"]
        field = schedule["cron"].split()[4]
        if "-" in field:
            first, last = map(int, field.split("-"))
            return set(range(first, last + 1))
        return {int(day) % 7 for day in field.split(",")}

    assert days("nightly-pseudo-label").isdisjoint(days("weekly-retrain"))
    assert days("nightly-pseudo-label") | days("weekly-retrain") == set(range(7))


def test_scheduled_runs_read_new_images_and_only_the_weekly_one_retrains():
    nightly, weekly = _by_name("nightly-pseudo-label"), _by_name("weekly-retrain")
    assert nightly["parameters"]["refresh"] and weekly["parameters"]["refresh"]
    assert not nightly["parameters"]["retrain"] and weekly["parameters"]["retrain"]
    assert _by_name("hourly-review-sync")["parameters"]["skip_when_busy"]
