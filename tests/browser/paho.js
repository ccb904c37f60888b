// The Eclipse Paho JavaScript client (npm paho-mqtt 1.1.0, global `Paho`) behind the small
// interface scenario.js drives: connect, subscribe, publish, onMessage, disconnect.

export function connect({ url, clientId, will, timeoutMs }) {
  const client = new Paho.Client(url, clientId); // a full ws:// or wss:// URI, path included
  const listeners = [];
  client.onMessageArrived = (m) => {
    for (const f of listeners) {
      f({ topic: m.destinationName, payload: m.payloadString, qos: m.qos, retain: m.retained });
    }
  };
  const options = {
    mqttVersion: 4,
    cleanSession: true,
    keepAliveInterval: 30,
    timeout: Math.ceil(timeoutMs / 1000),
    reconnect: false,
  };
  if (will) {
    const w = new Paho.Message(will.payload);
    w.destinationName = will.topic;
    w.qos = will.qos;
    w.retained = false;
    options.willMessage = w;
  }
  return new Promise((resolve, reject) => {
    client.onConnectionLost = (e) =>
      console.log(`paho ${clientId}: connection lost: ${e.errorMessage}`);
    options.onSuccess = () =>
      resolve({
        subscribe: (topic, qos) =>
          new Promise((ok, fail) =>
            client.subscribe(topic, {
              qos,
              timeout: Math.ceil(timeoutMs / 1000),
              onSuccess: (r) => ok(r.grantedQos[0]), // one filter, one return code
              onFailure: (e) => fail(new Error(`SUBSCRIBE ${topic} failed: ${JSON.stringify(e)}`)),
            })
          ),
        // Paho queues the PUBLISH and acknowledges it on its own; the scenario waits for the
        // message to come back instead.
        publish: async (topic, payload, qos) => client.publish(topic, payload, qos, false),
        onMessage: (f) => listeners.push(f),
        disconnect: () => client.disconnect(),
      });
    options.onFailure = (e) => reject(new Error(`code ${e.errorCode}: ${e.errorMessage}`));
    client.connect(options);
  });
}
