"""The gRPC API through Python's grpcio, as a user outside Rust meets it: stubs generated from
proto/, a migration driven stage by stage, a refusal read with the standard rich error model
(grpc_status.rpc_status.from_call), and the service found through reflection by the stock
grpcio-reflection client, which speaks v1alpha."""

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

KEY = "py.orders-split"


def test_a_migration_driven_through_grpc_and_a_refusal_read_the_standard_way(stubs, channel, auth):
    pb, services = stubs
    api = services.SwitchyardStub(channel)

    m = api.CreateMigration(
        pb.CreateMigrationRequest(key=KEY, entity_kind="order_id", reason="from Python"),
        metadata=auth,
    )
    assert m.stage == pb.STAGE_OFF
    m = api.RecordEvent(
        pb.RecordEventRequest(
            key=KEY, event=pb.EVENT_KIND_EXPAND_APPLIED, expected_version=m.version,
            reason="expand applied",
        ),
        metadata=auth,
    )
    m = api.Advance(
        pb.StepRequest(key=KEY, expected_version=m.version, reason="start dual writes"),
        metadata=auth,
    )
    m = api.SetRollout(
        pb.SetRolloutRequest(key=KEY, rollout_bp=5000, expected_version=m.version, reason="half"),
        metadata=auth,
    )
    assert (m.stage, m.rollout_bp) == (pb.STAGE_DUAL_WRITE, 5000)

    # Advancing before the front reaches 100% is refused by a safety rule: the rich status says
    # which, in Switchyard's own detail and in the standard ErrorInfo and PreconditionFailure.
    with pytest.raises(grpc.RpcError) as refused:
        api.Advance(
            pb.StepRequest(key=KEY, expected_version=m.version, reason="too early"),
            metadata=auth,
        )
    call = refused.value
    assert call.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(call)
    assert status is not None, "no google.rpc.Status in grpc-status-details-bin"
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == call.details()

    detail, info, failure = pb.ErrorDetail(), error_details_pb2.ErrorInfo(), None
    assert status.details[0].Unpack(detail)
    assert detail.code == "rule_refused"
    assert detail.rule > 0
    assert detail.current.key == KEY and detail.current.version == m.version
    assert status.details[1].Unpack(info)
    assert info.reason == "RULE_REFUSED"
    assert info.domain == "switchyard.dev"
    assert info.metadata["rule"] == str(detail.rule)
    assert info.metadata["migration"] == KEY
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[2].Unpack(failure)
    assert failure.violations[0].type == f"RULE_{detail.rule}"
    assert failure.violations[0].subject == f"migrations/{KEY}"

    # At 100% it advances; a stale version is ABORTED, its detail the current state.
    m = api.SetRollout(
        pb.SetRolloutRequest(key=KEY, rollout_bp=10000, expected_version=m.version, reason="all"),
        metadata=auth,
    )
    advanced = api.Advance(
        pb.StepRequest(key=KEY, expected_version=m.version, reason="on to shadow"),
        metadata=auth,
    )
    assert advanced.stage == pb.STAGE_SHADOW
    with pytest.raises(grpc.RpcError) as stale:
        api.Advance(
            pb.StepRequest(key=KEY, expected_version=m.version, reason="stale"),
            metadata=auth,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    status = rpc_status.from_call(stale.value)
    stale_detail = pb.ErrorDetail()
    assert status.details[0].Unpack(stale_detail)
    assert stale_detail.code == "stale_version"
    assert stale_detail.current.version == advanced.version

    # A client acknowledges what it applied through its heartbeat.
    beat = api.Heartbeat(
        pb.HeartbeatRequest(
            service="py-api", instance_id="py-1", applied_version=advanced.version,
            migrations=[KEY],
        ),
        metadata=auth,
    )
    assert beat.snapshot_version >= advanced.version


def test_an_unauthenticated_call_is_read_the_standard_way(stubs, channel):
    pb, services = stubs
    with pytest.raises(grpc.RpcError) as denied:
        services.SwitchyardStub(channel).ListMigrations(pb.ListMigrationsRequest())
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(denied.value)
    info = error_details_pb2.ErrorInfo()
    assert status.details[1].Unpack(info)
    assert info.reason == "UNAUTHENTICATED"


def test_the_stock_v1alpha_reflection_client_finds_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert "switchyard.v1.Switchyard" in services, services
    assert "grpc.health.v1.Health" in services, services
    # The whole service, methods and messages, from reflection alone.
    from google.protobuf.descriptor_pool import DescriptorPool

    pool = DescriptorPool(db)
    service = pool.FindServiceByName("switchyard.v1.Switchyard")
    methods = {m.name for m in service.methods}
    assert {"CreateMigration", "Advance", "Watch", "Heartbeat"} <= methods, methods
    assert pool.FindMessageTypeByName("switchyard.v1.ErrorDetail").fields_by_name["rule"]
