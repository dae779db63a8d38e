"""paho-mqtt (a third-party client) against the mock broker's AWS IoT Core rules.

Usage: paho_fidelity.py ACTION HOST PORT CA CERT KEY PREFIX
Each ACTION drives the broker as FIDELITY.md's row says and prints what the client saw,
one fact a line, for tests/paho_fidelity.rs to compare. PREFIX starts every client id
(the test policy allows client ids starting with the certificate's thing name). Exit
status 0 once the facts are printed; 1, with the reason on stderr, if a wait timed out.

"Nothing else arrived" is observed, not waited for: messages from the broker to one
client arrive in the order the broker routed them, so a later message (or the
publisher's own lifecycle event, which the broker routes after its will) fences
anything that would have come before it.
"""
import queue
import ssl
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 8


class Failed(Exception):
    pass


class Client:
    """A started paho client whose CONNACK, SUBACKs, PUBACKs, messages and
    disconnection are queued for the script to wait on."""

    def __init__(self, args, client_id, version=5, clean=True, properties=None, will=None,
                 manual_ack=False):
        host, port, ca, cert, key = args
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kwargs = {"client_id": client_id, "protocol": protocol, "manual_ack": manual_ack}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key,
                            tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.max_inflight_messages_set(200)
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.closed = queue.Queue()
        self.client.on_connect = lambda _c, _u, flags, rc, props: self.connacks.put((flags, rc, props))
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        self.client.on_message = lambda _c, _u, m: self.messages.put(m)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.closed.put(rc)
        if will is not None:
            topic, payload, will_properties = will
            self.client.will_set(topic, payload, qos=1, properties=will_properties)
        connect = {"clean_start": clean} if version == 5 else {}
        self.client.connect(host, int(port), keepalive=60, properties=properties, **connect)
        self.client.loop_start()

    def connack(self):
        try:
            return self.connacks.get(timeout=WAIT)
        except queue.Empty:
            raise Failed("no CONNACK") from None

    def accepted(self):
        flags, rc, props = self.connack()
        if rc.is_failure:
            raise Failed(f"refused: {rc}")
        return flags, props

    def subscribe(self, topic, options=None, qos=1):
        if isinstance(topic, list):
            self.client.subscribe(topic)
        elif options is not None:
            self.client.subscribe(topic, options=options)
        else:
            self.client.subscribe(topic, qos=qos)
        try:
            return [code.value for code in self.subacks.get(timeout=WAIT)]
        except queue.Empty:
            raise Failed(f"no SUBACK for {topic}") from None

    def publish(self, topic, payload, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        info.wait_for_publish(WAIT)
        if not info.is_published():
            raise Failed(f"no PUBACK for {payload!r} on {topic}")

    def message(self):
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            raise Failed("no message") from None

    def gone(self):
        try:
            return self.closed.get(timeout=WAIT)
        except queue.Empty:
            raise Failed("not disconnected") from None

    def disconnect(self, reason=None, properties=None):
        self.client.disconnect(reasoncode=reason, properties=properties)
        self.gone()
        self.client.loop_stop()


def props(**values):
    """CONNECT, PUBLISH or DISCONNECT properties."""
    kind = values.pop("kind")
    properties = Properties(kind)
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def describe(message):
    expiry = getattr(message.properties, "MessageExpiryInterval", None) if message.properties else None
    text = f"{message.topic} {message.payload.decode()} retain={int(message.retain)}"
    return text + (f" expiry={expiry}" if expiry is not None else "")


def hash_parent(args, prefix):
    """`test/sensor/#` gets `test/sensor/` but not `test/sensor` (AWS differences)."""
    for version in (311, 5):
        sub = Client(args, f"{prefix}-sub{version}", version)
        sub.accepted()
        print(f"{version} suback {sub.subscribe('test/sensor/#')}")
        pub = Client(args, f"{prefix}-pub{version}", version)
        pub.accepted()
        pub.publish("test/sensor", b"parent")
        pub.publish("test/sensor/", b"child")
        # The parent, if delivered, would come first.
        print(f"{version} {describe(sub.message())}")
        pub.disconnect()
        sub.disconnect()


def retained(args, prefix):
    """Retain As Published and Retain Handling 0/1/2, as MQTT 5 clients see them."""
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    pub.publish("test/rh", b"kept", retain=True)
    rh = Client(args, f"{prefix}-rh")
    rh.accepted()
    for handling in (1, 1, 0, 2):
        rh.subscribe("test/rh", SubscribeOptions(qos=1, retainHandling=handling))
    pub.publish("test/rh", b"end")
    while True:
        message = rh.message()
        print(f"rh {describe(message)}")
        if message.payload == b"end":
            break
    rap = Client(args, f"{prefix}-rap")
    rap.accepted()
    rap.subscribe("test/rap", SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2))
    plain = Client(args, f"{prefix}-plain")
    plain.accepted()
    plain.subscribe("test/rap", SubscribeOptions(qos=1, retainHandling=2))
    pub.publish("test/rap", b"state", retain=True)
    print(f"rap {describe(rap.message())}")
    print(f"plain {describe(plain.message())}")
    pub.publish("test/rap", b"", retain=True)
    for client in (pub, rh, rap, plain):
        client.disconnect()


def session(args, client_id, clean, expiry):
    return Client(args, client_id, 5, clean,
                  props(kind=PacketTypes.CONNECT, SessionExpiryInterval=expiry))


def expiry(args, prefix):
    """A queued message past its Message Expiry Interval is dropped; the other carries
    what is left."""
    away = session(args, f"{prefix}-away", True, 3600)
    away.accepted()
    away.subscribe("test/exp")
    away.disconnect()
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    pub.publish("test/exp", b"short", properties=props(kind=PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish("test/exp", b"long", properties=props(kind=PacketTypes.PUBLISH, MessageExpiryInterval=100))
    # The interval under test has to pass.
    threading.Event().wait(1.2)
    back = session(args, f"{prefix}-away", False, 3600)
    flags, _ = back.accepted()
    print(f"session_present={int(flags.session_present)}")
    message = back.message()
    left = message.properties.MessageExpiryInterval
    print(f"{message.payload.decode()} left<100={left < 100} left>90={left > 90}")
    back.disconnect()
    pub.disconnect()


def session_expiry(args, prefix):
    """Session Expiry Interval 0 in DISCONNECT ends a session CONNECT asked to keep."""
    for update in (None, 0):
        client = session(args, f"{prefix}-sx", True, 3600)
        client.accepted()
        client.subscribe("test/sx")
        properties = None
        if update is not None:
            properties = props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=update)
        client.disconnect(properties=properties)
        again = session(args, f"{prefix}-sx", False, 3600)
        flags, _ = again.accepted()
        print(f"disconnect expiry {update}: session_present={int(flags.session_present)}")
        again.disconnect(properties=props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=0))


def connack(args, prefix):
    """What the CONNACK announces (this client asks for keep-alive 60 s), and the
    Session Expiry Interval it applies when the one asked for is over the maximum."""
    client = Client(args, prefix)
    _, properties = client.accepted()
    for name in ("ReceiveMaximum", "MaximumQoS", "RetainAvailable", "TopicAliasMaximum",
                 "MaximumPacketSize", "WildcardSubscriptionAvailable",
                 "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable",
                 "ServerKeepAlive", "SessionExpiryInterval"):
        print(f"{name}={getattr(properties, name, None)}")
    client.disconnect()
    for asked in (3600, 100000):
        client = session(args, f"{prefix}-sx", True, asked)
        _, properties = client.accepted()
        print(f"asked {asked}: SessionExpiryInterval={getattr(properties, 'SessionExpiryInterval', None)}")
        client.disconnect(properties=props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=0))


def expiry_bounds(args, prefix):
    """AWS adjusts a Message Expiry Interval of 0 to 1 and one over 7 days to 7 days."""
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    for topic, asked in (("test/mei0", 0), ("test/meimax", 700000)):
        pub.publish(topic, b"kept", retain=True,
                    properties=props(kind=PacketTypes.PUBLISH, MessageExpiryInterval=asked))
    sub = Client(args, f"{prefix}-sub")
    sub.accepted()
    for topic in ("test/mei0", "test/meimax"):
        sub.subscribe(topic)
        print(describe(sub.message()))
    sub.disconnect()
    pub.disconnect()


def cross_version(args, prefix):
    """An MQTT 3.1.1 persistent session is not resumed by an MQTT 5 connection, nor the
    other way round."""
    client_id = f"{prefix}-x"
    for first, second in ((311, 5), (5, 311)):
        if first == 5:
            old = session(args, client_id, True, 3600)
        else:
            old = Client(args, client_id, 311, clean=False)
        old.accepted()
        old.subscribe("test/x")
        old.disconnect()
        if second == 5:
            new = session(args, client_id, False, 3600)
        else:
            new = Client(args, client_id, 311, clean=False)
        flags, _ = new.accepted()
        print(f"{first} then {second}: session_present={int(flags.session_present)}")
        new.disconnect()
        # End both versions' sessions before the next round.
        Client(args, client_id, 311, clean=True).disconnect()


def will(args, prefix):
    """DISCONNECT 0x00 discards the will, 0x04 publishes it."""
    watch = Client(args, f"{prefix}-watch")
    watch.accepted()
    watch.subscribe("test/will")
    watch.subscribe("$aws/events/presence/disconnected/+")
    for code, name in ((0, "Normal disconnection"), (4, "Disconnect with will message")):
        client_id = f"{prefix}-{code}"
        client = Client(args, client_id, will=("test/will", f"bye-{code}".encode(), None))
        client.accepted()
        client.disconnect(reason=ReasonCode(PacketTypes.DISCONNECT, name))
        # The broker routes a will before the disconnected lifecycle event.
        while True:
            message = watch.message()
            if message.topic.startswith("$aws/events/"):
                print(f"disconnected {message.topic.rsplit('/', 1)[1]}")
                break
            print(f"will {message.payload.decode()}")
    watch.disconnect()


def will_delay(args, prefix):
    """MQTT 5 Will Delay Interval: the will waits out the delay; a reconnection within
    it discards the will."""
    import time

    watch = Client(args, f"{prefix}-watch")
    watch.accepted()
    watch.subscribe("test/will")

    def dying(name, delay):
        client = Client(args, f"{prefix}-{name}", 5, True,
                        props(kind=PacketTypes.CONNECT, SessionExpiryInterval=3600),
                        will=("test/will", name.encode(),
                              props(kind=PacketTypes.WILLMESSAGE, WillDelayInterval=delay)))
        client.accepted()
        return client

    def drop(client):
        # No DISCONNECT: the broker sees the connection end abnormally.
        client.client.loop_stop()
        client.client.socket().close()

    late = dying("late", 1)
    drop(late)
    dropped = time.monotonic()
    message = watch.message()
    print(f"will {message.payload.decode()} after_delay={time.monotonic() - dropped >= 1.0}")
    back = dying("back", 2)
    fence = dying("fence", 3)
    drop(back)
    drop(fence)
    again = session(args, f"{prefix}-back", False, 3600)
    flags, _ = again.accepted()
    print(f"back: session_present={int(flags.session_present)}")
    # "back"'s will, if published, would come a second before "fence"'s.
    print(f"next will {watch.message().payload.decode()}")
    again.disconnect(properties=props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    watch.disconnect()


def refusals(args, prefix):
    """What AWS refuses and how an MQTT 5 client hears it: a SUBSCRIBE with a
    subscription identifier (DISCONNECT 0xA1), a publish to a reserved topic AWS keeps
    (DISCONNECT 0x90), a will on such a topic (CONNACK 0x90)."""
    client = Client(args, f"{prefix}-subid")
    client.accepted()
    client.client.subscribe("test/id", qos=1,
                            properties=props(kind=PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    print(f"subscription identifier: disconnected {client.gone().value}")
    client = Client(args, f"{prefix}-reserved")
    client.accepted()
    client.client.publish("$aws/events/presence/connected/x", b"forged", qos=1)
    print(f"reserved topic: disconnected {client.gone().value}")
    client = Client(args, f"{prefix}-will", will=("$aws/events/x", b"bye", None))
    _, rc, _ = client.connack()
    print(f"reserved will topic: connack {rc.value}")


def wildcard_id(args, prefix):
    """A client id with `+` or `#` connects but gets no lifecycle events."""
    watch = Client(args, f"{prefix}-watch")
    watch.accepted()
    watch.subscribe("$aws/events/presence/connected/#")
    for client_id in (f"{prefix}+plus", f"{prefix}#hash", f"{prefix}-plain"):
        client = Client(args, client_id)
        client.accepted()
        client.disconnect()
    # Connected events arrive in order: the plain id's fences the other two.
    print(f"first connected event: {watch.message().topic.rsplit('/', 1)[1]}")
    watch.disconnect()


def dup(args, prefix):
    """A QoS 1 delivery a persistent session never acknowledged is sent again when it
    resumes, with DUP set and the same packet id (MQTT 3.1.1 §4.4)."""
    for version in (311, 5):
        client_id = f"{prefix}-dup{version}"

        def persistent(clean):
            if version == 5:
                return Client(args, client_id, 5, clean,
                              props(kind=PacketTypes.CONNECT, SessionExpiryInterval=3600),
                              manual_ack=True)
            return Client(args, client_id, 311, clean=False, manual_ack=True)

        sub = persistent(True)
        sub.accepted()
        sub.subscribe("test/dup")
        pub = Client(args, f"{prefix}-pub{version}", version)
        pub.accepted()
        pub.publish("test/dup", b"once")
        first = sub.message()
        sub.disconnect()  # without a PUBACK for it
        back = persistent(False)
        flags, _ = back.accepted()
        again = back.message()
        print(f"{version} session_present={int(flags.session_present)} first dup={int(first.dup)} "
              f"again {again.payload.decode()} dup={int(again.dup)} same_id={again.mid == first.mid}")
        back.client.ack(again.mid, again.qos)
        if version == 5:
            back.disconnect(properties=props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=0))
        else:
            back.disconnect()
            Client(args, client_id, 311, clean=True).disconnect()
        pub.disconnect()


def will_policy(args, prefix):
    """A will on a topic the policy does not let the client publish to refuses the
    CONNECT: MQTT 5 CONNACK 0x87, MQTT 3.1.1 closed without a CONNACK."""
    client = Client(args, f"{prefix}-5", 5, will=("denied/will", b"bye", None))
    _, rc, _ = client.connack()
    print(f"5 connack {rc.value}")
    client.client.loop_stop()
    client = Client(args, f"{prefix}-311", 311, will=("denied/will", b"bye", None))
    client.gone()
    client.client.loop_stop()
    print(f"311 closed, connacks={client.connacks.qsize()}")


def assigned_id(args, prefix):
    """An MQTT 5 client without a client id is assigned one; MQTT 3.1.1 is refused."""
    client = Client(args, "", 5)
    _, properties = client.accepted()
    assigned = getattr(properties, "AssignedClientIdentifier", "")
    print(f"5 assigned={bool(assigned)}")
    print(assigned, file=sys.stderr)
    client.disconnect()
    # paho answers the broker's refusal (return code 2) by connecting again with an id
    # of its own, so the refusal is seen by the broker's observer, not here.
    refused = Client(args, "", 311, clean=True)
    _, rc, _ = refused.connack()
    print(f"311 {rc.value} own_id={bool(refused.client._client_id)}")


def topic_alias(args, prefix):
    """Topic aliases 1..=8 set and used by the client; alias 9 is refused."""
    sub = Client(args, f"{prefix}-sub")
    sub.accepted()
    sub.subscribe("test/alias")
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    pub.publish("test/alias", b"set", properties=props(kind=PacketTypes.PUBLISH, TopicAlias=8))
    pub.publish("", b"used", properties=props(kind=PacketTypes.PUBLISH, TopicAlias=8))
    print(describe(sub.message()))
    print(describe(sub.message()))
    pub.client.publish("test/alias", b"x", qos=1, properties=props(kind=PacketTypes.PUBLISH, TopicAlias=9))
    print(f"alias 9: disconnected {pub.gone().value}")
    sub.disconnect()


def filters(args, prefix):
    """At most 8 filters granted in one SUBSCRIBE."""
    for version in (311, 5):
        client = Client(args, f"{prefix}-{version}", version)
        client.accepted()
        codes = client.subscribe([(f"test/f{n}", 1) for n in range(9)])
        print(f"{version} {codes}")
        client.disconnect()


def subscriptions(args, prefix):
    """At most 50 subscriptions per connection: SUBSCRIBEs of 8 filters, 56 in all."""
    for version in (311, 5):
        client = Client(args, f"{prefix}-{version}", version)
        client.accepted()
        codes = []
        for batch in range(7):
            codes += client.subscribe([(f"test/{batch}/{n}", 1) for n in range(8)])
        granted = sum(1 for code in codes if code == 1)
        print(f"{version} granted={granted} refused={sorted(set(codes[granted:]))}")
        client.disconnect()


def rate(args, prefix):
    """Per connection and second: publishes past 100 are dropped without a PUBACK (the
    connection stays), and past 512 KiB the client is read again the next second."""
    import time

    client = Client(args, f"{prefix}-rate")
    client.accepted()
    sent = [client.client.publish("test/rate", b"x", qos=1) for _ in range(101)]
    for info in sent[:100]:
        info.wait_for_publish(WAIT)
    # The next second's publish is acknowledged; a PUBACK for the 101st would have
    # come before it.
    time.sleep(1.1)
    client.publish("test/rate", b"next second")
    print(f"acked={sum(1 for info in sent if info.is_published())} of {len(sent)}")
    client.disconnect()
    client = Client(args, f"{prefix}-bytes")
    client.accepted()
    started = time.monotonic()
    sent = [client.client.publish("test/rate", b"x" * 128 * 1024, qos=1) for _ in range(5)]
    for info in sent:
        info.wait_for_publish(WAIT)
    print(f"5 x 128 KiB acked={all(info.is_published() for info in sent)} "
          f"over_a_second={time.monotonic() - started >= 1.0}")
    client.disconnect()


def dollar_id(args, prefix):
    """A client id starting with `$` is refused (AWS reserves the prefix)."""
    for version in (311, 5):
        client = Client(args, "$" + prefix, version)
        _, rc, _ = client.connack()
        print(f"{version} {rc.value} {rc}")


def shared_offline(args, prefix):
    """A shared group whose members are all offline persistent sessions queues QoS 1
    messages; a member that comes back gets them."""
    group = "$share/g/test/jobs"
    member = session(args, f"{prefix}-member", True, 3600)
    member.accepted()
    member.subscribe(group)
    member.disconnect()
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    for n in (1, 2):
        pub.publish("test/jobs", str(n).encode())
    back = session(args, f"{prefix}-member", False, 3600)
    flags, _ = back.accepted()
    print(f"session_present={int(flags.session_present)}")
    print(describe(back.message()))
    print(describe(back.message()))
    # Offline again; a new member joining the group takes what was queued meanwhile.
    back.disconnect()
    pub.publish("test/jobs", b"3")
    newcomer = Client(args, f"{prefix}-new")
    newcomer.accepted()
    newcomer.subscribe(group)
    print(f"newcomer {describe(newcomer.message())}")
    newcomer.disconnect()
    pub.disconnect()


def rap_offline(args, prefix):
    """Retain As Published holds for messages queued while a persistent session is away."""
    away = session(args, f"{prefix}-away", True, 3600)
    away.accepted()
    away.subscribe("test/rapq", SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2))
    away.disconnect()
    pub = Client(args, f"{prefix}-pub")
    pub.accepted()
    pub.publish("test/rapq", b"state", retain=True)
    pub.publish("test/rapq", b"live")
    back = session(args, f"{prefix}-away", False, 3600)
    back.accepted()
    print(describe(back.message()))
    print(describe(back.message()))
    pub.publish("test/rapq", b"", retain=True)
    back.disconnect(properties=props(kind=PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    pub.disconnect()


ACTIONS = {
    "hash-parent": hash_parent,
    "retained": retained,
    "expiry": expiry,
    "session-expiry": session_expiry,
    "connack": connack,
    "will": will,
    "assigned-id": assigned_id,
    "will-delay": will_delay,
    "refusals": refusals,
    "wildcard-id": wildcard_id,
    "dup": dup,
    "will-policy": will_policy,
    "topic-alias": topic_alias,
    "filters": filters,
    "dollar-id": dollar_id,
    "subscriptions": subscriptions,
    "rate": rate,
    "shared-offline": shared_offline,
    "rap-offline": rap_offline,
    "expiry-bounds": expiry_bounds,
    "cross-version": cross_version,
}


def main():
    action, host, port, ca, cert, key, prefix = sys.argv[1:8]
    try:
        ACTIONS[action]((host, port, ca, cert, key), prefix)
    except Failed as failure:
        print(f"{action}: {failure}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
