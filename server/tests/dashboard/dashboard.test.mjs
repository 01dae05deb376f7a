// Browser test of the Switchyard dashboard, run by server/tests/dashboard.rs against a seeded
// server. Drives the system Chromium through playwright-core (no downloaded browsers).
//
// Environment: DASHBOARD_URL, OPERATOR_TOKEN, READER_TOKEN, SWITCHYARD_BIN (the CLI), SERVER_PID
// and DATABASE_URL (the test stops that server and starts another on the same address),
// CHROMIUM, SCREENSHOT_DIR, USER_DATA_DIR.

import { chromium } from "playwright-core";
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set; run this through cargo test -p switchyard-server --test dashboard`);
  return v;
};
const BASE = env("DASHBOARD_URL");
const OPERATOR = env("OPERATOR_TOKEN");
const READER = env("READER_TOKEN");
const BIN = env("SWITCHYARD_BIN");
const SHOTS = env("SCREENSHOT_DIR");
const BILLING = "billing.invoice-currency";
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const TIMEOUT = 10_000;

const run = promisify(execFile);
const switchyard = (...args) =>
  run(BIN, args, { env: { ...process.env, SWITCHYARD_SERVER: BASE, SWITCHYARD_TOKEN: OPERATOR } });
// A second operator: four eyes need two people.
const SECOND_OPERATOR = env("SECOND_OPERATOR_TOKEN");
const switchyardAsSecond = (...args) =>
  run(BIN, args, { env: { ...process.env, SWITCHYARD_SERVER: BASE, SWITCHYARD_TOKEN: SECOND_OPERATOR } });

async function apiGet(path, token = OPERATOR) {
  const r = await fetch(`${BASE}/v1${path}`, { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`GET ${path}: ${r.status}`);
  return r.json();
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

let step = 0;
async function shot(page, name) {
  step += 1;
  const file = path.join(SHOTS, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`  screenshot ${file}`);
}

/** Console errors and uncaught exceptions, except the HTTP errors a step provokes on purpose. */
let serverDown = false;
function watchConsole(page, errors) {
  const expected = /Failed to load resource: the server responded with a status of (401|403|409|422)/;
  // While the test has stopped the server, the browser logs each failed reconnection.
  const whileDown = /net::ERR_(CONNECTION_REFUSED|EMPTY_RESPONSE|INCOMPLETE_CHUNKED_ENCODING|CONNECTION_RESET)/;
  page.on("console", (m) => {
    if (m.type() !== "error" || expected.test(m.text())) return;
    if (serverDown && whileDown.test(m.text())) return;
    errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`uncaught: ${e.message}`));
}

const browser = await chromium.launchPersistentContext(env("USER_DATA_DIR"), {
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: DESKTOP,
  locale: "en-US",
});
browser.setDefaultTimeout(TIMEOUT);
const errors = [];

let restarted = null;

async function noOverflow(page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no horizontal scrolling at phone width on ${page.url()} (overflow ${overflow}px)`);
}

/** Starts `switchyard serve` on the stopped server's address and database, once it is free. */
async function restartServer() {
  const addr = new URL(BASE).host;
  // Wait until the old server no longer accepts connections (its listener closes first).
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`${BASE}/healthz`);
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const serverEnv = { ...process.env, RUST_LOG: "warn" };
  delete serverEnv.SWITCHYARD_ADMIN_TOKEN;
  for (let attempt = 0; attempt < 20; attempt++) {
    const child = spawn(
      BIN,
      ["serve", "--http-addr", addr, "--grpc-addr", "127.0.0.1:0", "--database-url", env("DATABASE_URL"), "--min-soak", "0s", "--require-approval", "contract"],
      { stdio: ["ignore", "pipe", "inherit"], env: serverEnv },
    );
    const ready = await new Promise((resolve) => {
      let out = "";
      child.stdout.on("data", (chunk) => {
        out += chunk;
        if (out.includes("switchyard serving HTTP on")) resolve(true);
      });
      child.on("exit", () => resolve(false));
    });
    if (ready) return child;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`could not restart the server on ${addr}`);
}

async function signIn(page, token) {
  await page.goto(BASE);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  watchConsole(page, errors);

  console.log("sign-in: a wrong token is refused");
  await signIn(page, "sy_not-a-real-token");
  await page.getByText("That token was refused").waitFor();
  await shot(page, "signin-refused");

  console.log("sign-in: the operator's token shows the list");
  await page.getByLabel("API token").fill(OPERATOR);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Migrations" }).waitFor();
  await page.locator("#conn.conn-live").waitFor();
  await page.getByText("alice").waitFor();
  check((await page.locator("table.migrations tbody tr").count()) === 4, "four migrations listed");
  // The per-migration facts arrive in the background: wait for an alert and the clients column.
  await page.getByText(/shadow mismatch(es)? in the last hour/).waitFor();
  // Rules 3 and 5 wait for every live instance: checkout-2 has not applied the orders change.
  await page.getByText("4/5 on v").waitFor();
  await page.getByText(/Soaking: passes in (59m|1h)/).waitFor();
  // How long each has sat at its stage, and the running backfill's progress, in the list.
  const usersRow = page.locator('table.migrations tr[data-key="users.username-to-handle"]');
  await usersRow.locator("td.at-stage").getByText(/^\d+(s|m)( \d+s)?$/).waitFor();
  await usersRow.getByText("35%").waitFor();
  await usersRow.getByText("420,000 of ~1,200,000 rows").waitFor();
  await shot(page, "list-1280");

  console.log("the list filters and sorts");
  await page.getByLabel("Filter").fill("invoice");
  await page.getByText("(1 shown)").waitFor();
  check((await page.locator("table.migrations tbody tr").count()) === 1, "one migration matches 'invoice'");
  await page.getByLabel("Filter").fill("");
  await page.getByLabel("Stage", { exact: true }).selectOption("complete");
  await page.getByText("(1 shown)").waitFor();
  check((await page.locator("table.migrations tbody tr").first().getAttribute("data-key")) === "sessions.token-hash", "the stage filter keeps the one at complete");
  await page.getByLabel("Stage", { exact: true }).selectOption("");
  await page.getByLabel("Sort by").selectOption("key");
  const keys = await page.locator("table.migrations tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.key));
  check(JSON.stringify(keys) === JSON.stringify([...keys].sort()), `sorted by key: ${keys}`);
  await page.getByLabel("Sort by").selectOption("attention");

  console.log("an action the rules would refuse is disabled with its rule: advancing off before expand-applied (rule 2)");
  await page.getByRole("link", { name: BILLING }).click();
  await page.getByRole("heading", { name: BILLING }).waitFor();
  // A server string with markup characters is shown as text, not parsed.
  await page.getByText("Move invoices.currency to a <currency> lookup table & back-fill").waitFor();
  // Created without a target database: the Database usage card says it is not observed.
  const usageCard = page.getByRole("region", { name: "Database usage" });
  await usageCard.getByText("not observed", { exact: true }).waitFor();
  await usageCard.getByText("names no target database, so the database is not observed", { exact: false }).waitFor();
  await page.locator('button[data-rule="2"]:disabled', { hasText: "Advance to dual write…" }).waitFor();
  const advanceHelp = await page.locator("#advance-help").textContent();
  check(/^Refused now \(rule 2\): leaving off needs the expand DDL/.test(advanceHelp), `the rule's message is shown: ${advanceHelp}`);
  const dialog = page.getByRole("dialog");
  const result = page.getByTestId("result");
  await shot(page, "refused-rule-2");

  console.log("a change made with the CLI appears on the open page without a reload");
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await switchyard("record", BILLING, "expand-applied", "--reason", "0090 applied by the pipeline");
  await page.getByText("Expand DDL: applied").waitFor();
  await switchyard("advance", BILLING, "--latest", "--reason", "dual writes from the CLI");
  await page.locator(".title-row .stage-pill", { hasText: "dual write" }).waitFor();
  await page.getByTestId("front").getByText("All account_id entities are at off").waitFor();
  await page.locator("table.audit").getByText("dual writes from the CLI").waitFor();
  check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");

  console.log("ramp with a reason; the reason lands in the audit log");
  await page.getByRole("button", { name: "25%" }).click();
  await page.getByRole("button", { name: "Ramp…" }).click();
  await dialog.getByText("dual write 0%").waitFor();
  const reason = "canary: 25% of accounts dual-write (dashboard test)";
  await dialog.getByLabel(/Reason/).fill(reason);
  await shot(page, "ramp-dialog-1280");
  await dialog.getByRole("button", { name: "Ramp to 25%" }).click();
  await result.getByText("Rollout of dual write is now 25%").waitFor();
  await page.getByTestId("front").getByText("25% of account_id entities are at dual write").waitFor();
  const audit = await apiGet(`/migrations/${BILLING}/audit?limit=1`);
  const last = audit.entries[0];
  check(last.action === "set_rollout" && last.reason === reason && last.after.rollout_bp === 2500, `audit: ${JSON.stringify(last)}`);
  check(last.actor.startsWith("alice"), `audited as alice: ${last.actor}`);
  await page.locator("table.audit").getByText(reason).waitFor();
  await shot(page, "ramped-1280");

  console.log("keyboard: Enter in the percentage opens the dialog on the reason; Escape cancels");
  const before = (await apiGet(`/migrations/${BILLING}`)).version;
  await page.getByLabel(/Rollout of dual write/).fill("5");
  await page.getByLabel(/Rollout of dual write/).press("Enter");
  await dialog.waitFor();
  check(await page.evaluate(() => document.activeElement?.id === "reason"), "focus is on the reason");
  await page.keyboard.type("never sent");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  check((await apiGet(`/migrations/${BILLING}`)).version === before, "a cancelled dialog changes nothing");

  console.log("a change made while the dialog is open is refused as stale (rule 8)");
  await page.getByRole("button", { name: "50%" }).click();
  await page.getByRole("button", { name: "Ramp…" }).click();
  await switchyard("ramp", BILLING, "--percent", "30", "--latest", "--reason", "someone else");
  await dialog.getByText("changed while this dialog was open").waitFor();
  await dialog.getByLabel(/Reason/).fill("too late");
  await dialog.getByRole("button", { name: "Ramp to 50%" }).click();
  await result.getByText("Someone changed this migration first (rule 8)").waitFor();
  check((await apiGet(`/migrations/${BILLING}`)).rollout_bp === 3000, "the stale ramp changed nothing");
  await page.getByTestId("front").getByText("30% of account_id").waitFor();

  console.log("a migration with a running backfill, clients and traffic");
  await page.goto(`${BASE}/#/m/users.username-to-handle`);
  await page.getByRole("heading", { name: "users.username-to-handle" }).waitFor();
  await page.locator(".chart svg").first().waitFor();
  await page.getByText("420,000 of ~1,200,000").waitFor();
  console.log("the runner holding for a replica, and the settings set with backfill set");
  await page.getByText("Holding for the database: replica 10.0.0.7:5432 replay lag 3.2 s > 2 s", { exact: false }).waitFor();
  await page.getByText("batch size 500, max replica lag 2 s").waitFor();
  // Who changed them and when, the time drawn as a time (not "[object HTMLTimeElement]").
  await page.getByText("by alice (token 2): reports replica lagging", { exact: false }).waitFor();
  check(!(await page.content()).includes("[object "), "no object drawn as text");
  await page.getByText("1m 35s", { exact: true }).waitFor();
  await page.getByText("5 of 5 live instances applied").waitFor();
  console.log("time at each stage, as a timeline from the history");
  await page.locator(".timeline-list li").first().waitFor();
  const periods = await page.locator(".timeline-list li").evaluateAll((items) => items.map((li) => li.dataset.stage));
  check(JSON.stringify(periods) === JSON.stringify(["off", "dual_write"]), `the stages it went through: ${periods}`);
  await page.locator(".timeline-list li").last().getByText(/so far$/).waitFor();
  check((await page.locator(".timeline-bar .timeline-segment").count()) === 2, "one bar segment per period");
  console.log("who is still on the old shape, per service");
  const services = page.locator("table.services");
  await services.locator("tr", { hasText: "nightly-report" }).getByText(/ago$/).waitFor();
  await services.locator("tr.uses-old", { hasText: "api" }).waitFor();
  check((await services.locator("tbody tr").count()) === 2, "two services reported");
  await page.getByText("Latency p95 (interpolated within its bucket)").waitFor();
  await shot(page, "migration-backfill-1280");

  console.log("pause and resume the backfill");
  await page.getByRole("button", { name: "Pause backfill…" }).click();
  await dialog.getByLabel(/Reason/).fill("peak hours");
  await dialog.getByRole("button", { name: "Pause" }).click();
  await page.locator(".badge.bf-paused").waitFor();
  await page.getByRole("button", { name: "Resume backfill…" }).click();
  await dialog.getByLabel(/Reason/).fill("quiet again");
  await dialog.getByRole("button", { name: "Resume" }).click();
  await page.getByRole("button", { name: "Pause backfill…" }).waitFor();
  const events = (await apiGet("/migrations/users.username-to-handle/audit?limit=2")).entries.map((e) => `${e.action}: ${e.reason}`);
  check(events.join() === "backfill_resumed: quiet again,backfill_paused: peak hours", `backfill events audited: ${events}`);
  console.log("the pause and resume, and the seeded ramps, are marked on the charts");
  // The chart redraws as each audited change comes in on the live feed, so the resume's marker
  // can arrive a moment after the pause's: wait (bounded) for both rather than count at once.
  const pauseMarkers = () => page.locator(".chart").first().locator("svg .marker-pause").count();
  await page
    .waitForFunction(() => document.querySelector(".chart")?.querySelectorAll("svg .marker-pause").length === 2, null, { timeout: 10_000 })
    .catch(async () => check(false, `a pause and a resume marker on the operations chart (found ${await pauseMarkers()})`));
  const markerTitle = await page.locator(".chart").first().locator("svg .marker-pause title").last().textContent();
  check(/backfill (paused|resumed) \(alice/.test(markerTitle), `a marker names the change and who made it: ${markerTitle}`);
  await page.locator(".chart").first().locator("svg .marker-advance, svg .marker-ramp").first().waitFor();
  await page.locator(".chart").first().scrollIntoViewIfNeeded();
  await shot(page, "chart-markers-1280");

  console.log("change the backfill's settings from the card");
  await page.getByRole("button", { name: "Change settings…" }).click();
  await dialog.getByLabel("Batch size (rows)").fill("250");
  await dialog.getByLabel("Hold during autovacuum").selectOption("on");
  await dialog.getByLabel(/Reason/).fill("autovacuum on users tonight");
  await dialog.getByRole("button", { name: "Change settings" }).click();
  await page.getByText("batch size 250", { exact: false }).waitFor();
  await page.getByText("autovacuum on users tonight", { exact: false }).waitFor();
  const progress = await apiGet("/migrations/users.username-to-handle/backfill");
  check(progress.settings.batch_size === 250 && progress.settings.hold_during_autovacuum === true, `settings stored: ${JSON.stringify(progress.settings)}`);
  check(progress.settings.max_replica_lag_ms === 2000, "a field left empty kept its value");
  check(progress.settings_changed.reason === "autovacuum on users tonight", "the reason is kept with the settings");

  console.log("a migration soaking at complete: gate checklist and countdown");
  await page.goto(`${BASE}/#/m/sessions.token-hash`);
  await page.getByText(/Soak ends in (59|60)m/).waitFor();
  await page.getByText("✗ Fails: the old shape must not be dropped yet").waitFor();
  await page.locator(".checklist .check-name", { hasText: "Database saw no old-shape statement" }).first().waitFor();
  await page.locator(".checklist .check-name", { hasText: "Retired old shape held its probation" }).first().waitFor();
  // Created without a retire probation: both retire fields say so.
  for (const term of ["Retire probation", "Retired"]) {
    const value = await page.locator(".meta div", { has: page.locator("dt", { hasText: new RegExp(`^${term}$`) }) }).locator("dd").textContent();
    check(value === "—", `${term} is — without a retire probation: ${value}`);
  }
  await shot(page, "migration-soak-1280");

  console.log("a plan drives a migration: its steps, the next one's countdown, its marker, pause");
  await switchyard("plan", "set", "orders.split-address", "--stage", "live=50,100", "--hold", "1h", "--reason", "ramp live in two steps");
  await page.goto(`${BASE}/#/m/orders.split-address`);
  const planBox = page.getByRole("region", { name: "Plan" });
  // The driver takes the first step at once (the front, 25.5%, is between steps), then holds.
  await planBox.locator(".plan-step.step-current", { hasText: "50%" }).waitFor();
  await planBox.locator(".plan-next", { hasText: "holding live at 50%" }).waitFor();
  await planBox.locator(".plan-countdown").getByText(/in (59m|1h)/).waitFor();
  check((await planBox.locator(".plan-step.step-ahead").textContent()) === "100%", "100% is the step ahead");
  await page.locator(".chart").first().locator("svg .marker title", { hasText: "plan: live 25.5% → 50%" }).waitFor({ state: "attached" });
  await shot(page, "plan-1280");
  await planBox.getByRole("button", { name: "Pause plan…" }).click();
  await dialog.getByLabel(/Reason/).fill("hold for the launch");
  await dialog.getByRole("button", { name: "Pause plan" }).click();
  await planBox.locator(".badge.plan-paused").waitFor();
  const paused = await apiGet("/migrations/orders.split-address/plan");
  check(paused.status === "paused" && paused.status_reason.includes("hold for the launch"), `paused: ${JSON.stringify(paused)}`);
  await planBox.getByRole("button", { name: "Resume plan…" }).waitFor();

  console.log("four eyes: a request from a second operator in the inbox and on the page, rejected");
  const soaking = "sessions.token-hash";
  const version = String((await apiGet(`/migrations/${soaking}`)).version);
  await switchyardAsSecond("record", soaking, "contracted", "--expected-version", version, "--request-approval", "--reason", "drop the old column tonight");
  await page.goto(`${BASE}/#/`);
  const inbox = page.getByRole("region", { name: /Waiting for approval/ });
  await inbox.getByRole("link", { name: soaking }).waitFor();
  const inboxText = await inbox.textContent();
  check(inboxText.includes("record contracted at complete 100%") && !inboxText.includes("[object"), `the inbox says what would change: ${inboxText}`);
  await shot(page, "approvals-inbox-1280");
  await inbox.getByRole("link", { name: soaking }).click();
  const waiting = page.getByRole("region", { name: "Waiting for approval" });
  await waiting.getByText("drop the old column tonight", { exact: false }).waitFor();
  // Not alice's own request: she may approve or reject it.
  await waiting.getByRole("button", { name: "Approve…" }).waitFor();
  await waiting.getByRole("button", { name: "Reject…" }).click();
  await dialog.getByLabel(/Reason/).fill("not before the soak ends");
  await dialog.getByRole("button", { name: "Reject" }).click();
  await waiting.waitFor({ state: "hidden" });
  const decided = (await apiGet(`/approvals?all=true&migration=${soaking}`)).approvals[0];
  check(decided.status === "rejected" && decided.decision_reason === "not before the soak ends" && decided.decided_by.startsWith("alice"), `rejected: ${JSON.stringify(decided)}`);

  console.log("phone width");
  await page.setViewportSize(PHONE);
  await page.goto(`${BASE}/#/m/users.username-to-handle`);
  await page.getByRole("heading", { name: "users.username-to-handle" }).waitFor();
  await page.locator(".chart svg").first().waitFor();
  // Charts redraw at their holder's new width (a ResizeObserver): wait until every one has.
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".chart-plot")].every((holder) => {
      const drawn = holder.querySelector("svg");
      return drawn && Number(drawn.getAttribute("width")) === Math.max(240, Math.round(holder.clientWidth));
    }),
  );
  await noOverflow(page);
  await shot(page, "migration-backfill-phone");
  await page.goto(`${BASE}/#/`);
  await page.getByRole("heading", { name: "Migrations" }).waitFor();
  await page.getByText(/shadow mismatch(es)? in the last hour/).waitFor();
  await noOverflow(page);
  await shot(page, "list-phone");
  await page.goto(`${BASE}/#/m/${BILLING}`);
  await page.getByRole("button", { name: "Ramp…" }).click();
  await dialog.getByLabel(/Reason/).fill("checking the dialog on a phone");
  await page.screenshot({ path: path.join(SHOTS, "ramp-dialog-phone.png") });
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  await noOverflow(page);
  await shot(page, "migration-controls-phone");
  await page.setViewportSize(DESKTOP);

  console.log("a reader sees a read-only view, and the server refuses its changes anyway");
  const readerPage = await browser.newPage();
  watchConsole(readerPage, errors);
  await signIn(readerPage, READER);
  await readerPage.getByRole("heading", { name: "Migrations" }).waitFor();
  await readerPage.getByText("reader · read-only").waitFor();
  await readerPage.getByRole("link", { name: BILLING }).click();
  await readerPage.getByRole("heading", { name: BILLING }).waitFor();
  await readerPage.locator(".title-row .badge", { hasText: "read-only" }).waitFor();
  for (const name of [/^Ramp/, /^Advance/, /^Step back/, /^Record/, /^Pause/]) {
    check((await readerPage.getByRole("button", { name }).count()) === 0, `no ${name} button for a reader`);
  }
  check((await readerPage.locator("input, select, textarea").count()) === 1, "only the traffic range select");
  const status = await readerPage.evaluate(async ([key, token]) => {
    const r = await fetch(`/v1/migrations/${key}/rollout`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ rollout_bp: 10000, expected_version: 1, reason: "reader tries" }),
    });
    return r.status;
  }, [BILLING, READER]);
  check(status === 403, `the server refuses a reader's ramp (got ${status})`);
  await shot(readerPage, "reader-1280");
  await readerPage.close();

  console.log("the server stops: a banner, retries, and live again once it is back");
  await page.goto(`${BASE}/#/m/${BILLING}`);
  await page.locator("#conn.conn-live").waitFor();
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  serverDown = true;
  process.kill(Number(env("SERVER_PID")), "SIGTERM");
  await page.locator("#banner").getByText("Cannot reach the Switchyard server").waitFor();
  await shot(page, "server-unreachable-1280");
  restarted = await restartServer();
  await page.locator("#conn.conn-live").waitFor({ timeout: 30_000 });
  serverDown = false;
  check(await page.locator("#banner").isHidden(), "the banner is gone once connected");
  await switchyard("ramp", BILLING, "--percent", "40", "--latest", "--reason", "after the restart");
  await page.getByTestId("front").getByText("40% of account_id").waitFor();
  check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");

  console.log("latency labels are the server's: the open-ended last bucket reads as over its bound");
  const buckets = (await apiGet("/vocabulary")).latency_buckets;
  const [bounded, overflow] = buckets.slice(-2).map((b) => b.label);
  check(bounded === "≤ 2.5 s" && overflow === "> 2.5 s" && buckets.at(-1).upper_bound_us === null, `the last buckets: ${JSON.stringify(buckets.slice(-2))}`);
  const latency = (bucket) => buckets.map((_, i) => (i === bucket ? 40 : 0));
  const minute = Date.now() - (Date.now() % 60_000);
  const reported = await fetch(`${BASE}/v1/clients/telemetry`, {
    method: "POST",
    headers: { Authorization: `Bearer ${READER}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      service: "api",
      instance_id: "api-7f9c",
      entries: [{
        key: "sessions.token-hash",
        minute_ms: minute,
        old: { reads: 30, writes: 10, errors: 0, latency: latency(buckets.length - 2) },
        new: { reads: 30, writes: 10, errors: 0, latency: latency(buckets.length - 1) },
        comparisons: 0,
        mismatches: 0,
        evaluations_without_entity: 0,
        fallback_evaluations: 0,
      }],
    }),
  });
  check(reported.ok, `telemetry: ${reported.status}`);
  await page.goto(`${BASE}/#/m/sessions.token-hash`);
  const chart = page.getByRole("img", { name: /^Latency p95/ });
  await chart.waitFor();
  const summary = await chart.getAttribute("aria-label");
  // All 40 old operations in the last bounded bucket: the p95 is 95% of the way through it;
  // the new ones in the open-ended bucket, which has no upper bound to interpolate to.
  const [below, top] = [buckets.at(-3).upper_bound_us, buckets.at(-2).upper_bound_us];
  const interpolated = `≈ ${((below + (top - below) * 0.95) / 1e6).toFixed(1)} s`;
  check(summary.includes(`p95 over the period: old ${interpolated}, new ${overflow}.`), `the latency chart's summary: ${summary}`);
  await shot(page, "latency-overflow-1280");

  console.log("an expired token goes back to sign-in with a message");
  await page.evaluate(() => sessionStorage.setItem("switchyard.token", "sy_revoked-or-unknown"));
  await page.reload();
  await page.getByText("Your token was refused").waitFor();
  await page.getByLabel("API token").waitFor();

  check(errors.length === 0, `no console errors:\n${errors.join("\n")}`);
  console.log("dashboard browser test: all passed");
} catch (e) {
  console.error(e);
  for (const p of browser.pages()) {
    await p.screenshot({ path: path.join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
  }
  if (errors.length) console.error(`console errors:\n${errors.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  restarted?.kill("SIGTERM");
}
