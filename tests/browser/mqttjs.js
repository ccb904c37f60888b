// MQTT.js (npm mqtt 5.x, its browser bundle dist/mqtt.min.js, global `mqtt`) in MQTT 3.1.1 mode,
// behind the small interface scenario.js drives: connect, subscribe, publish, onMessage,
// disconnect.

export function connect({ url, clientId, will, timeoutMs }) {
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    clientId,
    clean: true,
    keepalive: 30,
    connectTimeout: timeoutMs,
    reconnectPeriod: 0,
    will: will && { topic: will.topic, payload: will.payload, qos: will.qos, retain: false },
  });
  const listeners = [];
  client.on("message", (topic, payload, packet) => {
    for (const f of listeners) {
      f({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
    }
  });
  return new Promise((resolve, reject) => {
    client.once("connect", () => {
      client.on("error", (e) => console.log(`mqtt.js ${clientId}: error: ${e.message}`));
      client.on("close", () => console.log(`mqtt.js ${clientId}: connection closed`));
      resolve({
        subscribe: (topic, qos) =>
          new Promise((ok, fail) =>
            client.subscribe(topic, { qos }, (err, granted) => {
              if (err) fail(new Error(`SUBSCRIBE ${topic} failed: ${err.message}`));
              else ok(granted[0].qos);
            })
          ),
        // Resolves once the broker has answered: at once for QoS 0, on PUBACK for 1, on PUBCOMP
        // for 2.
        publish: (topic, payload, qos) =>
          new Promise((ok, fail) =>
            client.publish(topic, payload, { qos, retain: false }, (err) =>
              err ? fail(err) : ok()
            )
          ),
        onMessage: (f) => listeners.push(f),
        disconnect: () => client.end(),
      });
    });
    client.once("error", (e) => reject(new Error(e.message)));
    client.once("close", () => reject(new Error("the connection closed before CONNACK")));
  });
}
