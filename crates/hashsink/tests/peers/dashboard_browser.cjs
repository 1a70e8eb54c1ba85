// The dashboard in a real headless Chromium (Debian's), driven by playwright-core from npm.
// Usage: node dashboard_browser.cjs URL TOKEN|- CHROMIUM SCREENSHOT
// Opens the page, gives the token if asked, checks that the chart and the KPIs update from the
// live stream, reads the site view, finds a miner with the search box, presses Shed (cancel
// first, then confirm), and waits for the page to show the fleet shed. Prints one JSON line
// with what it saw; exits non-zero with the reason on the first thing that does not happen.
"use strict";
const { chromium } = require("playwright-core");

const [url, token, executablePath, screenshot] = process.argv.slice(2);

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const out = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(url);
    if (token !== "-") {
      // The API answers 401 until a token is given: the page asks for one.
      await page.waitForSelector("#login[open]", { timeout: 10000 });
      await page.fill("#login-token", token);
      await page.click("#login-ok");
      // The browser logs the 401 that made the page ask: expected, not an error of the page.
      const asked = errors.filter((e) => e.includes("status of 401"));
      if (asked.length !== errors.length) throw new Error("errors before login: " + errors.join("; "));
      errors.length = 0;
    }
    await page.waitForFunction(() => document.querySelector("#link").textContent === "live", null, { timeout: 15000 });
    out.whoami = await page.textContent("#whoami");
    // The chart draws and then moves on: its last point's time and the KPI change.
    await page.waitForSelector("#chart #fleet-line", { timeout: 15000 });
    const first = await page.evaluate(() => ({
      t: Number(document.querySelector("#chart").dataset.lastT),
      points: Number(document.querySelector("#chart").dataset.points),
      clock: document.querySelector("#clock").textContent,
    }));
    await page.waitForFunction((t) => Number(document.querySelector("#chart").dataset.lastT) > t, first.t, { timeout: 15000 });
    const later = await page.evaluate(() => ({
      t: Number(document.querySelector("#chart").dataset.lastT),
      points: Number(document.querySelector("#chart").dataset.points),
      clock: document.querySelector("#clock").textContent,
      d: document.querySelector("#chart #fleet-line").getAttribute("d").length,
    }));
    out.chart = { first, later };
    out.kpi_fleet = await page.textContent("#kpi-fleet");
    // The fleet by state and model, and the miner table with search.
    await page.waitForSelector("#models tr", { timeout: 10000 });
    out.models = await page.$$eval("#models tr", (rows) => rows.map((r) => r.children[0].textContent));
    // The site view, where the ledger holds more than this site: each site's energy today.
    await page.waitForSelector("#sites-card:not([hidden]) #sites tr", { timeout: 40000 });
    out.sites = await page.$$eval("#sites tr", (rows) => rows.map((r) => [r.children[0].textContent, r.children[1].textContent]));
    await page.fill("#miner-search", "127.1.");
    await page.waitForFunction(() => document.querySelectorAll("#miners tr").length > 0, null, { timeout: 10000 });
    const all = await page.$$eval("#miners tr", (r) => r.length);
    await page.fill("#miner-search", "S21");
    await page.waitForFunction(
      () => [...document.querySelectorAll("#miners tr")].every((r) => r.children[2].textContent.includes("S21")),
      null, { timeout: 10000 });
    out.search = { all, s21: await page.$$eval("#miners tr", (r) => r.length) };
    // Shed: cancelling the confirmation does nothing; confirming sheds.
    await page.click("#btn-shed");
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-no");
    await page.waitForTimeout(500);
    out.mode_after_cancel = await page.getAttribute("#mode", "data-mode");
    await page.click("#btn-shed");
    await page.waitForSelector("#confirm[open]");
    const pressed = Date.now();
    await page.click("#confirm-yes");
    await page.waitForFunction(() => document.querySelector("#mode").dataset.mode === "shed", null, { timeout: 10000 });
    out.shed_shown_ms = Date.now() - pressed;
    out.mode_text = await page.textContent("#mode");
    await page.waitForSelector("#events tr[data-kind='shed']", { timeout: 10000 });
    out.shed_event = await page.textContent("#events tr[data-kind='shed']");
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    out.errors = errors;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error("browser check failed: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
