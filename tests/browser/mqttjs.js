// MQTT.js (npm mqtt 5.x, its browser bundle dist/mqtt.min.js, global `mqtt`), in MQTT 3.1.1
// mode, or MQTT 5 with `version: 5`, behind the small interface scenario.js drives: connect,
// subscribe, publish, onMessage, disconnect. The MQTT 5 scenarios (scenario5.js) also see what
// only MQTT 5 has: the CONNACK's properties, every answer's reason codes and properties, the
// messages' properties and the broker's DISCONNECT.

// What MQTT.js parsed, as JSON the test can compare: Buffers (correlation data) as byte arrays.
const plain = (value) =>
  JSON.parse(JSON.stringify(value ?? null, (_, v) => (v?.type === "Buffer" ? v.data : v)));

// `options`: more of MQTT.js's connect options (MQTT 5 CONNECT properties, topic alias use).
export function connect({ url, clientId, will, timeoutMs, version = 4, options }) {
  const client = mqtt.connect(url, {
    protocolVersion: version,
    clientId,
    clean: true,
    keepalive: 30,
    connectTimeout: timeoutMs,
    reconnectPeriod: 0,
    will: will && { topic: will.topic, payload: will.payload, qos: will.qos, retain: false },
    ...options,
  });
  const listeners = [];
  client.on("message", (topic, payload, packet) => {
    const m = { topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain };
    if (version === 5) m.properties = plain(packet.properties ?? {});
    for (const f of listeners) f(m);
  });
  // Every PUBLISH each way as it is on the wire (before MQTT.js resolves a topic alias), and
  // the acknowledgements of ours by packet id, as they come in: MQTT.js emits 'packetreceive'
  // before it handles a packet, so publish()'s callback finds them here.
  const wire = [];
  const acks = new Map();
  const onWire = (dir) => (p) => {
    if (p.cmd === "publish") {
      wire.push({ dir, topic: p.topic.toString(), alias: p.properties?.topicAlias ?? null });
    }
  };
  client.on("packetsend", onWire("out"));
  client.on("packetreceive", onWire("in"));
  client.on("packetreceive", (p) => {
    if (["puback", "pubrec", "pubcomp"].includes(p.cmd)) {
      if (!acks.has(p.messageId)) acks.set(p.messageId, []);
      acks.get(p.messageId).push(ack(p));
    }
  });
  const disconnects = [];
  return new Promise((resolve, reject) => {
    client.once("connect", (connack) => {
      client.on("error", (e) => console.log(`mqtt.js ${clientId}: error: ${e.message}`));
      client.on("close", () => console.log(`mqtt.js ${clientId}: connection closed`));
      client.on("disconnect", (p) => {
        console.log(`mqtt.js ${clientId}: DISCONNECT from the broker, reason ${p.reasonCode}`);
        disconnects.push(ack(p));
      });
      resolve({
        // 3.1.1: the QoS granted. MQTT 5 (`withCodes`): the SUBACK's reason codes, refusals
        // included (MQTT.js fails the callback when one has bit 7 set, with the SUBACK in the
        // error), and that error's message.
        subscribe: (topic, qos, { withCodes = false } = {}) =>
          new Promise((ok, fail) =>
            client.subscribe(topic, { qos }, (err, granted, suback) => {
              const packet = suback ?? err?.packet;
              if (withCodes && packet) {
                ok({ granted: packet.granted, error: err?.message ?? null });
              } else if (err) {
                fail(new Error(`SUBSCRIBE ${topic} failed: ${err.message}`));
              } else {
                ok(granted[0].qos);
              }
            })
          ),
        // Resolves once the broker has answered: at once for QoS 0, on PUBACK for 1, on PUBCOMP
        // for 2. MQTT 5 (`withCodes`): resolves, instead of failing, with the acknowledgements
        // the broker sent for it and MQTT.js's error (it fails the callback on a reason code
        // of 0x80 or more, with the code).
        publish: (topic, payload, qos, { withCodes = false, properties } = {}) =>
          new Promise((ok, fail) =>
            client.publish(topic, payload, { qos, retain: false, properties }, (err, packet) => {
              if (!withCodes) return err ? fail(err) : ok();
              const id = packet?.messageId;
              const got = acks.get(id) ?? [];
              acks.delete(id);
              const error = err ? { message: err.message, code: err.code ?? null } : null;
              ok({ acks: got, error });
            })
          ),
        onMessage: (f) => listeners.push(f),
        disconnect: () => client.end(),
        // MQTT 5 only: the UNSUBACK's reason codes.
        unsubscribe: (topic) =>
          new Promise((ok, fail) =>
            client.unsubscribe(topic, (err, unsuback) =>
              err
                ? fail(new Error(`UNSUBSCRIBE ${topic} failed: ${err.message}`))
                : ok(unsuback?.granted ?? null)
            )
          ),
        // MQTT 5 only: the CONNACK, the broker's DISCONNECTs, the PUBLISHes on the wire.
        connack: {
          sessionPresent: connack.sessionPresent,
          reasonCode: connack.reasonCode ?? null,
          properties: plain(connack.properties ?? {}),
        },
        disconnects,
        wire,
        connected: () => client.connected,
      });
    });
    client.once("error", (e) => reject(new Error(e.message)));
    client.once("close", () => reject(new Error("the connection closed before CONNACK")));
  });
}

// An acknowledgement or a DISCONNECT, as the test compares it: its type, reason code and
// properties (a Reason String, say).
function ack(p) {
  return { cmd: p.cmd, reasonCode: p.reasonCode ?? null, properties: plain(p.properties ?? {}) };
}
