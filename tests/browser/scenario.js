// What the browser test does with each client library. The query string says:
//   client=paho|mqttjs  url=ws://…/mqtt or wss://…/mqtt  run=<id>  report=<path on this server>
//   [expect=refused: only try to connect, and report why it failed]
//   [scenario=v5-…: one of the MQTT 5 scenarios of scenario5.js instead (MQTT.js only); they
//    report the same way, with what they saw in fields of their own beside `error`]
// The page reports to the test server, in order: every console line (POST <report>/log) and
// at the end one JSON object of what it saw (POST <report>/result):
//   {granted: [QoS granted per SUBSCRIBE], received: [{topic, payload, qos, retain}], error}
// The test compares those with what the broker should have done.
//
// The will client runs in an iframe (role=will): removing the iframe closes its WebSocket the
// way closing a tab does, with no MQTT DISCONNECT, and the broker must publish its will.

import * as paho from "./paho.js";
import * as mqttjs from "./mqttjs.js";
import { scenarios as v5 } from "./scenario5.js";

const STEP_MS = 10000;
const params = new URLSearchParams(location.search);
const lib = { paho, mqttjs }[params.get("client")];
const url = params.get("url");
const run = params.get("run");
const topics = {
  echo: "lab/browser/echo",
  retained: "lab/browser/retained",
  will: "lab/browser/will",
};

function withTimeout(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${STEP_MS} ms`)), STEP_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// Resolves once `cond()` holds (checked every 20 ms), within STEP_MS.
function until(cond, what) {
  let poll;
  const holds = new Promise((resolve) => {
    poll = setInterval(() => cond() && resolve(), 20);
  });
  return withTimeout(holds, `waiting for ${what}`).finally(() => clearInterval(poll));
}

// Anything else (a duplicate, a late DISCONNECT) would show in the report.
const settle = () => new Promise((r) => setTimeout(r, 300));

if (params.get("role") === "will") {
  // Client A: connects with a will, says so to the page that holds the iframe, then waits to
  // be removed.
  const tell = (msg) => parent.postMessage(msg, location.origin);
  lib
    .connect({
      url,
      clientId: `${run}-a`,
      will: { topic: topics.will, payload: "tab closed", qos: 1 },
      timeoutMs: STEP_MS,
    })
    .then(
      () => tell({ connected: true }),
      (e) => tell({ connected: false, error: e.message })
    );
} else {
  main();
}

async function main() {
  const report = params.get("report");
  let posting = Promise.resolve();
  const post = (kind, body) => {
    const send = () => fetch(`${report}/${kind}`, { method: "POST", body }).catch(() => {});
    posting = posting.then(send);
    return posting;
  };
  const out = document.getElementById("log");
  for (const level of ["log", "info", "warn", "error"]) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      const line = `${new Date().toISOString()} ${level}: ${args.join(" ")}`;
      out.textContent += line + "\n";
      post("log", line);
      original(...args);
    };
  }
  addEventListener("error", (e) =>
    console.error(`uncaught: ${e.message} at ${e.filename}:${e.lineno}`)
  );
  addEventListener("unhandledrejection", (e) => console.error(`unhandled rejection: ${e.reason}`));

  const result = { granted: [], received: [], error: null };
  try {
    if (!lib) throw new Error(`unknown client ${params.get("client")}`);
    const name = params.get("scenario");
    if (name === null) {
      await scenario(result, params.get("expect") === "refused");
    } else {
      if (!v5[name] || lib !== mqttjs) throw new Error(`no scenario ${name} for this client`);
      await v5[name](result, { url, run, stepMs: STEP_MS, step: withTimeout, until, settle });
    }
  } catch (e) {
    result.error = e.message;
    console.error(e.stack || e.message);
  }
  await post("result", JSON.stringify(result));
}

async function scenario(result, expectRefused) {
  const received = result.received;
  const waiters = [];
  const arrived = (n, what) =>
    withTimeout(
      new Promise((resolve) => {
        const check = () => (received.length >= n ? (resolve(), true) : false);
        if (!check()) waiters.push(check);
      }),
      `waiting for ${what}`
    );

  console.log(`client B (${params.get("client")}) connects to ${url}`);
  let b;
  try {
    const connecting = lib.connect({ url, clientId: `${run}-b`, timeoutMs: STEP_MS });
    b = await withTimeout(connecting, "CONNACK");
  } catch (e) {
    throw new Error(`connect failed: ${e.message}`);
  }
  if (expectRefused) {
    throw new Error("connected, but the broker's certificate should not be trusted");
  }
  b.onMessage((m) => {
    console.log(`received ${m.topic} ${JSON.stringify(m.payload)} qos=${m.qos} retain=${m.retain}`);
    received.push(m);
    for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i]()) waiters.splice(i, 1);
  });

  for (const t of [topics.echo, topics.will, topics.retained]) {
    result.granted.push(await withTimeout(b.subscribe(t, 2), `SUBACK for ${t}`));
  }
  // Set by the test over plain MQTT before the page loaded.
  await arrived(1, "the retained message");

  for (const qos of [0, 1, 2]) {
    console.log(`publishing at QoS ${qos}`);
    const before = received.length;
    const publishing = b.publish(topics.echo, `qos ${qos}`, qos);
    await withTimeout(publishing, `the broker's answer to PUBLISH QoS ${qos}`);
    await arrived(before + 1, `the QoS ${qos} message back`);
  }

  console.log("client A connects with a will, in an iframe");
  const frame = document.createElement("iframe");
  const answer = new Promise((resolve) => {
    addEventListener("message", function once(e) {
      if (e.source !== frame.contentWindow) return;
      removeEventListener("message", once);
      resolve(e.data);
    });
  });
  const frameParams = new URLSearchParams({ client: params.get("client"), url, run, role: "will" });
  frame.src = `index.html?${frameParams}`;
  document.body.append(frame);
  const a = await withTimeout(answer, "client A's CONNACK");
  if (!a.connected) throw new Error(`client A: connect failed: ${a.error}`);
  console.log("client A connected; removing its iframe (no DISCONNECT)");
  const before = received.length;
  frame.remove();
  await arrived(before + 1, "client A's will");

  await settle();
  b.disconnect();
}
