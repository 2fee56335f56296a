// Test harness for the web app end to end: a real `pinacle up` (debug
// build, the cached test images, real pods on a private bridge, the
// reverse proxy on loopback) and Debian's Chromium driven by
// playwright-core. Used by e2e/*.test.mjs and scripts/bench/web.mjs.
//
// Everything listens on loopback; pods live on the bridge this harness
// creates and removes.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, symlinkSync, rmSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "../..");
export const BIN = process.env.PINACLE_BIN ?? join(ROOT, "target/debug/pinacle");
export const IMAGES = process.env.PINACLE_TEST_IMAGES ?? "/var/tmp/pinacle-test/images";
export const ADMIN_TOKEN = "pnc_e2e-admin-token-0123456789abcdef";
export const PASSWORD = "correct horse battery";

/** A free loopback port. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `child` (pinacle up) answers /readyz; its API address. */
async function waitReady(child, log) {
  const api = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`pinacle up did not start:\n${log()}`)), 60_000);
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/Pinacle API listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    child.on("exit", (code) => rej(new Error(`pinacle up exited (${code}):\n${log()}`)));
  });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pinacle up exited (${child.exitCode ?? child.signalCode}):\n${log()}`);
    const ok = await fetch(`${api}/readyz`).then((r) => r.ok).catch(() => false);
    if (ok) return api;
    if (i > 900) throw new Error(`pinacle up never became ready:\n${log()}`);
    await sleep(100);
  }
}

/**
 * Starts `pinacle up` on a bridge of its own (`bridge`, `subnet`).
 * Returns { api, app, proxyPort, stop(), log() }: `app` is the web app's
 * address at `pinacle.localhost`, the same site as the pods' hosts.
 */
export async function startPinacle({ bridge, subnet, runtime = "youki" }) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: cargo build first`);
  const data = mkdtempSync(join(existsSync("/var/tmp") ? "/var/tmp" : tmpdir(), "pinacle-e2e-"));
  mkdirSync(IMAGES, { recursive: true });
  symlinkSync(IMAGES, join(data, "images"));
  const logFile = join(data, "server.log");
  const log = () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : "");
  // A free port can be taken by someone else before the server binds it:
  // then start again on another one.
  let child, api, proxyPort, killOnExit;
  for (let attempt = 1; ; attempt++) {
    proxyPort = await freePort();
    child = spawn(
      "sh",
      [
        "-c",
        `exec "$0" "$@" 2>>${logFile}`,
        BIN,
        "up",
        "--data-dir", data,
        "--listen", "127.0.0.1:0",
        "--reconcile-interval", "0.5",
        "--rate-limit", "0",
        "--runtime", runtime,
        "--pod-network", "bridge",
        "--pod-bridge", bridge,
        "--pod-subnet", subnet,
        "--proxy-listen", `127.0.0.1:${proxyPort}`,
        "--ssh-listen", "none",
      ],
      {
        // pods' disks are sparse: promise them beyond free space, as the Rust
        // suites do (.cargo/config.toml)
        env: { ...process.env, PINACLE_ADMIN_TOKEN: ADMIN_TOKEN, PINACLE_CONFIG: join(data, "cli.json"), PINACLE_KEYRING: "off", PINACLE_LOG: "info,sqlx=warn", PINACLE_DISK_OVERCOMMIT: "100" },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    // never outlive this process: a stray server would keep reconciling
    // (and removing "orphan" interfaces on) the same bridge
    const started = child;
    killOnExit = () => started.kill("SIGKILL");
    process.once("exit", killOnExit);
    try {
      api = await waitReady(child, log);
      // instances refuse youki pods by default (gVisor for everyone), and
      // hold each user to a few pods
      const lifted = { user_pods: 10000, user_vcpus: 10000, team_pods: 10000, team_vcpus: 10000 };
      await call(api, ADMIN_TOKEN, "PATCH", "/api/v1/admin/settings", { youki: { everyone: runtime === "youki" }, quotas: lifted });
      break;
    } catch (e) {
      child.kill("SIGKILL");
      process.off("exit", killOnExit);
      if (attempt < 3 && /Address already in use/.test(log())) {
        console.error(`port ${proxyPort} was taken before pinacle up bound it; trying another`);
        continue;
      }
      throw e;
    }
  }
  const port = new URL(api).port;
  const app = `http://pinacle.localhost:${port}`;
  const users = [];
  const stop = async () => {
    // Pods first (a killed server leaves youki sandboxes running).
    for (const token of [ADMIN_TOKEN, ...users]) {
      const list = await call(api, token, "GET", "/api/v1/pods").catch(() => ({ pods: [] }));
      for (const pod of list.pods ?? []) {
        await call(api, token, "DELETE", `/api/v1/pods/${pod.id}`).catch(() => {});
      }
      for (let i = 0; i < 600; i++) {
        const left = await call(api, token, "GET", "/api/v1/pods").catch(() => ({ pods: [] }));
        if ((left.pods ?? []).every((p) => p.state === "deleted")) break;
        await sleep(100);
      }
    }
    child.kill("SIGTERM");
    await new Promise((r) => {
      const t = setTimeout(() => {
        child.kill("SIGKILL");
        r();
      }, 15_000);
      child.once("exit", () => {
        clearTimeout(t);
        r();
      });
    });
    process.off("exit", killOnExit);
    spawnSync("ip", ["link", "del", bridge]);
    spawnSync("nft", ["delete", "table", "inet", `pinacle_${bridge}`]);
    try {
      rmSync(data, { recursive: true, force: true, maxRetries: 5 });
    } catch (e) {
      console.error(`leaving ${data}: ${e.message}`);
    }
  };
  /** Signs a user up and in (their pods are deleted by `stop`); returns their access token. */
  const signup = async (name) => {
    await call(api, "", "POST", "/api/v1/auth/signup", { name, password: PASSWORD });
    const pair = await call(api, "", "POST", "/api/v1/auth/login", { name, password: PASSWORD });
    users.push(pair.access_token);
    return pair.access_token;
  };
  return { api, app, proxyPort, stop, log, signup };
}

/** A JSON API call; throws on an error status. */
export async function call(api, token, method, path, body) {
  const r = await fetch(`${api}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Debian's Chromium, headless, resolving `*.localhost` to loopback only
 * (playwright gives each launch a fresh profile directory). */
export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP localhost 127.0.0.1",
    ],
  });
  const close = () => browser.close();
  return { browser, close };
}

/** Signs in through the page's form and waits for the dashboard. */
export async function signIn(page, app, name) {
  await page.goto(`${app}/login`);
  await page.getByLabel("User name").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Pods" }).waitFor();
}

/** The visible text of the active terminal (xterm's DOM renderer rows). */
export async function terminalText(page) {
  return page.locator(".xterm-rows:visible").innerText().catch(() => "");
}

/** Waits until the active terminal shows `re` (a RegExp); returns its text. */
export async function waitForTerminal(page, re, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  let text = "";
  while (Date.now() < end) {
    text = await terminalText(page);
    if (re.test(text)) return text;
    await sleep(50);
  }
  throw new Error(`the terminal never showed ${re}; it shows:\n${text}`);
}
