// The browser test's MQTT 5 scenarios: MQTT.js with protocolVersion 5 (Paho JavaScript has no
// MQTT 5). scenario.js runs the one the query string names (scenario=v5-…) with the same
// reporting; each puts what it saw in the result object, and the test
// (tests/interop/test_browser.py) compares it with what the broker should have done. Nothing
// is judged here: a wrong reason code is reported, not thrown.
//
//   v5-properties  a publisher's QoS 1 message properties reach an MQTT 5 subscriber intact
//   v5-refusals    the topic list's refusals as reason codes (SUBACK 0x8F, PUBACK/PUBREC 0x90)
//   v5-takeover    a client whose id another client takes gets DISCONNECT 0x8E first
//   v5-aliases     topic aliases both ways: MQTT.js's to the broker, the broker's to MQTT.js

import * as mqttjs from "./mqttjs.js";

const ECHO = "lab/browser/echo";
const LISTED_QUIET = "lab/browser/will"; // on the topic list; no one subscribes to it here
const UNLISTED = "lab/browser/unlisted";
const UNLISTED_FILTER = "nowhere/#";

// What the publisher attaches, and the subscriber must get as it was sent.
const PUBLISH_PROPERTIES = {
  payloadFormatIndicator: true,
  messageExpiryInterval: 3600,
  contentType: "application/json",
  responseTopic: "lab/browser/reply",
  correlationData: new Uint8Array([0x00, 0xff, 0x80, 0x7f, 0x72, 0x65, 0x71]),
  userProperties: { unit: "C", room: ["lab 2", "lab 3"] },
};

function connect5(ctx, name, options) {
  const clientId = `${ctx.run}-${name}`;
  console.log(`${name} (MQTT.js, MQTT 5) connects to ${ctx.url} as ${clientId}`);
  return ctx.step(
    mqttjs.connect({ url: ctx.url, clientId, version: 5, timeoutMs: ctx.stepMs, options }),
    `${name}'s CONNACK`
  );
}

// Keeps what a client receives in `list`; the function returned waits for the n-th.
function collect(ctx, client, list, name) {
  client.onMessage((m) => {
    console.log(`${name} received ${m.topic} ${JSON.stringify(m.payload)} qos=${m.qos}`);
    list.push(m);
  });
  return (n, what) => ctx.until(() => list.length >= n, what);
}

export const scenarios = {
  async "v5-properties"(result, ctx) {
    const sub = await connect5(ctx, "subscriber");
    result.connack = sub.connack;
    result.received = [];
    const arrived = collect(ctx, sub, result.received, "subscriber");
    result.suback = await ctx.step(sub.subscribe(ECHO, 1, { withCodes: true }), "SUBACK");

    const pub = await connect5(ctx, "publisher");
    console.log("publisher publishes at QoS 1 with properties");
    result.publish = await ctx.step(
      pub.publish(ECHO, '{"temp": 21.5}', 1, { withCodes: true, properties: PUBLISH_PROPERTIES }),
      "PUBACK"
    );
    await arrived(1, "the message on the subscriber");
    await ctx.settle();
    pub.disconnect();
    sub.disconnect();
  },

  async "v5-refusals"(result, ctx) {
    const c = await connect5(ctx, "client");
    result.connack = c.connack;
    result.received = [];
    const arrived = collect(ctx, c, result.received, "client");
    // One SUBSCRIBE, a listed filter and one no topic on the list matches: a code for each.
    result.suback = await ctx.step(
      c.subscribe([ECHO, UNLISTED_FILTER], 1, { withCodes: true }),
      "SUBACK"
    );
    result.publish = {};
    for (const [name, topic, qos] of [
      ["unlisted qos 1", UNLISTED, 1],
      ["unlisted qos 2", UNLISTED, 2],
      ["no subscribers qos 1", LISTED_QUIET, 1],
      ["subscribed qos 1", ECHO, 1],
    ]) {
      console.log(`publishing to ${topic} at QoS ${qos}`);
      result.publish[name] = await ctx.step(
        c.publish(topic, name, qos, { withCodes: true }),
        `the answer to PUBLISH ${name}`
      );
    }
    // The refusals closed nothing: the one message to a listed topic comes back.
    await arrived(1, "the message to the subscribed topic");
    result.unsuback = await ctx.step(c.unsubscribe(["lab/browser/retained"]), "UNSUBACK");
    await ctx.settle();
    result.stillConnected = c.connected();
    result.disconnects = c.disconnects;
    c.disconnect();
  },

  async "v5-takeover"(result, ctx) {
    const first = await connect5(ctx, "same");
    result.connack = first.connack;
    console.log("a second client connects with the same client id");
    const second = await connect5(ctx, "same");
    result.secondConnack = second.connack;
    await ctx.until(() => first.disconnects.length > 0, "the first client's DISCONNECT");
    await ctx.until(() => !first.connected(), "the first client's connection to close");
    await ctx.settle();
    result.disconnects = first.disconnects;
    // The newcomer is the session now, and is answered.
    result.secondPublish = await ctx.step(
      second.publish(ECHO, "after the takeover", 1, { withCodes: true }),
      "PUBACK to the second client"
    );
    result.secondDisconnects = second.disconnects;
    result.secondConnected = second.connected();
    second.disconnect();
  },

  async "v5-aliases"(result, ctx) {
    // The subscriber takes up to 5 aliases from the broker; the publisher gives the broker an
    // alias for each topic it publishes to (as many as the broker's CONNACK allows).
    const sub = await connect5(ctx, "subscriber", { properties: { topicAliasMaximum: 5 } });
    result.received = [];
    const arrived = collect(ctx, sub, result.received, "subscriber");
    result.suback = await ctx.step(sub.subscribe(ECHO, 1, { withCodes: true }), "SUBACK");
    const pub = await connect5(ctx, "publisher", { autoAssignTopicAlias: true });
    result.publisherConnack = pub.connack;
    result.publish = [];
    for (let i = 1; i <= 3; i++) {
      result.publish.push(
        await ctx.step(pub.publish(ECHO, `aliased ${i}`, 1, { withCodes: true }), `PUBACK ${i}`)
      );
      await arrived(i, `message ${i} on the subscriber`);
    }
    await ctx.settle();
    result.sent = pub.wire.filter((w) => w.dir === "out");
    result.wire = sub.wire.filter((w) => w.dir === "in");
    result.disconnects = [...pub.disconnects, ...sub.disconnects];
    pub.disconnect();
    sub.disconnect();
  },
};
