// Drives the dashboard in headless Chromium: loads /admin/, enters the
// token, checks the health cards, the charts of the last hour (drawn, with
// data points), the subscriber that falls behind (marked, above the fold),
// the seeded puppets and a dead letter, clicks re-drive and sees the dead
// count drop. Saves a screenshot.
//
// Env: WXKF_URL (manager base URL), WXKF_ADMIN_TOKEN, WXKF_PUPPET_PORT (the
// dead letter's puppet port: nothing listens there until re-drive),
// WXKF_SCREENSHOT (path).
import { chromium } from "playwright-core";
import http from "node:http";

const base = process.env.WXKF_URL;
const token = process.env.WXKF_ADMIN_TOKEN;
const puppetPort = Number(process.env.WXKF_PUPPET_PORT);
const screenshot = process.env.WXKF_SCREENSHOT || "dashboard.png";
const fail = (message) => { console.error("FAIL: " + message); process.exit(1); };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  await page.goto(base + "/admin/");
  await page.fill("#token", token);
  await page.click("#login button");
  await page.waitForSelector("#puppets tbody tr[data-kf-id='wkdash-ok']", { timeout: 10000 });

  // The desk is down: its deliveries die within the (short) retry window,
  // and it is marked as falling behind; the CRM that answers is not.
  const desk = "#subscriptions tbody tr:has(td:text-is('http://127.0.0.1:" + process.env.WXKF_DESK_PORT + "/desk'))";
  const crm = "#subscriptions tbody tr:has(td:text-is('http://127.0.0.1:" + process.env.WXKF_CRM_PORT + "/wechat'))";
  let deskLagging = false;
  for (let i = 0; i < 50 && !deskLagging; i++) {
    deskLagging = await page.$eval(desk, (tr) => tr.classList.contains("lagging")).catch(() => false);
    if (!deskLagging) { await page.waitForTimeout(200); await page.click("#login button"); await page.waitForTimeout(300); }
  }
  if (!deskLagging) fail("the subscriber that is down is not marked as falling behind: " + (await page.textContent("#subscriptions")));
  if (await page.$eval(crm, (tr) => tr.classList.contains("lagging"))) fail("the CRM that answers is marked as falling behind");
  const deskError = await page.textContent(desk);
  if (!deskError.includes("connection failed")) fail("the desk's last error is not shown: " + deskError);
  const laggingTarget = await page.$("#targets tbody tr.lagging[data-target^='subscription ']");
  if (!laggingTarget) fail("the falling-behind table does not mark the desk: " + (await page.textContent("#targets")));
  const box = await laggingTarget.boundingBox();
  const viewport = page.viewportSize();
  if (!box || box.y + box.height > viewport.height) fail(`the lagging subscriber is below the fold (${JSON.stringify(box)} in ${JSON.stringify(viewport)})`);
  if (!(await page.$("#health-dead.alert"))) fail("dead letters are not shown red in the health strip");
  if (await page.$("#health-store.alert")) fail("the store is shown not ready");

  // Every chart is drawn with data points of this minute.
  for (const id of ["chart-accepted", "chart-deliveries", "chart-latency", "chart-waiting"]) {
    const points = Number(await page.getAttribute("#" + id, "data-points"));
    if (!(points > 0)) fail(`${id} has no data points (${points})`);
    if (!(await page.$(`#${id} canvas`))) fail(`${id} is not drawn`);
  }
  const legend = await page.textContent("#chart-waiting");
  if (!legend.includes("puppet wwdashboard/wkdash-off")) fail("the parked wake-up's wait is not charted: " + legend);
  const accepted = await page.textContent("#chart-accepted");
  if (!accepted.includes("wechat") || !accepted.includes("decrypted")) fail("pushes by kind missing: " + accepted);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-overview.png") });
  const rows = await page.$$eval("#puppets tbody tr", (trs) => trs.map((tr) => tr.dataset.kfId));
  for (const kf of ["wkdash-ok", "wkdash-off", "wkdash-dead"]) {
    if (!rows.includes(kf)) fail(`puppet ${kf} not shown (rows: ${rows})`);
  }
  const offline = await page.textContent("#puppets tr[data-kf-id='wkdash-off'] td:nth-child(3)");
  if (offline.trim() !== "offline") fail("wkdash-off should show offline, shows " + offline);
  const deadCount = async () => (await page.textContent("#puppets tr[data-kf-id='wkdash-dead'] .dead-count")).trim();
  if ((await deadCount()) !== "1") fail("expected 1 dead letter, dashboard shows " + (await deadCount()));
  const failures = await page.textContent("#failures tbody");
  if (!failures.includes("connection failed")) fail("the dead letter's error is not listed: " + failures);

  // The puppet comes up; re-drive its dead letters from the dashboard.
  const puppet = http.createServer((req, res) => { res.end("ok"); }).listen(puppetPort, "127.0.0.1");
  await page.click("#puppets tr[data-kf-id='wkdash-dead'] button.redrive");
  let count = await deadCount();
  for (let i = 0; i < 50 && count !== "0"; i++) {
    await page.waitForTimeout(200);
    await page.click("#login button");
    await page.waitForTimeout(200);
    count = await deadCount();
  }
  if (count !== "0") fail("dead count did not drop after re-drive: " + count);

  // Apps: issue a key (shown once), see it listed without itself, revoke it.
  const app = "#apps tr[data-app-id='wxdashboard012345']";
  await page.waitForSelector(app, { timeout: 10000 });
  await page.click(app + " button.issue");
  await page.waitForSelector("#new-key-value", { timeout: 10000 });
  const key = (await page.textContent("#new-key-value")).trim();
  if (!key.startsWith("wxk_")) fail("issued key not shown: " + key);
  await page.waitForSelector(app + " .key", { timeout: 10000 });
  if ((await page.textContent(app)).includes(key)) fail("the key is listed, not only shown once");
  const tokenAnswer = await page.evaluate(async (k) => (await fetch("/wechat/wxdashboard012345/token", { headers: { Authorization: "Bearer " + k } })).status, key);
  if (tokenAnswer === 401) fail("the issued key is refused");
  await page.click(app + " .key button.revoke");
  for (let i = 0; i < 50 && (await page.$(app + " .key")); i++) await page.waitForTimeout(100);
  if (await page.$(app + " .key")) fail("revoked key still listed");
  const afterRevoke = await page.evaluate(async (k) => (await fetch("/wechat/wxdashboard012345/token", { headers: { Authorization: "Bearer " + k } })).status, key);
  if (afterRevoke !== 401) fail("a revoked key is still accepted: " + afterRevoke);
  await page.screenshot({ path: screenshot, fullPage: true });
  puppet.close();
  console.log("dashboard ok: health, four charts with data points, the down subscriber marked above the fold, puppets listed, dead letter shown, re-drive delivered it, an app key issued once and revoked; screenshots " + screenshot + " and its -overview");
} finally {
  await browser.close();
}
