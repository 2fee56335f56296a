// Security review #7 with a real browser: every pod host is a subdomain
// of one site, so a page on another tenant's pod (a public port) is
// "same-site" with the victim's pod and SameSite=Lax does not keep the
// victim's pod cookie off its requests. The proxy must refuse the cookie
// on cross-origin writes and WebSocket upgrades. Debian's Chromium signs
// Alice in to her pod, then visits Bob's page, which POSTs (fetch and a
// form) and opens a WebSocket to Alice's pod; the request logger in
// Alice's pod must see none of it, while Alice's own page still can.
//
//   node --test web/e2e/security-csrf.test.mjs   (as root, after scripts/test.sh built everything)

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { call, launchChromium, startPinacle } from "./harness.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let pinacle;
let chrome;
let alice;
let bob;

before(async () => {
  pinacle = await startPinacle({ bridge: "pncsec4", subnet: "10.231.144.0/24" });
  alice = await pinacle.signup("alice");
  bob = await pinacle.signup("bob");
  chrome = await launchChromium();
});

after(async () => {
  await chrome?.close();
  await pinacle?.stop();
});

/** Runs `script` with `sh -c` in `pod` as the owner of `token`: its stdout. */
async function exec(token, pod, script, stdin) {
  const r = await fetch(`${pinacle.api}/api/v1/pods/${pod}/exec`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ command: ["sh", "-c", script], ...(stdin === undefined ? {} : { stdin }) }),
  });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  let out = "";
  let code = null;
  for (const line of text.split("\n").filter(Boolean)) {
    const v = JSON.parse(line);
    if ("exit_code" in v) code = v.exit_code;
    else if (v.stream === "stdout") out += Buffer.from(v.data, "base64").toString();
  }
  assert.equal(code, 0, `${script} failed`);
  return out;
}

async function createRunning(token, name) {
  await call(pinacle.api, token, "POST", "/api/v1/pods", { name, template: "minimal", runtime: "runsc" });
  for (let i = 0; ; i++) {
    const pod = await call(pinacle.api, token, "GET", `/api/v1/pods/${name}`);
    if (pod.state === "running") return pod;
    if (pod.state === "error" || i > 1200) throw new Error(`pod ${name} did not start: ${JSON.stringify(pod)}\n${pinacle.log()}`);
    await sleep(100);
  }
}

// busybox httpd's CGI: logs each request (method, query, Origin) in the pod.
// (It reads the body first: a server that closes with unread input resets
// the connection.)
const LOGGER = `#!/bin/sh
cat > /dev/null
echo "$REQUEST_METHOD $QUERY_STRING origin=$HTTP_ORIGIN" >> /workspace/req.log
printf 'Content-Type: text/plain\\r\\n\\r\\nlogged\\n'
`;

test("a page on another pod's host cannot drive the victim's pod with the victim's cookie", { timeout: 300_000 }, async () => {
  const port = pinacle.proxyPort;
  const victim = `http://8080-app-alice.pinacle.localhost:${port}`;
  const attacker = `http://8080-evil-bob.pinacle.localhost:${port}`;

  // Alice's pod: the request logger on port 8080 (signed-in users only).
  await createRunning(alice, "app");
  await exec(alice, "app", "mkdir -p /workspace/cgi-bin && cat > /workspace/cgi-bin/log && chmod 755 /workspace/cgi-bin/log", LOGGER);
  await exec(alice, "app", "echo '<!doctype html><title>app</title><p>alice' > /workspace/index.html && busybox httpd -p 8080 -h /workspace");
  // Bob's pod: a public page that attacks Alice's pod as soon as it loads.
  const attack = `<!doctype html><title>evil</title>
<iframe name="sink"></iframe>
<form id="f" target="sink" method="POST" action="${victim}/cgi-bin/log?attack-form"><input name="a" value="b"></form>
<script>
window.results = {};
fetch("${victim}/cgi-bin/log?attack-fetch", { method: "POST", mode: "no-cors", credentials: "include", body: "x" })
  .then(() => (results.fetch = "sent"), (e) => (results.fetch = "error " + e));
const ws = new WebSocket("${victim.replace("http:", "ws:")}/cgi-bin/log?attack-ws");
ws.onopen = () => (results.ws = "open");
ws.onerror = () => (results.ws = results.ws || "error");
ws.onclose = () => (results.ws = results.ws || "closed");
document.getElementById("f").submit();
</script>`;
  await createRunning(bob, "evil");
  await exec(bob, "evil", "cat > /workspace/index.html && busybox httpd -p 8080 -h /workspace", attack);
  await call(pinacle.api, bob, "PATCH", "/api/v1/pods/evil", { public_ports: [8080] });

  const context = await chrome.browser.newContext();
  const page = await context.newPage();
  try {
    // Alice signs in to her pod's host through the app's sign-in link.
    const open = await call(pinacle.api, alice, "POST", "/api/v1/pods/app/open", { port: 8080, path: "/" });
    assert.equal(open.origin, victim);
    let landed;
    for (let i = 0; ; i++) {
      landed = await page.goto(open.url);
      if (landed.status() === 200) break;
      assert.ok(i < 50, `Alice's pod page answered ${landed.status()}`);
      await sleep(200);
      // a sign-in link works once: take a fresh one for the next try
      Object.assign(open, await call(pinacle.api, alice, "POST", "/api/v1/pods/app/open", { port: 8080, path: "/" }));
    }
    const cookies = await context.cookies(victim);
    assert.ok(cookies.some((c) => c.name === "pinacle_pod" && c.httpOnly), JSON.stringify(cookies));

    // Control: Alice's own page may write and open WebSockets with her cookie.
    const own = await page.evaluate(async () => {
      // busybox httpd closes every connection after its answer: a POST that
      // met a pooled connection the server had just closed is retried once
      let post = await fetch("/cgi-bin/log?own-post", { method: "POST", body: "x" });
      if (post.status === 502) post = await fetch("/cgi-bin/log?own-post", { method: "POST", body: "x" });
      const ws = await new Promise((res) => {
        const s = new WebSocket(`${location.origin.replace("http:", "ws:")}/cgi-bin/log?own-ws`);
        s.onopen = () => res("open");
        s.onerror = () => res("error");
        setTimeout(() => res("timeout"), 10_000);
      });
      return { post: post.status, ws };
    });
    assert.equal(own.post, 200);
    let log = await exec(alice, "app", "cat /workspace/req.log");
    assert.match(log, /^POST own-post origin=http:\/\/8080-app-alice/m);
    assert.match(log, /^GET own-ws /m, "Alice's own WebSocket did not reach her pod");

    // The attack: Alice visits Bob's public page.
    const refused = [];
    page.on("response", (r) => {
      if (r.url().startsWith(victim)) refused.push(`${r.status()} ${new URL(r.url()).search}`);
    });
    const evil = await page.goto(`${attacker}/`);
    assert.equal(evil.status(), 200, "Bob's public page did not load");
    for (let i = 0; ; i++) {
      const r = await page.evaluate(() => window.results);
      const formDone = refused.some((x) => x.includes("attack-form"));
      if (r.fetch && r.ws && formDone) {
        assert.notEqual(r.ws, "open", "the cross-site WebSocket opened");
        break;
      }
      assert.ok(i < 100, `the attack page did not finish: ${JSON.stringify(r)} ${refused}`);
      await sleep(100);
    }
    // The browser did send the cookie (a request without one would be
    // 401), and the proxy refused it: 403.
    assert.ok(refused.some((x) => x.startsWith("403 ?attack-form")), `form POST: ${refused}`);
    assert.ok(refused.some((x) => x.startsWith("403 ?attack-fetch")), `fetch POST: ${refused}`);
    // Nothing of it reached Alice's pod.
    log = await exec(alice, "app", "cat /workspace/req.log");
    assert.doesNotMatch(log, /attack/, `a cross-site request reached Alice's pod:\n${log}`);
  } finally {
    await context.close();
  }
});
