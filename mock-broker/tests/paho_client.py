"""A paho-mqtt client for the mock broker's tests.

Usage: paho_client.py ACTION HOST PORT CA CERT KEY CLIENT_ID VERSION [TOPIC]
ACTION: roundtrip (subscribe TOPIC, publish to it, print what arrives)
        silent (connect with keep-alive 1 s, then send nothing until the broker closes)
        nolocal (MQTT 5: subscribe TOPIC with No Local, publish "own" to it, then a second
                 client publishes "other"; print what the first receives)
        shared (MQTT 5: two clients share $share/g/TOPIC, a third publishes 1..4; print
                "CLIENT PAYLOAD" for each delivery, sorted)
VERSION: 311 or 5. Exit status 0 on success; the reason on stderr otherwise.
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt


def connected(client_id, protocol, host, port, ca, cert, key, on_message=None):
    """A started client, its CONNACK and SUBACKs awaited by the caller's events."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    if on_message:
        client.on_message = on_message
    client.connect(host, int(port), keepalive=60)
    client.loop_start()
    return client, subscribed


def mqtt5_features(action, host, port, ca, cert, key, client_id, topic):
    """No Local and shared subscriptions, as a third-party MQTT 5 client sees them."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    lines = []
    lock = threading.Lock()
    got = threading.Semaphore(0)

    def recorder(name):
        def on_message(_client, _userdata, message):
            with lock:
                lines.append(f"{name} {message.payload.decode()}")
            got.release()
        return on_message

    args = (mqtt.MQTTv5, host, port, ca, cert, key)
    if action == "nolocal":
        me, subscribed = connected(client_id, *args, on_message=recorder("me"))
        me.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
        other, _ = connected(client_id + "-other", *args)
        expected = 1
        publishers = [(me, "own"), (other, "other")]
        members = [me]
    else:
        members = []
        for name in ("a", "b"):
            member, subscribed = connected(f"{client_id}-{name}", *args, on_message=recorder(name))
            member.subscribe(f"$share/g/{topic}", qos=1)
            if not subscribed.wait(10):
                print("no SUBACK", file=sys.stderr)
                return 1
            members.append(member)
        sender, _ = connected(client_id + "-pub", *args)
        expected = 4
        publishers = [(sender, str(n)) for n in range(1, 5)]
    if action == "nolocal" and not subscribed.wait(10):
        print("no SUBACK", file=sys.stderr)
        return 1
    for client, payload in publishers:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    for _ in range(expected):
        if not got.acquire(timeout=10):
            print(f"only {lines}", file=sys.stderr)
            return 1
    # Anything more would have been sent before the PUBACK of the last publish.
    for client, _ in publishers:
        client.disconnect()
    for member in members:
        member.disconnect()
    with lock:
        print("\n".join(sorted(lines)), flush=True)
    return 0


def main():
    action, host, port, ca, cert, key, client_id, version = sys.argv[1:9]
    topic = sys.argv[9] if len(sys.argv) > 9 else "test/paho"
    if action in ("nolocal", "shared"):
        return mqtt5_features(action, host, port, ca, cert, key, client_id, topic)
    protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    received = threading.Event()
    subscribed = threading.Event()
    closed = threading.Event()

    def on_message(_client, _userdata, message):
        print(message.payload.decode(), flush=True)
        received.set()

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        subscribed.set()

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
        print(f"disconnected: {reason_code}", file=sys.stderr, flush=True)
        closed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    keepalive = 1 if action == "silent" else 60
    client.connect(host, int(port), keepalive=keepalive)
    if action == "silent":
        # No network loop: no PINGREQ goes out. Wait for the broker to close the socket.
        client.socket().settimeout(10)
        try:
            data = client.socket().recv(16)
        except Exception as error:  # noqa: BLE001 - any failure means "closed"
            data = b""
            print(f"recv: {error}", file=sys.stderr)
        # CONNACK may come first; read until the broker closes.
        while data:
            data = client.socket().recv(16)
        print("closed by broker", flush=True)
        return 0
    client.loop_start()
    client.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        print("no SUBACK", file=sys.stderr)
        return 1
    client.publish(topic, f"paho {version}", qos=1).wait_for_publish(10)
    ok = received.wait(10)
    client.disconnect()
    client.loop_stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
