#!/usr/bin/env python3
"""Local MQTT clients for tests/local.rs, written with paho-mqtt 2.x.

    paho_client.py respond ADDR REQUEST_TOPIC
        MQTT 5: subscribe to REQUEST_TOPIC, print "ready" once subscribed,
        then answer every request on its response topic with the same
        correlation data and the payload "pong:" + the request's, and print
        "answered HEX" (the correlation data, hex). Runs until killed.
    paho_client.py request ADDR REQUEST_TOPIC RESPONSE_TOPIC CORRELATION_HEX
        MQTT 5: subscribe to RESPONSE_TOPIC, then publish "ping" (QoS 1) to
        REQUEST_TOPIC with that response topic and correlation data; print
        "response PAYLOAD correlation HEX" for the answer and exit 0.
    paho_client.py pubsub311 ADDR TOPIC PAYLOAD
        MQTT 3.1.1: subscribe to TOPIC (QoS 1), publish PAYLOAD to it (QoS 1),
        print "got TOPIC PAYLOAD" when it comes back and exit 0.

ADDR is a UNIX socket path, or HOST:PORT for TCP. Every wait has a deadline
(20 s): past it the script prints what it waited for and exits 1.
"""

import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEADLINE = 20.0


def fail(what):
    print(f"timed out waiting for {what}", flush=True)
    sys.exit(1)


def wait(event, what):
    if not event.wait(DEADLINE):
        fail(what)


def client(addr, client_id, protocol):
    unix = ":" not in addr
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport="unix" if unix else "tcp",
    )
    connected = threading.Event()
    subscribed = threading.Event()
    granted = []

    def on_connect(_c, _u, _flags, reason_code, _props):
        if reason_code.is_failure:
            print(f"connect refused: {reason_code}", flush=True)
            sys.exit(1)
        connected.set()

    def on_subscribe(_c, _u, _mid, codes, _props):
        granted.extend(codes)
        subscribed.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    if unix:
        c.connect(addr)
    else:
        host, port = addr.rsplit(":", 1)
        c.connect(host, int(port))
    c.loop_start()
    wait(connected, "CONNACK")
    return c, subscribed, granted


def subscribe(c, subscribed, granted, topic):
    c.subscribe(topic, qos=1)
    wait(subscribed, f"SUBACK for {topic}")
    if any(code.is_failure for code in granted):
        print(f"subscription to {topic} refused: {granted}", flush=True)
        sys.exit(1)


def respond(addr, request_topic):
    c, subscribed, granted = client(addr, "paho-responder", mqtt.MQTTv5)

    def on_message(cl, _u, msg):
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        if response_topic is None:
            print(f"request without response topic on {msg.topic}", flush=True)
            return
        answer = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            answer.CorrelationData = correlation
        cl.publish(response_topic, b"pong:" + msg.payload, qos=1, properties=answer)
        print(f"answered {(correlation or b'').hex()}", flush=True)

    c.on_message = on_message
    subscribe(c, subscribed, granted, request_topic)
    print("ready", flush=True)
    threading.Event().wait()


def request(addr, request_topic, response_topic, correlation_hex):
    c, subscribed, granted = client(addr, "paho-requester", mqtt.MQTTv5)
    answered = threading.Event()
    got = []

    def on_message(_c, _u, msg):
        if msg.topic == response_topic:
            got.append(msg)
            answered.set()

    c.on_message = on_message
    subscribe(c, subscribed, granted, response_topic)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = bytes.fromhex(correlation_hex)
    c.publish(request_topic, b"ping", qos=1, properties=props).wait_for_publish(DEADLINE)
    wait(answered, f"a response on {response_topic}")
    msg = got[0]
    correlation = getattr(msg.properties, "CorrelationData", b"") or b""
    print(f"response {msg.payload.decode()} correlation {correlation.hex()}", flush=True)
    c.disconnect()
    c.loop_stop()


def pubsub311(addr, topic, payload):
    c, subscribed, granted = client(addr, "paho-311", mqtt.MQTTv311)
    received = threading.Event()
    got = []

    def on_message(_c, _u, msg):
        got.append(msg)
        received.set()

    c.on_message = on_message
    subscribe(c, subscribed, granted, topic)
    c.publish(topic, payload.encode(), qos=1).wait_for_publish(DEADLINE)
    wait(received, f"the message back on {topic}")
    msg = got[0]
    print(f"got {msg.topic} {msg.payload.decode()}", flush=True)
    c.disconnect()
    c.loop_stop()


def main(argv):
    modes = {"respond": (respond, 2), "request": (request, 4), "pubsub311": (pubsub311, 3)}
    if len(argv) < 2 or argv[1] not in modes or len(argv) - 2 != modes[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = modes[argv[1]]
    fn(*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
