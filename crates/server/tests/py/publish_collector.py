"""A collector written with nats-py (an independent NATS client) publishing
through a site's leaf with nothing but the files of its collector bundle.

usage: publish_collector.py BUNDLE_DIR COUNT
"""

import asyncio
import json
import ssl
import sys

import nats


async def main(bundle: str, count: int) -> None:
    with open(f"{bundle}/collector.json", encoding="utf-8") as f:
        config = json.load(f)
    tls = ssl.create_default_context(cafile=f"{bundle}/certs/ca.pem")
    tls.load_cert_chain(f"{bundle}/certs/collector.pem", f"{bundle}/certs/collector-key.pem")
    nc = await nats.connect(
        config["nats"]["url"],
        tls=tls,
        user_credentials=f"{bundle}/creds/collector.creds",
        connect_timeout=5,
        max_reconnect_attempts=0,
    )
    js = nc.jetstream()
    subject = config["subject_prefix"] + ".python"
    for i in range(count):
        ack = await js.publish(subject, json.dumps({"message": f"from nats-py {i}"}).encode())
        assert ack.stream == "EDGE_BUFFER", ack
    await nc.close()
    print(f"published {count} to {subject}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
