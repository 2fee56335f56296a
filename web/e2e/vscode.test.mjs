// VS Code in the browser end to end: a pod from the `vscode` template (its
// image has code-server built in, so it starts without the network) in
// gVisor, its "VS Code" tab opened in Debian's Chromium through the proxy
// with the pod's cookie; the workbench renders and lists the workspace.
// Screenshots go to web/test-results/e2e/.
//
//   node --test web/e2e/vscode.test.mjs     (as root, after scripts/test.sh built everything)

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, signIn, startPinacle, ROOT } from "./harness.mjs";

const SHOTS = process.env.PINACLE_E2E_ARTIFACTS ?? join(ROOT, "web/test-results/e2e");
mkdirSync(SHOTS, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `vscode-${name}.png`), fullPage: true });

let pinacle;
let chrome;

before(async () => {
  pinacle = await startPinacle({ bridge: "pncvsc7", subnet: "10.231.22.0/24", runtime: "gvisor" });
  await pinacle.signup("vera");
  chrome = await launchChromium();
});

after(async () => {
  await chrome?.close();
  await pinacle?.stop();
});

test("the VS Code tab renders the workbench through the proxy", { timeout: 420_000 }, async () => {
  const context = await chrome.browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  try {
    await signIn(page, pinacle.app, "vera");
    await page.getByRole("button", { name: "New pod" }).first().click();
    const dialog = page.getByRole("dialog", { name: "New pod" });
    await dialog.getByLabel("Name").fill("code");
    await dialog.getByLabel("Choose a template").selectOption("vscode");
    await dialog.getByRole("button", { name: "Create" }).click();
    await page.waitForURL(/\/pods\/code$/);
    await page.getByRole("tablist", { name: "Workspace tabs" }).waitFor({ timeout: 180_000 });

    await page.getByRole("tab", { name: "VS Code" }).click();
    const frame = page.frameLocator('iframe[title="Preview: VS Code"]');
    // code-server starts with the pod's processes: until it listens, the
    // tab offers to try again
    const deadline = Date.now() + 180_000;
    for (;;) {
      const shown = await frame.locator(".monaco-workbench").waitFor({ timeout: 10_000 }).then(() => true, () => false);
      if (shown) break;
      assert.ok(Date.now() < deadline, `the workbench never rendered:\n${pinacle.log().slice(-3000)}`);
      const retry = page.getByRole("button", { name: /Try again|Reload preview/ }).first();
      if (await retry.isVisible()) await retry.click();
    }
    // the explorer lists the template's starter file from /workspace
    await frame.getByRole("treeitem", { name: /README\.md/ }).first().waitFor({ timeout: 90_000 });
    await shot(page, "workbench");
  } finally {
    await context.close();
  }
});
