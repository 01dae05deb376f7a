"""OFREP through OpenFeature's own Python SDK and its stock OFREP provider: a migration's stage
per entity, as an application that speaks only OpenFeature would ask for it. The stage the
server gives each entity is the one the client crate's bucketing gives it: xxhash here
reproduces the crate's test vectors (testdata/bucketing.csv) first, then predicts every answer."""

import csv
import json
import pathlib
import urllib.request

import pytest
import requests
import xxhash
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.contrib.provider.ofrep import OFREPProvider

KEY = "ofrep.users-email"
VECTORS = pathlib.Path(__file__).resolve().parents[2] / "testdata" / "bucketing.csv"


def bucket(salt, entity):
    return xxhash.xxh3_64_intdigest(entity.encode(), seed=salt) % 10000


def call(server, method, path, body=None, token=None):
    request = urllib.request.Request(
        f"{server['http']}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token or server['token']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read() or b"null")


def step(server, path, body):
    m = call(server, "GET", f"/v1/migrations/{KEY}")
    return call(server, "POST", f"/v1/migrations/{KEY}/{path}",
                {**body, "expected_version": m["version"], "reason": "ofrep test"})


@pytest.fixture(scope="module")
def migration(server):
    """A migration at dual_write 30%: entities below bucket 3000 dual-write, the rest are off."""
    call(server, "POST", "/v1/migrations", {"key": KEY, "entity_kind": "user_id", "reason": "ofrep"})
    step(server, "events", {"event": "expand_applied"})
    step(server, "advance", {})
    return step(server, "rollout", {"rollout_bp": 3000})


def test_python_xxhash_reproduces_the_client_crates_bucketing_vectors():
    rows = list(csv.DictReader(VECTORS.open()))
    assert len(rows) > 30
    for row in rows:
        salt, entity = int(row["salt"]), row["entity_key"]
        assert f"{xxhash.xxh3_64_intdigest(entity.encode(), seed=salt):016x}" == row["xxh3_64_hex"]
        assert bucket(salt, entity) == int(row["bucket"]), row


def test_the_stock_provider_evaluates_the_stage_of_each_entity(server, migration):
    api.set_provider(OFREPProvider(
        server["http"], headers_factory=lambda: {"Authorization": f"Bearer {server['token']}"}))
    client = api.get_client()
    seen = set()
    for i in range(300):
        entity = f"user-{i}"
        details = client.get_object_details(KEY, {}, EvaluationContext(targeting_key=entity))
        assert details.error_code is None, details
        b = bucket(migration["salt"], entity)
        expected = "dual_write" if b < 3000 else "off"
        assert details.variant == expected, (entity, b, details)
        assert details.value["stage"] == expected
        assert details.value["write"] == ("both" if expected == "dual_write" else "old")
        assert details.reason == "SPLIT"
        assert details.flag_metadata["bucket"] == b
        assert details.flag_metadata["version"] == migration["version"]
        seen.add(expected)
    assert seen == {"dual_write", "off"}

    # No entity: the trailing stage, as the client crate gives an operation without one.
    details = client.get_object_details(KEY, {})
    assert details.variant == "off" and details.reason == "STATIC"

    # An unknown migration is FLAG_NOT_FOUND and the SDK returns the code's default.
    missing = client.get_object_details("ofrep.no-such", {"stage": "off"},
                                        EvaluationContext(targeting_key="u"))
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND
    assert missing.value == {"stage": "off"}


def test_a_token_outside_its_scope_is_forbidden(server, migration):
    made = call(server, "POST", "/v1/tokens",
                {"name": "ofrep-scoped", "role": "reader", "scope": ["orders.*"]})
    api.set_provider(OFREPProvider(
        server["http"], headers_factory=lambda: {"X-API-Key": made["token"]}))
    details = api.get_client().get_object_details(KEY, {}, EvaluationContext(targeting_key="u"))
    assert details.error_code == ErrorCode.GENERAL and "forbidden" in details.error_message
    # Its bulk evaluation holds only what its scope covers.
    answer = requests.post(f"{server['http']}/ofrep/v1/evaluate/flags",
                           json={"context": {"targetingKey": "u"}},
                           headers={"X-API-Key": made["token"]}, timeout=5)
    assert answer.status_code == 200
    assert all(f["key"].startswith("orders.") for f in answer.json()["flags"])


def test_bulk_evaluation_answers_304_until_the_state_or_the_context_changes(server, migration):
    url = f"{server['http']}/ofrep/v1/evaluate/flags"
    auth = {"Authorization": f"Bearer {server['token']}"}
    body = {"context": {"targetingKey": "user-7"}}
    first = requests.post(url, json=body, headers=auth, timeout=5)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    flags = {f["key"]: f for f in first.json()["flags"]}
    assert flags[KEY]["variant"] in ("dual_write", "off")

    again = requests.post(url, json=body, headers={**auth, "If-None-Match": etag}, timeout=5)
    assert again.status_code == 304 and again.content == b""
    other = requests.post(url, json={"context": {"targetingKey": "user-8"}},
                          headers={**auth, "If-None-Match": etag}, timeout=5)
    assert other.status_code == 200 and other.headers["ETag"] != etag

    step(server, "rollout", {"rollout_bp": 10000})
    changed = requests.post(url, json=body, headers={**auth, "If-None-Match": etag}, timeout=5)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert {f["key"]: f for f in changed.json()["flags"]}[KEY]["variant"] == "dual_write"

    # The spec's failure bodies.
    bad = requests.post(url, data=b"{", headers={**auth, "Content-Type": "application/json"},
                        timeout=5)
    assert bad.status_code == 400 and bad.json()["errorCode"] == "PARSE_ERROR"
    bad = requests.post(url, json={"context": {"targetingKey": 5}}, headers=auth, timeout=5)
    assert bad.status_code == 400 and bad.json()["errorCode"] == "INVALID_CONTEXT"
