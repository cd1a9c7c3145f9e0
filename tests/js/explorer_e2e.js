// Drives the explorer page in headless Chromium (playwright-core, the system's /usr/bin/chromium)
// for tests/test_explorer.py. argv[2]: JSON {baseUrl, auditorToken, tradeId, account, runId, kind,
// day, executablePath?, screenshotDir?}. stdout: JSON of what the page showed. Exits 2 when Chromium cannot start.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const TIMEOUT_MS = 20_000;

async function main() {
  const input = JSON.parse(process.argv[2]);
  const base = new URL(input.baseUrl);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gridledger-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: input.executablePath || '/usr/bin/chromium',
      headless: true,
      args: ARGS,
      timeout: TIMEOUT_MS,
    });
  } catch (error) {
    process.stderr.write(`cannot start Chromium: ${error.message}\n`);
    fs.rmSync(profile, { recursive: true, force: true });
    process.exit(2);
  }
  const out = { errors: [], foreignRequests: [] };
  try {
    context.setDefaultTimeout(TIMEOUT_MS);
    context.on('request', request => {
      const url = new URL(request.url());
      if (url.protocol.startsWith('http') && url.host !== base.host) out.foreignRequests.push(request.url());
    });
    const page = await context.newPage();
    page.on('pageerror', error => out.errors.push(`pageerror: ${error.message}`));
    page.on('console', message => message.type() === 'error' && out.errors.push(`console: ${message.text()}`));
    await page.goto(`${input.baseUrl}/explorer/`);

    // Without a token: a trade is not public, the day's chart is.
    await page.waitForSelector('#whoami[data-kind="public"]');
    await search(page, input.tradeId, `#/trade/${input.tradeId.toLowerCase()}`);
    out.withoutToken = await (await page.waitForSelector('#error')).textContent();
    await search(page, input.day, `#/day/${input.day}`);
    await page.waitForSelector('#chart');
    out.publicDay = {
      bars: await page.$$eval('#chart rect.bar', bars => bars.map(b => Number(b.dataset.energyWh))),
      tradesNeedToken: (await page.$('#trades-need-token')) !== null,
    };
    await signIn(page, input.auditorToken);
    out.whoami = await page.textContent('#whoami');

    // A trade id in the search box: the timeline (the trade's history) with blocks and transactions.
    await search(page, input.tradeId, `#/trade/${input.tradeId.toLowerCase()}`);
    await page.waitForSelector('#timeline li');
    await snap(page, input, 'trade');
    out.trade = {
      events: await page.$$eval('#timeline li', items => items.map(li => li.dataset.event)),
      eventTradeIds: await page.$$eval('#timeline li', items => items.map(li => li.dataset.tradeId)),
      blockNumbers: await page.$$eval('#timeline .block-number', s => s.map(e => Number(e.textContent))),
      transactionHashes: await page.$$eval('#timeline .tx-hash', s => s.map(e => e.textContent)),
      jsonLink: await page.getAttribute('a[href^="/trades/"]', 'href'),
      lineage: await page.$$eval('#lineage li', items => items.map(li => li.dataset.tradeId)),
      settled: await page.$$eval('#timeline li[data-event="settled"] .run', runs => runs.map(run => ({
        runId: run.dataset.runId,
        runVersion: Number(run.dataset.runVersion),
        runStatus: run.dataset.runStatus,
        lines: [...run.querySelectorAll('tr[data-account]')].map(tr => ({
          account: tr.dataset.account,
          kindName: tr.dataset.kind,
          energyWh: Number(tr.dataset.energyWh),
          amountMinor: Number(tr.dataset.amountMinor),
          proof: tr.querySelector('a[data-line-proof]').getAttribute('href'),
        })),
      }))),
    };
    // The server's re-read of the chain, on demand.
    out.tradeVerification = await serverVerification(page);
    await snap(page, input, 'trade-verified');

    // The recorded event's transaction link: the node's own answer, logs decoded; then its block.
    await page.click('#timeline li[data-event="recorded"] a.tx-hash');
    await page.waitForSelector('#tx-status');
    out.transaction = {
      hash: new URL(page.url()).hash,
      status: await page.textContent('#tx-status'),
      logs: await page.$$eval('tr[data-log-index]', rows => rows.map(row => ({
        logIndex: Number(row.dataset.logIndex),
        event: row.dataset.event,
        tradeId: row.querySelector('[data-arg="tradeId"]')?.textContent ?? null,
      }))),
    };
    await snap(page, input, 'transaction');
    await page.click('a.block-number');
    out.block = { hash: new URL(page.url()).hash, blockHash: await (await page.waitForSelector('#block-hash')).textContent() };
    await search(page, input.tradeId, `#/trade/${input.tradeId.toLowerCase()}`);
    await page.waitForSelector('#timeline li');

    // From the settled event to the account's trade line: verified in the page, then by the server.
    await page.click(`#timeline li[data-event="settled"] tr[data-account="${input.account}"][data-kind="trade"] a[data-line-proof]`);
    out.settledLine = { hash: null, browser: await verdict(page) };
    out.settledLine.hash = new URL(page.url()).hash;
    out.settledLine.server = await serverVerification(page);
    await snap(page, input, 'settled-line');

    // The account's statement of the run, then one line's proof, verified in the page.
    // The proof page just left links to this statement too: clicking before the search's page is
    // rendered could hit the old page's link, or the new page's link moving under the pointer.
    await search(page, input.account, `#/participant/${input.account}`);
    await page.click(`a[href="#/participant/${input.account}/${input.runId}"]`);
    await rendered(page, `#/participant/${input.account}/${input.runId}`);
    await page.waitForSelector('#statement');
    out.statementKinds = await page.$$eval('#statement tr[data-kind]', rows => rows.map(r => r.dataset.kind));
    await page.click(`#statement tr[data-kind="${input.kind}"] a`);
    out.verified = await verdict(page);
    await snap(page, input, 'proof');

    // The same line with one value of the proof document changed on its way to the page.
    const tampered = await context.newPage();
    await tampered.route('**/proof', async route => {
      const answer = await route.fetch();
      const proof = await answer.json();
      proof.values[5] = String(BigInt(proof.values[5]) + 1n);
      await route.fulfill({ response: answer, json: proof });
    });
    await tampered.goto(`${input.baseUrl}/explorer/`);
    await signIn(tampered, input.auditorToken);  // the token is kept per tab
    await tampered.goto(page.url());
    out.tampered = await verdict(tampered);
    await snap(tampered, input, 'tampered');

    // The day's chart.
    await search(page, input.day, `#/day/${input.day}`);
    await page.waitForSelector('#chart');
    await snap(page, input, 'day');
    out.chart = {
      bars: await page.$$eval('#chart rect.bar', bars => bars.map(b => Number(b.dataset.energyWh))),
      hasPriceLine: (await page.$('#chart polyline.price')) !== null,
    };
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out));
}

/** Types `query` into the search box and waits until the page it leads to (`hash`) is rendered. */
async function search(page, query, hash) {
  await page.fill('#query', query);
  await page.click('#search button');
  await rendered(page, hash);
}

/** Waits until the explorer has rendered `hash` and has nothing left to render. */
async function rendered(page, hash) {
  await page.waitForSelector(`body[data-state="ready"][data-rendered="${hash}"]`, { state: 'attached' });
}

async function signIn(page, token) {
  await page.fill('#token', token);
  await page.click('#signin button');
  await page.waitForSelector('#whoami[data-kind="token"]');
}

async function snap(page, input, name) {
  if (input.screenshotDir) await page.screenshot({ path: path.join(input.screenshotDir, `${name}.png`), fullPage: true });
}

/** Clicks "Verify against the chain" and reads the server's report (or its error) off the page. */
async function serverVerification(page) {
  await page.click('#verify-chain');
  const shown = await page.waitForSelector('#verification, #verification-error');
  if ((await shown.getAttribute('id')) === 'verification-error') return { error: await shown.textContent() };
  return {
    verdict: await shown.getAttribute('data-verdict'),
    checks: await page.$$eval('#verification tr[data-check]', rows => rows.map(r => [r.dataset.check, r.dataset.verdict])),
  };
}

async function verdict(page) {
  const element = await page.waitForSelector('#verdict');
  return { verified: (await element.getAttribute('data-verified')) === 'true', text: await element.textContent() };
}

main().catch(error => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
