"""What every ecosystem test gets: the server's addresses and admin token (scripts/ecosystem
starts the server and passes them in the environment), and Python stubs generated from
proto/ by grpcio-tools, as any Python user of the gRPC API would generate them."""

import importlib
import os
import sys

import grpc
import pytest
from grpc_tools import protoc


@pytest.fixture(scope="session")
def server():
    return {
        "http": os.environ["SWITCHYARD_HTTP"],
        "grpc": os.environ["SWITCHYARD_GRPC"],
        "token": os.environ["SWITCHYARD_TOKEN"],
    }


@pytest.fixture(scope="session")
def stubs():
    """The generated modules: (messages, services)."""
    proto_dir = os.environ["SWITCHYARD_PROTO_DIR"]
    out = os.environ["SWITCHYARD_STUBS"]
    os.makedirs(out, exist_ok=True)
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "switchyard/v1/switchyard.proto",
    ])
    assert code == 0, f"protoc failed ({code})"
    sys.path.insert(0, out)
    messages = importlib.import_module("switchyard.v1.switchyard_pb2")
    services = importlib.import_module("switchyard.v1.switchyard_pb2_grpc")
    return messages, services


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(server["grpc"]) as channel:
        yield channel


@pytest.fixture(scope="session")
def auth(server):
    """Call metadata carrying the admin token."""
    return (("authorization", f"Bearer {server['token']}"),)
