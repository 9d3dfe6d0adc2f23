// A Pepr module's store, as a TypeScript Pepr pod runs it: npm `pepr`'s own
// PeprModule and StoreController, against the cluster in KUBECONFIG.
//
// Usage: node peer.js <module-uuid> <capability>...
// Reads one JSON command per line on stdin and answers one line per command on
// stdout, prefixed `@@ ` (Pepr's own logs go to stdout too):
//   {"op":"get","cap":"c","key":"k"}                -> {"value":"..."|null}
//   {"op":"set","cap":"c","key":"k","value":"v"}    -> {"ok":true}
//   {"op":"setAndWait","cap":"c","key":"k","value":"v"} -> {"ok":true}|{"error":"..."}
//   {"op":"remove","cap":"c","key":"k"}             -> {"ok":true}
//   {"op":"waitFor","cap":"c","key":"k","value":"v","timeoutMs":n}
//                                                    -> {"ok":true}|{"error":"..."}
//     (answers once getItem(k) is v, checked every millisecond)
// and prints `@@ {"ready":true}` once every capability's store is ready.
"use strict";

const readline = require("node:readline");
const { Capability, PeprModule } = require("pepr");

const [uuid, ...names] = process.argv.slice(2);
if (!uuid || names.length === 0) {
  process.stderr.write("usage: node peer.js <module-uuid> <capability>...\n");
  process.exit(2);
}

const say = (message) => process.stdout.write(`@@ ${JSON.stringify(message)}\n`);

const capabilities = names.map((name) => new Capability({ name, description: name }));
const stores = Object.fromEntries(capabilities.map((c) => [c.name, c.Store]));

let waiting = names.length;
for (const capability of capabilities) {
  capability.Store.onReady(() => {
    waiting -= 1;
    if (waiting === 0) say({ ready: true });
  });
}

new PeprModule(
  {
    description: "store-kube test peer",
    pepr: {
      uuid,
      onError: "reject",
      webhookTimeout: 10,
      alwaysIgnore: { namespaces: [] },
    },
  },
  capabilities,
  { deferStart: true },
);

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    say({ error: `bad command: ${e}` });
    return;
  }
  const store = stores[command.cap];
  if (!store) {
    say({ error: `no capability ${command.cap}` });
    return;
  }
  try {
    switch (command.op) {
      case "get":
        say({ value: store.getItem(command.key) });
        break;
      case "set":
        store.setItem(command.key, command.value);
        say({ ok: true });
        break;
      case "setAndWait":
        await store.setItemAndWait(command.key, command.value);
        say({ ok: true });
        break;
      case "waitFor": {
        const until = Date.now() + (command.timeoutMs ?? 60000);
        while (store.getItem(command.key) !== command.value) {
          if (Date.now() > until) throw new Error(`${command.key} never read ${command.value}`);
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        say({ ok: true });
        break;
      }
      case "remove":
        store.removeItem(command.key);
        say({ ok: true });
        break;
      default:
        say({ error: `unknown op ${command.op}` });
    }
  } catch (e) {
    say({ error: String(e) });
  }
});
lines.on("close", () => process.exit(0));
