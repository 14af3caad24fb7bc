// A local MQTT client for tests/local.rs, written with mqtt.js 5 (Node.js).
//
//     node mqttjs_roundtrip.js URL VERSION TOPIC PAYLOAD
//
// URL: mqtt://127.0.0.1:PORT (TCP) or mqtt+unix:///path/to/socket.
// VERSION: 4 (MQTT 3.1.1) or 5. Subscribes to TOPIC (QoS 1), publishes
// PAYLOAD to it (QoS 1) once subscribed, prints "granted N" and then
// "got TOPIC PAYLOAD" when the message comes back, and exits 0. Any error,
// or no message within 20 s, exits 1 saying why.
"use strict";

const mqtt = require("mqtt");

const [url, version, topic, payload] = process.argv.slice(2);
if (!payload) {
  console.error("usage: mqttjs_roundtrip.js URL VERSION TOPIC PAYLOAD");
  process.exit(2);
}

const timer = setTimeout(() => {
  console.log("timed out waiting for the message to come back");
  process.exit(1);
}, 20000);

const client = mqtt.connect(url, {
  protocolVersion: Number(version),
  clientId: `mqttjs-v${version}`,
  clean: true,
  reconnectPeriod: 0,
});

client.on("error", (err) => {
  console.log(`error: ${err.message}`);
  process.exit(1);
});

client.on("connect", () => {
  client.subscribe(topic, { qos: 1 }, (err, granted) => {
    if (err) {
      console.log(`subscribe failed: ${err.message}`);
      process.exit(1);
    }
    console.log(`granted ${granted.map((g) => g.qos).join(",")}`);
    client.publish(topic, payload, { qos: 1 }, (perr) => {
      if (perr) {
        console.log(`publish failed: ${perr.message}`);
        process.exit(1);
      }
    });
  });
});

client.on("message", (t, p) => {
  console.log(`got ${t} ${p.toString()}`);
  clearTimeout(timer);
  client.end(false, () => process.exit(0));
});
