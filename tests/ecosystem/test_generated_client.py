"""A client generated from /openapi.json by openapi-python-client, as a user in another language
would get one: it generates without warnings, imports, and drives a migration (create, ramp,
decide) and reports telemetry the server takes, with the typed models the document implies."""

import importlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

KEY = "gen.orders-total"


@pytest.fixture(scope="module")
def generated(server):
    out = os.path.join(os.environ["SWITCHYARD_STUBS"], "openapi")
    os.makedirs(out, exist_ok=True)
    with urllib.request.urlopen(f"{server['http']}/openapi.json") as answer:
        document = answer.read()
    spec = os.path.join(out, "openapi.json")
    with open(spec, "wb") as f:
        f.write(document)
    config = os.path.join(out, "config.yaml")
    with open(config, "w") as f:
        f.write("post_hooks: []\nproject_name_override: switchyard-api\npackage_name_override: switchyard_api\n")
    generator = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
    run = subprocess.run(
        [generator, "generate", "--path", spec, "--output-path", os.path.join(out, "client"),
         "--config", config, "--overwrite"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # The generator warns about what it could not turn into code: nothing may be left out.
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    sys.path.insert(0, os.path.join(out, "client"))
    return importlib.import_module("switchyard_api")


def test_a_generated_client_creates_ramps_decides_and_reports(server, generated):
    from switchyard_api import AuthenticatedClient
    from switchyard_api.api.clients import report_telemetry
    from switchyard_api.api.evaluation import decide
    from switchyard_api.api.evidence import traffic
    from switchyard_api.api.migrations import advance, create_migration, record_event, set_rollout
    from switchyard_api.models import (
        CreateMigration, EventName, RecordEvent, SetRollout, SideCounts, Stage, Step, Telemetry,
        TelemetryEntriesItem,
    )

    client = AuthenticatedClient(base_url=server["http"], token=server["token"])
    created = create_migration.sync_detailed(
        client=client, body=CreateMigration(key=KEY, reason="from a generated client"))
    assert created.status_code == 201, created.content
    assert created.headers["location"] == f"/v1/migrations/{KEY}"
    m = created.parsed
    assert m.stage == Stage.OFF and m.old_writes_resumed_since is None

    m = record_event.sync(KEY, client=client, body=RecordEvent(
        event=EventName.EXPAND_APPLIED, expected_version=m.version, reason="expand applied"))
    m = advance.sync(KEY, client=client, body=Step(expected_version=m.version, reason="dual writes"))
    m = set_rollout.sync(KEY, client=client, body=SetRollout(
        rollout_bp=10000, expected_version=m.version, reason="everyone"))
    assert (m.stage, m.rollout_bp) == (Stage.DUAL_WRITE, 10000)

    decision = decide.sync(KEY, client=client, entity_key="order-1")
    assert decision.stage == Stage.DUAL_WRITE
    assert decision.write.value == "both"

    minute = int(time.time() * 1000) // 60000 * 60000
    side = lambda reads, writes: SideCounts(reads=reads, writes=writes, errors=0, latency=[0] * 16)
    reported = report_telemetry.sync_detailed(client=client, body=Telemetry(
        service="gen-api", instance_id="gen-1",
        entries=[TelemetryEntriesItem(
            key=KEY, minute_ms=minute, old=side(3, 2), new=side(0, 2), comparisons=0,
            mismatches=0, evaluations_without_entity=0, fallback_evaluations=0)]))
    assert reported.status_code == 204, reported.content

    counted = traffic.sync(KEY, client=client)
    assert counted.total.old.reads == 3 and counted.total.new.writes == 2
