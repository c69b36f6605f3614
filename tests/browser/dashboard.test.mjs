// The admin dashboard in a real browser (Debian's chromium through playwright-core).
//
// It starts the embedded folio (target/debug/folio) on a fresh SQLite file with 2 s
// windows, seeds it with `folio seed`, signs in, and checks that:
// - the five charts show exactly the seeded figures (their data-total attributes, the
//   overview cards, a tooltip on hover) and the CSV export says the same;
// - a book is found by a part of its title and its drill-down shows its title and the
//   admin API's figures, and the view's link (range, book) reopens the same view;
// - the page works at phone width without horizontal scrolling;
// - a stalled pipeline is said plainly: folio is restarted --without-analytics, views
//   arrive, and the banner and the pipeline panel say "stalled".
// Screenshots go to target/browser-test/ (FOLIO_BROWSER_OUT to change).
//
// Environment: FOLIO_BIN (default target/debug/folio), CHROMIUM (default
// /usr/bin/chromium).

import { spawn, execFile } from "node:child_process";
import { mkdtemp, mkdir, rm, readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.FOLIO_BIN || join(root, "target/debug/folio");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUT = process.env.FOLIO_BROWSER_OUT || join(root, "target/browser-test");
const ADMIN = { email: "admin@folio.local", password: "browser-test-admin" };
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const tmp = await mkdtemp(join(tmpdir(), "folio-browser-"));
await mkdir(OUT, { recursive: true });
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const env = {
  ...process.env,
  FOLIO_DATA_DIR: join(tmp, "data"),
  DATABASE_URL: `sqlite://${join(tmp, "folio.db")}?mode=rwc`,
  HTTP_ADDR: `127.0.0.1:${port}`,
  ANALYTICS_WINDOW: "2s",
  ANALYTICS_GRACE: "1s",
  FOLIO_ADMIN_EMAIL: ADMIN.email,
  FOLIO_ADMIN_PASSWORD: ADMIN.password,
  // Tokens outlive the restart below, as they would behind a load balancer.
  FOLIO_TOKEN_SECRET: "browser-test-token-secret",
  RUST_LOG: "warn",
};
delete env.KAFKA_BOOTSTRAP;

let server = null;
let context = null;

async function startFolio(...args) {
  const child = spawn(BIN, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  child.log = () => log;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`folio exited early:\n${log}`);
    try {
      const r = await fetch(`${base}/health/ready`);
      if (r.ok) return child;
    } catch (_) { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`folio did not get ready:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopFolio(child) {
  if (!child || child.exitCode !== null) return;
  const done = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await Promise.race([done, new Promise((r) => setTimeout(r, 15_000))]);
  if (child.exitCode === null) child.kill("SIGKILL");
}

async function api(path, token, opts = {}) {
  const headers = { accept: "application/json", ...(opts.headers || {}) };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`${base}/api/v1${path}`, { ...opts, headers });
  const body = await r.json().catch(() => null);
  assert.ok(r.ok, `${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

async function adminToken() {
  const t = await api("/auth/login", null, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(ADMIN),
  });
  return t.token;
}

async function signIn(page, url) {
  await page.goto(url);
  await page.fill("#email", ADMIN.email);
  await page.fill("#password", ADMIN.password);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("body[data-loaded]", { timeout: 20_000 });
}

try {
  // --- seed: two hours of history through the real pipeline ---------------------------
  step("seeding");
  const { stdout: seedOut } = await promisify(execFile)(
    BIN,
    ["seed", "--history", "2h", "--per-hour", "1500", "--books", "12", "--readers", "6"],
    { env, timeout: 120_000 },
  );
  const figure = (name) => {
    const m = seedOut.match(new RegExp(`^\\s+${name}\\s+(\\d+)`, "m"));
    assert.ok(m, `seed output lacks ${name}:\n${seedOut}`);
    return Number(m[1]);
  };
  const revenue = seedOut.match(/purchases\s+\d+ \((\d+)\.(\d\d) USD\)/);
  assert.ok(revenue && seedOut.includes("stored statistics match exactly"), seedOut);
  const seeded = {
    views: figure("views"),
    downloads: figure("downloads"),
    purchases: figure("purchases"),
    revenue: Number(revenue[1]) * 100 + Number(revenue[2]),
    ratings: Number(seedOut.match(/ratings\s+\d+ \((\d+) submissions\)/)[1]),
  };
  step(`seeded ${JSON.stringify(seeded)}`);
  assert.ok(seeded.views > 50 && seeded.purchases > 0 && seeded.ratings > 0, seedOut);

  server = await startFolio();
  const token = await adminToken();
  step(`folio serves ${base}`);

  context = await chromium.launchPersistentContext(join(tmp, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    locale: "en-US",
    timezoneId: "UTC",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  // While folio restarts below, the open page's refresh may find no server: a failed
  // request then is expected, and nothing else is.
  let restarting = false;
  const expected = (text) => restarting && /ERR_CONNECTION_REFUSED|Failed to fetch|Failed to load resource/.test(text);
  page.on("pageerror", (e) => { if (!expected(String(e))) errors.push(String(e)); });
  page.on("console", (m) => { if (m.type() === "error" && !expected(m.text())) errors.push(m.text()); });
  page.on("request", (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) {
      errors.push(`request outside folio: ${r.url()}`);
    }
  });

  // --- charts with the seeded figures -----------------------------------------------
  await signIn(page, `${base}/admin?range=all`);
  const totals = await page.$$eval(".charts#charts .chart", (cs) =>
    Object.fromEntries(cs.map((c) => [c.dataset.metric, Number(c.dataset.total)])));
  assert.deepEqual(totals, seeded, "chart totals");
  const canvases = await page.$$eval("#charts .chart canvas", (cs) => cs.length);
  assert.equal(canvases, 5, "one canvas per chart");
  const card = async (key) => (await page.textContent(`#overview [data-key=${key}] .v`)).trim();
  assert.equal(await card("views"), seeded.views.toLocaleString("en-US"));
  assert.equal(await card("purchases"), seeded.purchases.toLocaleString("en-US"));
  assert.equal(await card("revenue"), `${(seeded.revenue / 100).toLocaleString("en-US", { minimumFractionDigits: 2 })} USD`);
  // Axes carry values, and hovering a bucket shows its figure.
  const ticks = await page.$eval("#charts .chart[data-metric=views]", (c) => [c.dataset.xticks, c.dataset.yticks]);
  assert.match(ticks[0], /\d\d:\d\d \| /, `time axis labels: ${ticks[0]}`);
  assert.match(ticks[1], /^0 \| \d/, `value axis labels: ${ticks[1]}`);
  const busiest = await page.evaluate(() => {
    const c = document.querySelector("#charts .chart[data-metric=views]");
    return { nonzero: Number(c.dataset.nonzero), points: Number(c.dataset.points) };
  });
  assert.ok(busiest.nonzero > 0 && busiest.points > 10, JSON.stringify(busiest));
  const over = await page.$("#charts .chart[data-metric=views] .u-over");
  const box = await over.boundingBox();
  let tip = "";
  for (let x = box.width - 2; x > 0 && !/[1-9]\d* views$/.test(tip); x -= Math.max(1, box.width / 120)) {
    await page.mouse.move(box.x + x, box.y + box.height / 2);
    tip = (await page.textContent("#charts .chart[data-metric=views] .tip")) || "";
  }
  assert.match(tip, /: [1-9][\d,]* views$/, `tooltip: ${tip}`);
  step(`charts match the seed; tooltip "${tip}"`);
  const csv = await page.evaluate(() => window.folioCsv("series"));
  const rows = csv.trim().split("\r\n").map((l) => l.split(","));
  assert.deepEqual(rows[0], ["bucket_start", "bucket_end", "views", "downloads", "purchases", "revenue_cents", "ratings"]);
  const sums = rows.slice(1).reduce((acc, r) => acc.map((v, i) => v + Number(r[i + 2])), [0, 0, 0, 0, 0]);
  assert.deepEqual(sums, [seeded.views, seeded.downloads, seeded.purchases, seeded.revenue, seeded.ratings], "CSV sums");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("button[data-csv=genres]"),
  ]);
  const genresCsv = await readFile(await download.path(), "utf8");
  const genres = await api("/admin/analytics/genres", token);
  assert.equal(genresCsv.trim().split("\r\n").length, genres.genres.length + 1, genresCsv);
  assert.ok(genresCsv.includes(`${genres.genres[0].genre},`), genresCsv);
  await page.screenshot({ path: join(OUT, "dashboard.png"), fullPage: true });

  // --- find a book by title, drill down --------------------------------------------
  await page.fill("[data-testid=book-search]", "moby");
  await page.click("#lookup button[type=submit]");
  await page.waitForSelector("#results li");
  const results = await page.$$eval("#results li", (ls) => ls.map((l) => l.textContent));
  assert.deepEqual(results, ["Moby-Dick — Herman Melville · Classics"]);
  await page.click("#results li");
  await page.waitForFunction(() => document.querySelector("#book-title").textContent.startsWith("Moby-Dick (#"));
  await page.waitForSelector("#book [data-key=views]");
  const bookId = Number(new URL(page.url()).searchParams.get("book"));
  const stats = await api(`/admin/analytics/books/${bookId}`, token);
  assert.equal((await page.textContent("#book [data-key=views] .v")).trim(), stats.views.toLocaleString("en-US"));
  await page.waitForFunction((v) => {
    const c = document.querySelector("#book-charts .chart[data-metric=views]");
    return c && Number(c.dataset.total) === v;
  }, stats.views);
  assert.ok(stats.views > 0, "Moby-Dick was viewed");
  await (await page.$("#book-card")).screenshot({ path: join(OUT, "drilldown.png") });
  step(`drill-down: Moby-Dick #${bookId}, ${stats.views} views`);

  // The link shares the view: range and book come back in a fresh tab.
  const link = page.url();
  assert.match(link, /range=all/);
  const shared = await context.newPage();
  await signIn(shared, link);
  await shared.waitForFunction(() => document.querySelector("#book-title").textContent.startsWith("Moby-Dick (#"));
  assert.equal(await shared.inputValue("#range"), "all");
  await shared.close();

  // A custom range in the URL, from 1 ms past the start of a window with views about 30
  // minutes back: the link's instant must hold to the millisecond (that window is out),
  // though the range inputs show whole seconds. Twice: from the first such window, and
  // from the first that starts on a whole minute (the browser then writes the input
  // without its seconds).
  const back = new Date(Date.now() - 30 * 60_000).toISOString();
  const windows = (await api(`/admin/analytics/overview/history?from=${encodeURIComponent(back)}`, token)).windows;
  const cuts = [
    windows.find((w) => w.totals.views > 0),
    windows.find((w) => w.totals.views > 0 && new Date(w.window_start).getSeconds() === 0),
  ];
  assert.ok(cuts[0] && cuts[1], "windows with views in the last 30 minutes, one on a whole minute");
  for (const cut of cuts) {
    const since = new Date(Date.parse(cut.window_start) + 1).toISOString();
    const custom = await context.newPage();
    await signIn(custom, `${base}/admin?from=${encodeURIComponent(since)}`);
    assert.equal(await custom.inputValue("#range"), "custom");
    const recent = await api(`/admin/analytics/overview?from=${encodeURIComponent(since)}`, token);
    const recentViews = await custom.$eval("#charts .chart[data-metric=views]", (c) => Number(c.dataset.total));
    assert.equal(recentViews, recent.totals.views, `custom range from ${since}`);
    const after = windows.filter((w) => Date.parse(w.window_start) > Date.parse(cut.window_start));
    assert.equal(recent.totals.views, after.reduce((n, w) => n + w.totals.views, 0), "the cut window is out");
    step(`custom range from ${since}: ${recentViews} views, the ${cut.totals.views} of the window it cuts left out`);
    await custom.close();
  }

  // --- phone width -------------------------------------------------------------------
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(300);
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(widths[0] <= widths[1], `no horizontal scrolling at phone width: ${widths}`);
  await page.screenshot({ path: join(OUT, "phone.png"), fullPage: false });
  await page.setViewportSize({ width: 1280, height: 900 });

  // --- a stalled pipeline is flagged ------------------------------------------------
  assert.equal(await page.getAttribute("[data-testid=pipeline-state]", "data-state"), "ok");
  restarting = true;
  await stopFolio(server);
  server = await startFolio("--without-analytics");
  step("folio restarted --without-analytics; views arrive");
  for (let i = 0; i < 5; i++) await api(`/books/${bookId}`, null);
  // The open page keeps refreshing across the restart; the view goes in the URL.
  await page.goto(`${base}/admin?range=1h&refresh=2000`);
  restarting = false;
  await page.waitForSelector("[data-testid=pipeline-state][data-state=stalled]", { timeout: 20_000 });
  const banner = await page.textContent("[data-testid=stall-banner]");
  assert.match(banner, /^Stalled: events accepted \d+ s ago are not in the statistics yet/, banner);
  assert.ok(await page.isVisible("[data-testid=stall-banner]"), "the banner shows");
  await page.screenshot({ path: join(OUT, "stalled.png"), fullPage: false });
  await (await page.$("#pipeline-card")).screenshot({ path: join(OUT, "pipeline.png") });
  step(`stall flagged: ${banner}`);

  assert.deepEqual(errors, [], `no page errors: ${errors.join(" | ")}`);
  console.log(`browser test passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${OUT}`);
} catch (e) {
  console.error(e);
  if (server) console.error("--- folio's log ---\n" + server.log());
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  await stopFolio(server);
  await rm(tmp, { recursive: true, force: true });
}
