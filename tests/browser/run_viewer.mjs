// Open viewer.html in headless Chromium (the system's, through playwright-core), wait until
// OpenSeadragon has loaded and drawn every tile of the view, screenshot the viewer element and
// print a JSON summary on stdout.  Driven by test_openseadragon.py:
//
//   node run_viewer.mjs --page URL --screenshot OUT.png [--timeout MS] [--chromium PATH]
//
// The summary is printed whatever happens; "error" says why the run is not usable, and the
// exit status is 1 then.  Nothing here judges the server: the test does.

import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: options } = parseArgs({
  options: {
    page: { type: "string" },
    screenshot: { type: "string" },
    timeout: { type: "string", default: "20000" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
if (!options.page || !options.screenshot) {
  console.error("usage: node run_viewer.mjs --page URL --screenshot OUT.png [--timeout MS] [--chromium PATH]");
  process.exit(2);
}
const timeout = Number(options.timeout);
const started = Date.now();
const remaining = () => Math.max(1000, timeout - (Date.now() - started));

const summary = {
  page: options.page,
  chromium: null,
  responses: [], // every response the page received: url, status, resource type
  requestsFailed: [], // requests that got no response at all
  consoleErrors: [],
  pageErrors: [],
  state: null, // window.viewerTest of the page
  screenshot: null,
  error: null,
  seconds: null,
};

// Chromium as root needs --no-sandbox; the background-networking flags keep it from calling
// home (those connections are refused here and would only add noise and delay).
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-proxy-server",
];

let browser;
try {
  browser = await chromium.launch({
    executablePath: options.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: remaining(),
  });
  summary.chromium = browser.version();
  const context = await browser.newContext({ viewport: { width: 800, height: 600 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") {
      const where = message.location();
      summary.consoleErrors.push(`${message.text()} (${where.url}:${where.lineNumber})`);
    }
  });
  page.on("pageerror", (error) => summary.pageErrors.push(String(error && error.stack ? error.stack : error)));
  page.on("response", (response) => {
    summary.responses.push({
      url: response.url(),
      status: response.status(),
      type: response.request().resourceType(),
    });
  });
  page.on("requestfailed", (request) => {
    summary.requestsFailed.push({ url: request.url(), failure: request.failure()?.errorText ?? "" });
  });

  await page.goto(options.page, { waitUntil: "load", timeout: remaining() });
  try {
    await page.waitForFunction(() => window.viewerTest && (window.viewerTest.done || window.viewerTest.error), null, {
      timeout: remaining(),
      polling: 50,
    });
  } finally {
    summary.state = await page.evaluate(() => window.viewerTest ?? null);
  }
  if (summary.state?.error) {
    throw new Error(`the page reported: ${summary.state.error}`);
  }
  await page.locator("#viewer").screenshot({ path: options.screenshot, timeout: remaining() });
  summary.screenshot = options.screenshot;
} catch (error) {
  summary.error = String(error && error.stack ? error.stack : error);
} finally {
  if (browser) {
    await browser.close().catch(() => {});
  }
  summary.seconds = (Date.now() - started) / 1000;
  process.stdout.write(JSON.stringify(summary, null, 1) + "\n");
  process.exitCode = summary.error ? 1 : 0;
}
