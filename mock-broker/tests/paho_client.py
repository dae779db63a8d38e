"""A paho-mqtt client for the mock broker's tests.

Usage: paho_client.py ACTION HOST PORT CA CERT KEY CLIENT_ID VERSION [TOPIC]
ACTION: roundtrip (subscribe TOPIC, publish to it, print what arrives)
        silent (connect with keep-alive 1 s, then send nothing until the broker closes)
VERSION: 311 or 5. Exit status 0 on success; the reason on stderr otherwise.
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    action, host, port, ca, cert, key, client_id, version = sys.argv[1:9]
    topic = sys.argv[9] if len(sys.argv) > 9 else "test/paho"
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
