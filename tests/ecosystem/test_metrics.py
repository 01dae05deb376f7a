"""/metrics as Prometheus reads it: parsed by prometheus_client's own text parser (a line it
cannot parse fails the test), with the families an operator alerts on, and gRPC calls labelled
by method and canonical status code, a refused call under the method it called."""

import json
import os
import re
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families


def scrape(server):
    with urllib.request.urlopen(f"{server['http']}/metrics") as answer:
        assert answer.status == 200
        return {f.name: f for f in text_string_to_metric_families(answer.read().decode())}


def test_metrics_parse_and_label_grpc_calls_canonically(server, stubs, channel, auth):
    pb, services = stubs
    api = services.SwitchyardStub(channel)
    api.ListMigrations(pb.ListMigrationsRequest(), metadata=auth)
    with pytest.raises(grpc.RpcError):
        api.ListMigrations(pb.ListMigrationsRequest())  # no token
    request = urllib.request.Request(
        f"{server['http']}/v1/whoami", headers={"Authorization": f"Bearer {server['token']}"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200

    families = scrape(server)
    # prometheus_client names a counter's family without its _total suffix.
    for family in ["switchyard_grpc_requests", "switchyard_http_requests"]:
        assert family in families, sorted(families)
    calls = {
        (s.labels["method"], s.labels["code"]): s.value
        for s in families["switchyard_grpc_requests"].samples
        if s.name.endswith("_total")
    }
    assert calls.get(("ListMigrations", "OK"), 0) >= 1, calls
    assert calls.get(("ListMigrations", "UNAUTHENTICATED"), 0) >= 1, calls
    # Every code label is a canonical name, never a Rust variant's spelling.
    for _, code in calls:
        assert code.isupper(), calls


def test_metrics_say_the_build_and_each_migrations_stage_and_front(server, stubs, channel, auth):
    pb, services = stubs
    api = services.SwitchyardStub(channel)
    key = "metrics.orders-total"
    m = api.CreateMigration(pb.CreateMigrationRequest(key=key, reason="metrics"), metadata=auth)
    m = api.RecordEvent(pb.RecordEventRequest(
        key=key, event=pb.EVENT_KIND_EXPAND_APPLIED, expected_version=m.version,
        reason="expand"), metadata=auth)
    m = api.Advance(pb.StepRequest(key=key, expected_version=m.version, reason="go"),
                    metadata=auth)
    m = api.SetRollout(pb.SetRolloutRequest(
        key=key, rollout_bp=2500, expected_version=m.version, reason="a quarter"), metadata=auth)

    families = scrape(server)
    build = families["switchyard_build_info"].samples
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"], build
    stages = {s.labels["stage"]: s.value for s in families["switchyard_migration_stage"].samples
              if s.labels["migration"] == key}
    assert stages["dual_write"] == 1, stages
    assert sum(stages.values()) == 1 and len(stages) == 7, stages
    rollout = [s.value for s in families["switchyard_migration_rollout_ratio"].samples
               if s.labels["migration"] == key]
    assert rollout == [0.25], rollout
    version = [s.value for s in families["switchyard_migration_version"].samples
               if s.labels["migration"] == key]
    assert version == [m.version], version


def post(server, path, body):
    request = urllib.request.Request(
        f"{server['http']}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {server['token']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return answer.status


def test_metrics_to_alert_on_are_present_and_move(server, stubs, channel, auth):
    """Per migration: time at stage, live and lagging instances, the gate, client traffic and
    mismatches; request, store and fan-out latencies as real histograms (with buckets, so they
    aggregate across replicas); the process's own figures."""
    pb, services = stubs
    api = services.SwitchyardStub(channel)
    key = "metrics.alerting"
    m = api.CreateMigration(pb.CreateMigrationRequest(key=key, reason="alerts"), metadata=auth)
    m = api.RecordEvent(pb.RecordEventRequest(
        key=key, event=pb.EVENT_KIND_EXPAND_APPLIED, expected_version=m.version,
        reason="expand"), metadata=auth)
    # One instance that has applied nothing yet: live, and behind the migration's version.
    assert post(server, "/v1/clients/heartbeat", {
        "service": "alert-api", "instance_id": "alert-1", "applied_version": 0}) == 200
    # A watch stream, so the next change is fanned out to it.
    watch = api.Watch(pb.WatchRequest(), metadata=auth)
    assert next(watch).WhichOneof("event") == "snapshot"
    m = api.Advance(pb.StepRequest(key=key, expected_version=m.version, reason="go"),
                    metadata=auth)
    assert next(watch).change.key == key
    watch.cancel()
    minute = int(time.time() * 1000) // 60000 * 60000
    side = {"reads": 5, "writes": 1, "errors": 1, "latency": [0] * 16}
    assert post(server, "/v1/clients/telemetry", {
        "service": "alert-api", "instance_id": "alert-1", "entries": [{
            "key": key, "minute_ms": minute, "old": side, "new": side, "comparisons": 4,
            "mismatches": 2, "evaluations_without_entity": 0, "fallback_evaluations": 0}]}) == 204

    families = scrape(server)

    def value(family, **labels):
        found = [s.value for s in families[family].samples
                 if all(s.labels.get(k) == v for k, v in labels.items())
                 and not s.name.endswith(("_created", "_bucket", "_count", "_sum"))]
        assert len(found) == 1, (family, labels, families[family].samples)
        return found[0]

    assert 0 <= value("switchyard_migration_stage_seconds", migration=key) < 600
    assert value("switchyard_migration_live_instances", migration=key) >= 1
    assert value("switchyard_migration_instances_behind", migration=key) >= 1
    assert value("switchyard_migration_gate_passing", migration=key) == 0
    assert value("switchyard_shadow_mismatches", migration=key) == 2
    assert value("switchyard_shadow_comparisons", migration=key) == 4
    assert value("switchyard_client_errors", migration=key, side="new") == 1
    assert value("switchyard_client_operations", migration=key, side="old", kind="read") == 5
    for histogram in ["switchyard_http_request_duration_seconds",
                      "switchyard_grpc_request_duration_seconds",
                      "switchyard_watch_fanout_seconds", "switchyard_store_write_seconds"]:
        assert families[histogram].type == "histogram", (histogram, families[histogram].type)
        counts = [s.value for s in families[histogram].samples if s.name.endswith("_count")]
        assert sum(counts) >= 1, (histogram, families[histogram].samples)
    advances = [s for s in families["switchyard_grpc_request_duration_seconds"].samples
                if s.name.endswith("_count") and s.labels["method"] == "Advance"]
    assert advances and advances[0].value >= 1, advances
    assert value("process_resident_memory_bytes") > 1_000_000
    assert value("process_open_fds") > 0
    assert value("process_start_time_seconds") > 1_600_000_000


def test_example_alert_rules_use_only_exported_metrics(server, stubs, channel, auth):
    """deploy/prometheus/switchyard-alerts.yml: valid YAML in Prometheus's rule-file shape,
    every alert named, with an expression and a summary, and every metric it reads exported
    by the server (a renamed metric would silently never fire)."""
    from ruamel.yaml import YAML

    pb, services = stubs
    # A migration with a backfill: its backfill gauges exist from creation.
    services.SwitchyardStub(channel).CreateMigration(pb.CreateMigrationRequest(
        key="metrics.with-backfill", has_backfill=True, reason="alert rules"), metadata=auth)

    path = os.path.join(os.environ["SWITCHYARD_REPO"], "deploy/prometheus/switchyard-alerts.yml")
    with open(path) as f:
        rules = YAML(typ="safe").load(f)
    exported = set()
    for family in scrape(server).values():
        exported.update(s.name for s in family.samples)
        exported.add(family.name)
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert len(alerts) >= 3
    names = {"SwitchyardMigrationStuck", "SwitchyardInstancesBehind", "SwitchyardShadowMismatches"}
    assert names <= {a["alert"] for a in alerts}, [a["alert"] for a in alerts]
    for alert in alerts:
        assert alert["expr"] and alert["annotations"]["summary"], alert
        used = set(re.findall(r"\b((?:switchyard|process)_[a-z_]+)", alert["expr"]))
        assert used, alert
        missing = used - exported
        assert not missing, (alert["alert"], missing)
