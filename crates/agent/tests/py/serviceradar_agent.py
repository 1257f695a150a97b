"""A ServiceRadar-protocol agent for the gateway tests: stubs generated from
crates/proto/proto/monitoring.proto with grpcio-tools, speaking
monitoring.AgentGatewayService over mTLS with an agent certificate.

Usage: serviceradar_agent.py PORT CERT KEY CA AGENT_ID OTHER_AGENT_ID

Prints one line per step (the Rust test reads them): the refused Hello
claiming OTHER_AGENT_ID, Hello, GetConfig (full, then not_modified),
PushStatus, StreamStatus, then opens the ControlStream, acknowledges the
config, prints `ready` and answers the first command with ack, progress
and a result.
"""

import json
import queue
import sys

import grpc

import monitoring_pb2 as pb
import monitoring_pb2_grpc as rpc

port, cert, key, ca, agent_id, other = sys.argv[1:7]


def say(*words):
    print(*words, flush=True)


creds = grpc.ssl_channel_credentials(
    root_certificates=open(ca, "rb").read(),
    private_key=open(key, "rb").read(),
    certificate_chain=open(cert, "rb").read(),
)
with grpc.secure_channel(f"localhost:{port}", creds) as channel:
    stub = rpc.AgentGatewayServiceStub(channel)

    try:
        stub.Hello(pb.AgentHelloRequest(agent_id=other, version="1.2.3"), timeout=20)
        say("impostor-accepted")
    except grpc.RpcError as e:
        say("impostor", e.code().name)

    hello = stub.Hello(
        pb.AgentHelloRequest(
            agent_id=agent_id,
            version="1.2.3",
            capabilities=["icmp", "tcp"],
            hostname="sr-go-agent",
            os="linux",
            arch="amd64",
            partition="default",
        ),
        timeout=20,
    )
    say("hello", hello.accepted, hello.agent_id, hello.heartbeat_interval_sec, hello.config_outdated)

    full = stub.GetConfig(pb.AgentConfigRequest(agent_id=agent_id), timeout=20)
    say("config", full.not_modified, full.config_version, len(full.checks),
        ",".join(c.check_type for c in full.checks))
    same = stub.GetConfig(
        pb.AgentConfigRequest(agent_id=agent_id, config_version=full.config_version), timeout=20
    )
    say("not_modified", same.not_modified, same.config_version, same.config_timestamp, len(same.checks))

    pushed = stub.PushStatus(
        pb.GatewayStatusRequest(
            agent_id=agent_id,
            timestamp=1_700_000_000,
            services=[
                pb.GatewayServiceStatus(service_name="web", service_type="http", available=True,
                                        message=b"200 OK", response_time=3_000_000,
                                        agent_id=agent_id),
                pb.GatewayServiceStatus(service_name="db", service_type="tcp", available=False,
                                        message=b"connection refused"),
            ],
        ),
        timeout=20,
    )
    say("push", pushed.received)

    def chunks():
        yield pb.GatewayStatusChunk(
            agent_id=agent_id, chunk_index=0, total_chunks=2,
            services=[pb.GatewayServiceStatus(service_name="dns", service_type="dns", available=True)])
        yield pb.GatewayStatusChunk(
            agent_id=agent_id, chunk_index=1, total_chunks=2, is_final=True,
            services=[pb.GatewayServiceStatus(service_name="ping", service_type="icmp", available=True)])

    streamed = stub.StreamStatus(chunks(), timeout=20)
    say("stream", streamed.received)

    outbox = queue.Queue()
    outbox.put(pb.ControlStreamRequest(hello=pb.ControlStreamHello(agent_id=agent_id, version="1.2.3")))

    def requests():
        while True:
            message = outbox.get()
            if message is None:
                return
            yield message

    replies = stub.ControlStream(requests(), timeout=60)
    for reply in replies:
        kind = reply.WhichOneof("payload")
        if kind == "config":
            outbox.put(pb.ControlStreamRequest(config_ack=pb.ConfigAck(
                config_version=reply.config.config_version, timestamp=1)))
            say("ready", reply.config.config_version)
        elif kind == "command":
            c = reply.command
            outbox.put(pb.ControlStreamRequest(command_ack=pb.CommandAck(
                command_id=c.command_id, command_type=c.command_type)))
            outbox.put(pb.ControlStreamRequest(command_progress=pb.CommandProgress(
                command_id=c.command_id, command_type=c.command_type, progress_percent=50)))
            outbox.put(pb.ControlStreamRequest(command_result=pb.CommandResult(
                command_id=c.command_id, command_type=c.command_type, success=True,
                message="done", payload_json=json.dumps({"ran": c.command_type}).encode())))
            say("command", c.command_id, c.command_type, c.ttl_seconds, c.created_at > 0)
            break
    # Let the gateway read the answers before the stream closes.
    import time
    time.sleep(1)
    outbox.put(None)
    say("bye")
