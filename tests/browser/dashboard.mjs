// What a person sees on the hub's dashboard, in headless Chromium.
//
// Run by tests/tests/dashboard_browser.rs, which starts a real hub (with --dashboard),
// real spokes and git, and makes the commits this script asks for. The conversation is
// one JSON line each way: this script prints {"need":"commit"} or {"need":"break"} on
// stdout; the Rust side commits and answers with the new commit id on stdin.
//
// Environment: DASHBOARD_URL (http://127.0.0.1:PORT), CHROMIUM (the browser binary),
// SCREENSHOTS (a folder for the PNGs the docs use), CLUSTERS (comma-separated names
// that run the bundle `examples-hello`).
import readline from "node:readline";
import { chromium } from "playwright-core";

const url = process.env.DASHBOARD_URL;
const shots = process.env.SCREENSHOTS;
const clusters = (process.env.CLUSTERS || "").split(",").filter(Boolean);
// Generous: CI machines are small and busy. Nothing waits on time, only on conditions.
const TIMEOUT = 90_000;

const lines = readline.createInterface({ input: process.stdin });
const input = lines[Symbol.asyncIterator]();

async function ask(what) {
  process.stdout.write(JSON.stringify({ need: what }) + "\n");
  const { value, done } = await input.next();
  if (done) throw new Error(`no answer to ${what}: stdin closed`);
  return value.trim();
}

// Progress on stderr, which the Rust test passes through: where it stopped, if it did.
function step(what) {
  process.stderr.write(`dashboard.mjs: ${what}\n`);
}

function check(ok, what) {
  if (!ok) throw new Error(`expected: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  // The test runs as root in CI, where Chromium's sandbox cannot start.
  args: ["--no-sandbox"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  // Any script error or CSP violation is a failure of the page.
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });

  step("the fleet overview");
  // 1. The fleet overview: every cluster Ready, and the page live.
  await page.goto(url + "/");
  await page.waitForSelector('#live[data-state="live"]');
  for (const c of clusters) {
    await page.waitForSelector(`#clusters tr[data-cluster="${c}"][data-state="Ready"]`);
  }
  await page.screenshot({ path: `${shots}/dashboard-overview.png`, fullPage: true });

  step("a commit fans out");
  // 2. A commit fans out: the bundle page follows it to Ready on every cluster, live.
  await page.goto(url + "/bundles/examples-hello");
  await page.waitForSelector('#live[data-state="live"]');
  // Survives only if the page is never reloaded.
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  const commit = await ask("commit");
  await page.waitForFunction(
    ({ commit, n }) => {
      const shown = document.querySelector("dl.facts code");
      const rows = [...document.querySelectorAll("#status tr[data-cluster]")];
      const legend = document.querySelector(".key-ready");
      return (
        shown &&
        shown.title === commit &&
        rows.length === n &&
        rows.every((r) => r.dataset.state === "Ready") &&
        legend &&
        legend.textContent === `Ready ${n}`
      );
    },
    { commit, n: clusters.length },
  );
  check(
    await page.evaluate(() => window.__sameDocument === true),
    "the page updated in place, without a reload",
  );
  check(
    Number(await page.evaluate(() => document.body.dataset.redraws || "0")) > 0,
    "the page was redrawn from the live feed",
  );
  check((await page.locator("#events li").count()) > 0, "the live event log lists events");
  await page.screenshot({ path: `${shots}/dashboard-bundle.png`, fullPage: true });

  step("a broken commit");
  // 3. A broken commit: the bundle shows its error with file:line, live.
  const broken = await ask("break");
  await page.waitForFunction(
    (broken) => {
      const shown = document.querySelector("dl.facts code");
      const error = document.querySelector("pre.bundle-error");
      return shown && shown.title === broken && error && /broken\.yaml:\d+/.test(error.textContent);
    },
    broken,
  );
  const state = await page.getAttribute("dl.facts", "data-state");
  check(state === "ErrApplied", `the bundle is ErrApplied, not ${state}`);
  // Each cluster's row carries the error too (the spoke keeps running the last good
  // deployment, whose id the row still shows).
  const failed = await page.locator('#status tr[data-cluster][data-state="ErrApplied"]', {
    hasText: "broken.yaml:",
  }).count();
  check(failed === clusters.length, `every cluster's row shows the error (${failed})`);
  check(
    await page.evaluate(() => window.__sameDocument === true),
    "the failure showed without a reload",
  );
  await page.screenshot({ path: `${shots}/dashboard-error.png`, fullPage: true });

  step("a cluster page");
  // 4. A cluster page: labels with their origins, bundles, history.
  await page.goto(url + `/clusters/${clusters[0]}`);
  await page.waitForSelector("#labels tr[data-label]");
  await page.waitForSelector("#history");
  await page.screenshot({ path: `${shots}/dashboard-cluster.png`, fullPage: true });

  check(problems.length === 0, `no script errors: ${problems.join("; ")}`);
  process.stdout.write(JSON.stringify({ done: true }) + "\n");
} finally {
  // An open stdin would keep node running after the last step.
  lines.close();
  await browser.close();
}
