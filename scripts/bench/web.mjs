// The web IDE's speed figures, side by side with their references, in one run:
//
//   1. Bundle: what the first page load fetches (gzipped) against the
//      500 KB goal, and the lazy chunks (editor, terminal, languages).
//   2. Create → usable terminal (warm image): clicking Create in the
//      browser until the terminal shows a prompt, against the same pod
//      made through the REST API (create, wait running, open a terminal
//      WebSocket, see the prompt) with no browser.
//   3. Keystroke echo: a key pressed in the page until xterm shows it,
//      against the same echo on a bare WebSocket opened in the same page
//      (the transport and the pod's shell without xterm and React).
//
// As root, after `bash scripts/test.sh` (debug build, test images, web/dist):
//   node scripts/bench/web.mjs [PODS=3] [KEYS=50]

import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { launchChromium, signIn, startPinacle, waitForTerminal, call, ROOT } from "../../web/e2e/harness.mjs";

const PODS = Number(process.argv[2] ?? 3);
const KEYS = Number(process.argv[3] ?? 50);
const ms = (x) => `${x.toFixed(1)} ms`;
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(s.length * p) - 1))];
  return { n: s.length, p50: q(0.5), p95: q(0.95), max: s[s.length - 1] };
};
const row = (label, st) => console.log(`  ${label.padEnd(34)} n=${String(st.n).padStart(3)}  p50 ${ms(st.p50).padStart(10)}  p95 ${ms(st.p95).padStart(10)}  max ${ms(st.max).padStart(10)}`);

// 1. Bundle
const dist = join(ROOT, "web/dist");
const index = readFileSync(join(dist, "index.html"), "utf8");
const initial = new Set(["index.html", ...[...index.matchAll(/(?:src|href)="\/(assets\/[^"]+)"/g)].map((m) => m[1])]);
const gz = (f) => gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
let initialGz = 0;
let lazyGz = 0;
const lazy = [];
for (const f of ["index.html", ...readdirSync(join(dist, "assets")).map((a) => `assets/${a}`)]) {
  const size = gz(f);
  if (initial.has(f)) initialGz += size;
  else {
    lazyGz += size;
    lazy.push([f, size]);
  }
}
console.log("Bundle (gzip -9):");
console.log(`  initial load: ${(initialGz / 1024).toFixed(1)} KiB in ${initial.size} files (goal: under 500 KB)`);
console.log(`  lazy chunks:  ${(lazyGz / 1024).toFixed(1)} KiB; largest: ${lazy.sort((a, b) => b[1] - a[1]).slice(0, 3).map(([f, s]) => `${f.replace(/^assets\//, "")} ${(s / 1024).toFixed(1)} KiB`).join(", ")}`);

const pinacle = await startPinacle({ bridge: "pncbench2", subnet: "10.231.21.0/24" });
const chrome = await launchChromium();
try {
  const token = await pinacle.signup("bench");
  const context = await chrome.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await signIn(page, pinacle.app, "bench");

  // warm the image and the caches once (not counted)
  const warm = await call(pinacle.api, token, "POST", "/api/v1/pods", { name: "warm", template: "minimal" });
  while ((await call(pinacle.api, token, "GET", `/api/v1/pods/${warm.id}`)).state !== "running") await new Promise((r) => setTimeout(r, 50));

  // 2a. through the browser
  const ui = [];
  for (let i = 0; i < PODS; i++) {
    await page.goto(`${pinacle.app}/`);
    await page.getByRole("button", { name: "New pod" }).first().click();
    const dialog = page.getByRole("dialog", { name: "New pod" });
    await dialog.getByLabel("Name").fill(`ui${i}`);
    await dialog.getByLabel("Choose a template").selectOption("minimal");
    const t0 = Date.now();
    await dialog.getByRole("button", { name: "Create" }).click();
    await page.locator(".xterm:visible").waitFor({ timeout: 120_000 });
    await waitForTerminal(page, /#\s*$/m, 120_000);
    ui.push(Date.now() - t0);
  }
  // 2b. the same through the API, no browser (the terminal WebSocket opened from the page's JS engine)
  const api = [];
  for (let i = 0; i < PODS; i++) {
    const t0 = Date.now();
    const pod = await call(pinacle.api, token, "POST", "/api/v1/pods", { name: `api${i}`, template: "minimal" });
    for (;;) {
      const p = await call(pinacle.api, token, "GET", `/api/v1/pods/${pod.id}`);
      if (p.state === "running") break;
      if (p.state === "error") throw new Error(JSON.stringify(p));
      await new Promise((r) => setTimeout(r, 20));
    }
    await page.evaluate(
      ({ base, pod, token }) =>
        new Promise((res, rej) => {
          const ws = new WebSocket(`${base}/api/v1/pods/${pod}/terminal?rows=24&cols=80`, ["pinacle.terminal", `bearer.${token}`]);
          ws.binaryType = "arraybuffer";
          let text = "";
          ws.onmessage = (m) => {
            text += typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data);
            if (/# /.test(text)) {
              ws.close();
              res();
            }
          };
          ws.onerror = () => rej(new Error("terminal socket failed"));
        }),
      { base: pinacle.app.replace("http", "ws"), pod: pod.id, token },
    );
    api.push(Date.now() - t0);
  }
  console.log(`Create → usable terminal (warm image, ${PODS} pods each, youki):`);
  row("web app (click Create → prompt)", stats(ui));
  row("REST + WebSocket, no browser", stats(api));

  // 3. keystroke echo, on the last UI pod
  await page.goto(`${pinacle.app}/pods/ui${PODS - 1}`);
  await page.locator(".xterm:visible").waitFor();
  await waitForTerminal(page, /#\s*$/m);
  await page.locator(".xterm:visible").click();
  const xterm = [];
  for (let i = 0; i < KEYS; i++) {
    const key = "abcdefghij"[i % 10];
    const dt = await page.evaluate(
      (key) =>
        new Promise((res) => {
          const rows = document.querySelector(".xterm:not([hidden]) .xterm-rows") ?? document.querySelector(".xterm-rows");
          const before = rows.textContent;
          const t0 = performance.now();
          const obs = new MutationObserver(() => {
            if (rows.textContent !== before) {
              obs.disconnect();
              res(performance.now() - t0);
            }
          });
          obs.observe(rows, { childList: true, subtree: true, characterData: true });
          const ta = document.querySelector(".xterm:not([hidden]) .xterm-helper-textarea") ?? document.querySelector(".xterm-helper-textarea");
          ta.focus();
          ta.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true }));
          ta.value = key;
          ta.dispatchEvent(new InputEvent("input", { data: key, inputType: "insertText", bubbles: true }));
        }),
      key,
    );
    xterm.push(dt);
  }
  const bare = await page.evaluate(
    ({ base, pod, token, n }) =>
      new Promise((res, rej) => {
        const ws = new WebSocket(`${base}/api/v1/pods/${pod}/terminal?rows=24&cols=80`, ["pinacle.terminal", `bearer.${token}`]);
        ws.binaryType = "arraybuffer";
        const times = [];
        let ready = false;
        let t0 = 0;
        let want = "";
        const next = () => {
          if (times.length === n) {
            ws.close();
            return res(times);
          }
          want = "abcdefghij"[times.length % 10];
          t0 = performance.now();
          ws.send(new TextEncoder().encode(want));
        };
        ws.onmessage = (m) => {
          const text = typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data);
          if (!ready) {
            if (/# /.test(text)) {
              ready = true;
              next();
            }
            return;
          }
          if (text.includes(want)) {
            times.push(performance.now() - t0);
            next();
          }
        };
        ws.onerror = () => rej(new Error("terminal socket failed"));
      }),
    { base: pinacle.app.replace("http", "ws"), pod: `ui${PODS - 1}`, token, n: KEYS },
  );
  console.log(`Keystroke echo (${KEYS} keys, pod shell echoing):`);
  row("xterm in the web app (key → screen)", stats(xterm));
  row("bare WebSocket (byte → echo)", stats(bare));
  await context.close();
} finally {
  await chrome.close();
  await pinacle.stop();
}
