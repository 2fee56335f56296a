// The browser IDE end to end: Debian's Chromium against a real
// `pinacle up` with real pods. Screenshots of each step are saved under
// web/test-results/e2e/ (CI keeps them as artifacts).
//
//   node --test web/e2e/ide.test.mjs     (as root, after scripts/test.sh built everything)

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, signIn, startPinacle, waitForTerminal, terminalText, ROOT } from "./harness.mjs";

const SHOTS = process.env.PINACLE_E2E_ARTIFACTS ?? join(ROOT, "web/test-results/e2e");
rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });

let pinacle;
let chrome;
let step = 0;
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${String(++step).padStart(2, "0")}-${name}.png`), fullPage: true });

before(async () => {
  pinacle = await startPinacle({ bridge: "pnctest6", subnet: "10.231.18.0/24" });
  await pinacle.signup("alice");
  await pinacle.signup("bob");
  chrome = await launchChromium();
});

after(async () => {
  await chrome?.close();
  await pinacle?.stop();
});

test("a user signs in, creates a pod, and works in its terminal, editor and preview", { timeout: 300_000 }, async () => {
  const context = await chrome.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  try {
    // sign in
    await signIn(page, pinacle.app, "alice");
    await page.getByText("No pods yet").waitFor();
    await shot(page, "signed-in");

    // create a pod from a template
    await page.getByRole("button", { name: "New pod" }).first().click();
    const dialog = page.getByRole("dialog", { name: "New pod" });
    await dialog.getByLabel("Name").fill("demo");
    await dialog.getByLabel("Choose a template").selectOption("minimal");
    await shot(page, "new-pod");
    const clicked = Date.now();
    await dialog.getByRole("button", { name: "Create" }).click();
    await page.waitForURL(/\/pods\/demo$/);
    await page.getByRole("tablist", { name: "Workspace tabs" }).waitFor({ timeout: 120_000 });

    // the terminal: type and see the answer
    const terminal = page.locator(".xterm:visible");
    await terminal.waitFor();
    await waitForTerminal(page, /#\s*$/m, 60_000);
    const usable = Date.now() - clicked;
    console.log(`create → usable terminal: ${usable} ms`);
    await terminal.click();
    await page.keyboard.type("echo hello\n");
    await waitForTerminal(page, /^hello\s*$/m);
    await shot(page, "terminal-hello");

    // the editor: create a file, type, save; the terminal sees it
    await page.getByRole("tab", { name: "Editor" }).click();
    await page.getByRole("button", { name: "New file" }).first().click();
    const newFile = page.getByRole("dialog", { name: "New file" });
    await newFile.getByLabel("File path").fill("index.html");
    await newFile.getByRole("button", { name: "Create" }).click();
    const editor = page.locator(".cm-content:visible");
    await editor.waitFor();
    await editor.click();
    // (the editor closes the tag itself)
    await page.keyboard.type("<h1>hi from the editor");
    await page.getByText(/●|modified/).first().waitFor();
    await shot(page, "editor-dirty");
    await page.keyboard.press("Control+s");
    await page.getByRole("tab", { name: "index.html", exact: true }).waitFor();
    await shot(page, "editor-saved");
    await page.getByRole("tab", { name: "Terminal", exact: true }).click();
    await terminal.click();
    await page.keyboard.type("cat /workspace/index.html; echo; busybox httpd -p 3000 -h /workspace && echo SERVING\n");
    await waitForTerminal(page, /^<h1>hi from the editor<\/h1>\s*$/m);
    await waitForTerminal(page, /^SERVING\s*$/m);
    await shot(page, "terminal-cat");

    // a preview tab: the pod's server through the proxy, in the page
    await page.getByRole("button", { name: "Add tab" }).click();
    await page.getByRole("menuitem", { name: "Preview…" }).click();
    const preview = page.getByRole("dialog", { name: "New preview tab" });
    await preview.getByLabel("Port").fill("3000");
    await preview.getByLabel("Title (optional)").fill("Site");
    await preview.locator("button[type=submit]").click();
    const frame = page.frameLocator('iframe[title="Preview: Site"]');
    await frame.getByRole("heading", { name: "hi from the editor" }).waitFor({ timeout: 30_000 });
    await shot(page, "preview");

    // reload: the same tabs, and the terminal re-attaches to the same shell
    const tabsBefore = await page.getByRole("tablist", { name: "Workspace tabs" }).getByRole("tab").allInnerTexts();
    await page.reload();
    await page.getByRole("tablist", { name: "Workspace tabs" }).waitFor();
    await page.getByRole("tab", { name: "Terminal", exact: true }).click();
    await waitForTerminal(page, /^hello\s*$/m);
    const tabsAfter = await page.getByRole("tablist", { name: "Workspace tabs" }).getByRole("tab").allInnerTexts();
    assert.deepEqual(tabsAfter, tabsBefore);
    await shot(page, "reloaded");
    assert.deepEqual(problems, [], "the page threw");
    assert.ok((await terminalText(page)).includes("hello"));
  } finally {
    await context.close();
  }
});

test("another user cannot open the pod or its preview", { timeout: 120_000 }, async () => {
  const context = await chrome.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    await signIn(page, pinacle.app, "bob");
    await page.getByText("No pods yet").waitFor();
    // a pasted pinacle.yaml is checked by the server as it is typed: the
    // problem shows at its line, and nothing can be created from it
    await page.getByRole("button", { name: "New pod" }).first().click();
    const dialog = page.getByRole("dialog", { name: "New pod" });
    await dialog.getByLabel("Name").fill("typo");
    await dialog.getByRole("tab", { name: "YAML" }).click();
    await dialog.getByLabel("pinacle.yaml").fill('version: "1.0"\ntier: dev.smal\n');
    const problems = dialog.getByRole("list", { name: "Problems" });
    await problems.getByText(/2:7/).waitFor();
    await problems.getByText(/dev\.small/).waitFor();
    assert.ok(await dialog.getByRole("button", { name: "Create" }).isDisabled(), "Create is enabled with an error");
    await shot(page, "yaml-diagnostics");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await page.goto(`${pinacle.app}/pods/demo`);
    await page.getByText(/not found/i).first().waitFor();
    await shot(page, "other-user-workspace");
    // the pod's preview host, straight: the proxy wants a sign-in, never serves the page
    const response = await page.goto(`http://3000-demo-alice.pinacle.localhost:${pinacle.proxyPort}/`);
    assert.ok([401, 403, 404].includes(response.status()) || !(await page.content()).includes("hi from the editor"), `status ${response.status()}`);
    assert.ok(!(await page.content()).includes("hi from the editor"));
    await shot(page, "other-user-preview");
  } finally {
    await context.close();
  }
});
