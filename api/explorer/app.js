// The auditors' explorer: hash routes over the JSON API, DOM built without innerHTML. Line proofs are
// verified here in the browser; "Verify against the chain" asks the server to re-read the chain.
//   #/trade/<tradeId>   #/participant/<address>[/<runId>]   #/proof/<runId>/<account>/<kind>/<ref>
//   #/day/<YYYY-MM-DD>   #/block/<number>   #/tx/<transactionHash> (the node's own answer, not the index's)
import { verify } from './merkle.js';

const INTERVAL_SECONDS = 900;
const PAGE_SIZE = 500;
const view = document.getElementById('view');

function h(tag, attrs = {}, ...children) {
  const node = document.createElementNS(
    ['svg', 'rect', 'polyline', 'line', 'text', 'title', 'g'].includes(tag) ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml',
    tag,
  );
  for (const [key, value] of Object.entries(attrs)) if (value !== null && value !== undefined) node.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  return node;
}

const hash = value => h('span', { class: 'hash' }, value ?? '—');
const json = (path, label = path) => h('a', { href: path, class: 'hash' }, label);
const route = (path, label) => h('a', { href: '#' + path }, label);
const blockLink = number => h('a', { href: `#/block/${number}`, class: 'block-number' }, number);
const txLink = txHash => h('a', { href: `#/tx/${txHash}`, class: 'tx-hash hash' }, txHash);
const table = (head, rows) => h('table', {}, h('tr', {}, head.map(c => h('th', {}, c))), rows);
const fields = pairs => h('table', {}, pairs.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))));
const num = value => h('td', { class: 'num' }, typeof value === 'number' ? value.toLocaleString('en') : value);

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// The bearer token lives in this tab's sessionStorage only: closing the tab forgets it.
const TOKEN_KEY = 'gridledger.token';
const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(path) {
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const answer = await fetch(path, { headers });
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    const hint = answer.status === 401 ? ' (enter an auditor token above)' : '';
    throw new ApiError(`${path}: ${answer.status} ${body?.detail ?? body?.title ?? answer.statusText}${hint}`, answer.status);
  }
  return body;
}

// --- token -----------------------------------------------------------------------------------------

async function showWhoAmI() {
  const who = document.getElementById('whoami');
  try {
    const me = await api('/auth/me');
    who.textContent = me.kind === 'public' ? 'public data only' : `${me.kind} ${me.name}`;
    who.dataset.kind = me.kind;
  } catch (error) {
    if (error.status !== 401) throw error;
    sessionStorage.removeItem(TOKEN_KEY);
    who.textContent = 'token refused: public data only';
    who.dataset.kind = 'refused';
  }
}

document.getElementById('signin').addEventListener('submit', async event => {
  event.preventDefault();
  const field = document.getElementById('token');
  if (field.value.trim()) sessionStorage.setItem(TOKEN_KEY, field.value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
  field.value = '';
  await showWhoAmI();
  await render();
});

function show(...nodes) {
  view.replaceChildren(...nodes);
}

// --- search --------------------------------------------------------------------------------------

document.getElementById('search').addEventListener('submit', event => {
  event.preventDefault();
  const q = document.getElementById('query').value.trim();
  if (/^0x[0-9a-fA-F]{64}$/.test(q)) location.hash = `#/trade/${q.toLowerCase()}`;
  else if (/^0x[0-9a-fA-F]{40}$/.test(q)) location.hash = `#/participant/${q}`;
  else if (/^\d{4}-\d{2}-\d{2}$/.test(q)) location.hash = `#/day/${q}`;
  else show(h('p', { class: 'error' }, 'Enter a trade id (0x + 64 hex), an address (0x + 40 hex) or a day (YYYY-MM-DD).'));
});

// --- trade ---------------------------------------------------------------------------------------

// How an event's related trade relates to the event's own trade (TradeHistoryOut).
const RELATION = { recorded: 'amends', amended: 'amended by' };

const proofRoute = (runId, line) => `/proof/${runId}/${line.account}/${line.kind}/${line.ref}`;

function eventProvenance(e) {
  // Only a settled event of a run not committed yet has no block.
  if (e.blockNumber === null) return [h('td', { colspan: 2, class: 'muted' }, 'not on chain yet')];
  // A settled event's provenance is the run's commit: its block and transaction, no log index.
  return [
    h('td', {}, 'block ', blockLink(e.blockNumber), h('br'), hash(e.blockHash)),
    h('td', {}, 'tx ', txLink(e.transactionHash), h('br'),
      e.logIndex === null ? 'the run\'s commit' : `log ${e.logIndex}`),
  ];
}

function settledLines(e) {
  return h(
    'div',
    { class: 'run', 'data-run-id': e.runId, 'data-run-version': e.runVersion, 'data-run-status': e.runStatus },
    h('p', {}, 'run ', json(`/settlement-runs/${e.runId}`, e.runId), `, version ${e.runVersion}, ${e.runStatus}`),
    table(
      ['account', 'kind', 'energy (Wh)', 'amount (minor)', 'proof'],
      e.lines.map(line =>
        h(
          'tr',
          { 'data-account': line.account, 'data-kind': line.kindName, 'data-energy-wh': line.energyWh, 'data-amount-minor': line.amountMinor },
          h('td', {}, route(`/participant/${line.account}/${e.runId}`, line.account)),
          h('td', {}, line.kindName),
          num(line.energyWh),
          num(line.amountMinor),
          h('td', {}, h('a', { href: '#' + proofRoute(e.runId, line), 'data-line-proof': '' }, 'verify')),
        ),
      ),
    ),
  );
}

function timelineItem(e, tradeId) {
  return h(
    'li',
    { 'data-event': e.kind, 'data-trade-id': e.tradeId },
    h('strong', {}, e.kind),
    // The history covers the whole amendment chain: say which trade an event belongs to.
    e.tradeId === tradeId ? null : [' of ', route(`/trade/${e.tradeId}`, e.tradeId)],
    e.relatedTradeId ? [` — ${RELATION[e.kind] ?? 'related'} `, route(`/trade/${e.relatedTradeId}`, e.relatedTradeId)] : null,
    e.reasonName ? [' — ', e.reasonName] : null,
    e.kind === 'settled' ? settledLines(e) : null,
    table(['block', 'transaction'], h('tr', {}, eventProvenance(e))),
  );
}

function lineage(ids, tradeId) {
  return h(
    'ol',
    { id: 'lineage' },
    ids.map(id =>
      h('li', { 'data-trade-id': id }, id === tradeId ? h('strong', { 'aria-current': 'page' }, hash(id), ' (this trade)') : route(`/trade/${id}`, id))),
  );
}

async function showTrade(tradeId) {
  const path = `/trades/${tradeId}`;
  // One after the other: a refused token stops at the first request instead of failing twice.
  const trade = await api(path);
  const history = await api(`${path}/history`);
  show(
    h('h2', {}, 'Trade ', hash(trade.tradeId)),
    h('p', {}, 'JSON: ', json(path), ' · ', json(`${path}/history`)),
    fields([
      ['status', trade.status],
      ['seller', route(`/participant/${trade.seller}`, trade.seller)],
      ['buyer', route(`/participant/${trade.buyer}`, trade.buyer)],
      ['delivery', `${trade.deliveryStart} → ${trade.deliveryEnd}`],
      ['energy per interval', `${trade.energyPerIntervalWh.toLocaleString('en')} Wh`],
      ['price', `${trade.priceMinorPerMWh.toLocaleString('en')} minor/MWh`],
      ['nonce', trade.nonce],
      ['deadline', trade.deadline ?? 'never'],
      ['replaces', trade.replaces ? route(`/trade/${trade.replaces}`, trade.replaces) : '—'],
      ['replaced by', trade.replacedBy ? route(`/trade/${trade.replacedBy}`, trade.replacedBy) : '—'],
      ['recorded at', trade.recordedAt],
      ['confirmations', trade.provenance?.confirmations ?? '—'],
    ]),
    serverCheck(
      `/verify/trades/${tradeId}`,
      'Checked by the server: a re-read of the chain',
      'The service finds the trade\'s TradeRecorded and TradeCancelled logs by its id, reads the contract\'s ' +
        'tradeStatus and the blocks\' headers, and compares them field by field with the index this page shows.',
    ),
    h('h2', {}, 'Amendment lineage'),
    h('p', { class: 'muted' }, 'Oldest first; the timeline covers every trade of it.'),
    lineage(history.lineage, tradeId),
    h('h2', {}, 'Timeline'),
    h('ol', { class: 'timeline', id: 'timeline' }, history.events.map(e => timelineItem(e, tradeId))),
  );
}

// --- the server's verification against the chain -------------------------------------------------

const shown = value => (value === null || value === undefined ? '—' : typeof value === 'string' ? value : JSON.stringify(value));
const checkVerdict = check => (check.match ? 'match' : 'mismatch');

function verificationReport(report) {
  const failed = report.checks.filter(c => !c.match).map(c => c.field);
  return h(
    'div',
    { id: 'verification', 'data-verdict': report.verdict },
    h(
      'p',
      { class: `verdict ${report.verdict === 'match' ? 'ok' : 'bad'}` },
      report.verdict === 'match'
        ? `match: ${report.checks.length} checks equal on chain (head ${report.chainHead})`
        : `${report.verdict.toUpperCase()}: ${failed.join(', ') || 'on one side only'} (head ${report.chainHead})`,
    ),
    table(
      ['field', 'index', 'chain', 'verdict'],
      report.checks.map(c =>
        h(
          'tr',
          { 'data-check': c.field, 'data-verdict': checkVerdict(c) },
          h('td', {}, c.field),
          h('td', {}, h('code', {}, shown(c.index))),
          h('td', {}, h('code', {}, shown(c.chain))),
          h('td', { class: `check ${checkVerdict(c)}` }, checkVerdict(c)),
        ),
      ),
    ),
  );
}

/** A section with a button that asks the server to re-read the chain (GET /verify/...) on demand:
 * every verification costs chain reads and lands in the access log, so it is not done on load. */
function serverCheck(path, title, explanation) {
  const output = h('div', { class: 'server-check-output' });
  const button = h('button', { type: 'button', id: 'verify-chain' }, 'Verify against the chain');
  button.addEventListener('click', async () => {
    button.disabled = true;
    output.replaceChildren(h('p', { class: 'muted' }, 'Reading the chain…'));
    try {
      output.replaceChildren(verificationReport(await api(path)), h('p', {}, 'JSON: ', json(path)));
    } catch (error) {
      // Inside a click handler nothing above would catch it: show it where the report would be.
      output.replaceChildren(h('p', { class: 'error', id: 'verification-error' }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  return h('section', { class: 'server-check' }, h('h2', {}, title), h('p', { class: 'muted' }, explanation), button, output);
}

// --- participant and statements ------------------------------------------------------------------

async function showParticipant(address, runId) {
  const parts = [h('h2', {}, 'Participant ', hash(address))];
  try {
    const p = await api(`/participants/${address}`);
    parts.push(
      h('p', {}, 'JSON: ', json(`/participants/${address}`)),
      fields([
        ['kind', p.kind],
        ['status', p.status],
        ['identifier hash', hash(p.identifierHash)],
        ['registered at', p.registeredAt],
      ]),
      h('p', {}, route(`/trades-of/${address}`, 'trades of this participant')),
    );
  } catch (error) {
    parts.push(h('p', { class: 'muted' }, `Not a registered participant (${error.message}); statements may still exist.`));
  }
  const runs = (await api('/settlement-runs?limit=100')).items;
  parts.push(
    h('h2', {}, 'Settlement runs'),
    table(
      ['period', 'version', 'status', 'root', ''],
      runs.map(run =>
        h(
          'tr',
          {},
          h('td', {}, `${run.periodStart} → ${run.periodEnd}`),
          num(run.version),
          h('td', {}, run.status),
          h('td', {}, hash(run.root)),
          h('td', {}, route(`/participant/${address}/${run.runId}`, 'statement')),
        ),
      ),
    ),
  );
  if (runId) parts.push(await statement(address, runId));
  show(...parts);
}

async function statement(address, runId) {
  const path = `/settlement-runs/${runId}/statements/${address}`;
  const s = await api(path);
  return h(
    'section',
    { id: 'statement' },
    h('h2', {}, `Statement of run ${s.run.periodStart} → ${s.run.periodEnd}, version ${s.run.version}`),
    h('p', {}, 'JSON: ', json(path)),
    table(
      ['kind', 'ref / interval', 'energy (Wh)', 'amount (minor)', 'proof'],
      s.lines.map(line =>
        h(
          'tr',
          { 'data-kind': line.kindName },
          h('td', {}, line.kindName),
          h('td', {}, line.intervalStart ?? (line.kind === 1 ? route(`/trade/${line.ref}`, line.ref) : hash(line.ref))),
          num(line.energyWh),
          num(line.amountMinor),
          h('td', {}, route(proofRoute(runId, { ...line, account: address }), 'verify')),
        ),
      ),
    ),
  );
}

async function showTradesOf(address) {
  const page = await api(`/trades?participant=${address}&limit=100`);
  show(
    h('h2', {}, 'Trades of ', hash(address)),
    table(
      ['trade', 'delivery', 'energy/interval (Wh)', 'price (minor/MWh)', 'status'],
      page.items.map(t =>
        h(
          'tr',
          {},
          h('td', {}, route(`/trade/${t.tradeId}`, t.tradeId)),
          h('td', {}, `${t.deliveryStart} → ${t.deliveryEnd}`),
          num(t.energyPerIntervalWh),
          num(t.priceMinorPerMWh),
          h('td', {}, t.status),
        ),
      ),
    ),
    page.nextCursor ? h('p', { class: 'muted' }, 'First 100 only.') : null,
  );
}

// --- proof ---------------------------------------------------------------------------------------

async function showProof(runId, account, kind, ref) {
  const path = `/settlement-runs/${runId}/lines/${account}/${kind}/${ref}/proof`;
  const [proof, run] = await Promise.all([api(path), api(`/settlement-runs/${runId}`)]);
  let result;
  try {
    result = verify(proof.root, proof.leafEncoding, proof.values, proof.proof);
  } catch (error) {
    result = { verified: false, leaf: null, computedRoot: null, error: error.message };
  }
  const rootIsRuns = proof.root.toLowerCase() === run.root.toLowerCase();
  const ok = result.verified && rootIsRuns;
  const why = result.error
    ? `malformed proof: ${result.error}`
    : !result.verified
      ? `computed root ${result.computedRoot} ≠ ${proof.root}`
      : `the proof's root differs from the run's root ${run.root}`;
  show(
    h('h2', {}, 'Line proof'),
    h('p', {}, 'JSON: ', json(path)),
    h(
      'section',
      { class: 'browser-check' },
      h('h2', {}, 'Checked in this browser: the Merkle proof'),
      h('p', { class: 'muted' }, 'This page hashed the line\'s values into its leaf and folded the proof up to a root ' +
        '(keccak-256 here, not on the server), then compared it with the run\'s root as the API serves it.'),
      h(
        'p',
        { id: 'verdict', class: `verdict ${ok ? 'ok' : 'bad'}`, 'data-verified': String(ok) },
        ok ? `verified against root ${proof.root}` : `NOT verified: ${why}`,
      ),
      fields([
        ['leaf encoding', h('code', {}, proof.leafEncoding.join(', '))],
        ['values', h('code', {}, proof.values.join(', '))],
        ['leaf (computed here)', hash(result.leaf)],
        ['leaf (as served)', hash(proof.leafHash)],
        ['proof', h('code', {}, proof.proof.join(' '))],
        ['root of the run', [hash(run.root), ` (${run.status}, version ${run.version})`]],
        ['committed by', proof.transactionHash ? [txLink(proof.transactionHash), ' in block ', blockLink(proof.blockNumber)] : '—'],
        ['contract', [hash(proof.contractAddress), ` on chain ${proof.chainId}: verifyLine(runId, …values[1:], proof)`]],
      ]),
    ),
    serverCheck(
      `/verify/settlement-runs/${runId}/lines/${account}/${kind}/${ref}`,
      'Checked by the server: a re-read of the chain',
      'The service rebuilds the line\'s leaf and proof from the run\'s stored lines, reads the run\'s root from ' +
        'the Settlement contract and asks the contract itself (verifyLine, an eth_call) whether the proof holds.',
    ),
    h('p', {}, route(`/participant/${account}/${runId}`, '← statement')),
  );
}

// --- a day: runs and the volume / price chart ----------------------------------------------------

async function tradesOverlapping(from, to) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ deliveryFrom: from, deliveryTo: to, status: 'recorded', limit: PAGE_SIZE });
    if (cursor) query.set('cursor', cursor);
    const page = await api(`/trades?${query}`);
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

/** The public aggregates per interval (GET /market/intervals), as the chart's series. */
async function intervalSeries(from, to) {
  const market = await api(`/market/intervals?${new URLSearchParams({ from, to })}`);
  return market.intervals.map(i => ({
    start: Date.parse(i.intervalStart) / 1000,
    energyWh: i.volumeWh,
    trades: i.tradeCount,
    vwapMinorPerMWh: i.vwapMinorPerMWh,
  }));
}

function chart(series) {
  const [width, height, left, right, top, bottom] = [960, 260, 72, 90, 10, 30];
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const maxE = Math.max(1, ...series.map(s => s.energyWh));
  const prices = series.map(s => s.vwapMinorPerMWh).filter(p => p !== null);
  const maxP = Math.max(1, ...prices);
  const slot = plotW / series.length;
  const x = i => left + i * slot;
  const bars = series.map((s, i) => {
    const barH = (s.energyWh / maxE) * plotH;
    const label = `${new Date(s.start * 1000).toISOString().slice(11, 16)}Z: ${(s.energyWh / 1e6).toFixed(3)} MWh` +
      (s.vwapMinorPerMWh === null ? '' : `, VWAP ${s.vwapMinorPerMWh.toFixed(0)} minor/MWh`);
    return h('rect', { class: 'bar', x: x(i) + 0.5, y: top + plotH - barH, width: Math.max(slot - 1, 1), height: barH, 'data-energy-wh': s.energyWh },
      h('title', {}, label));
  });
  const points = series
    .map((s, i) => (s.vwapMinorPerMWh === null ? null : `${x(i) + slot / 2},${top + plotH - (s.vwapMinorPerMWh / maxP) * plotH}`))
    .filter(Boolean);
  const hours = [0, 6, 12, 18, 24].map(hour =>
    h('text', { x: x(hour * 4), y: height - 10, 'text-anchor': 'middle' }, `${String(hour).padStart(2, '0')}:00`));
  return h(
    'svg',
    { id: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'volume and volume-weighted price per interval' },
    h('line', { x1: left, y1: top + plotH, x2: width - right, y2: top + plotH, stroke: '#57606a' }),
    bars,
    points.length ? h('polyline', { class: 'price', points: points.join(' ') }) : null,
    hours,
    h('text', { x: left - 6, y: top + 10, 'text-anchor': 'end' }, `${(maxE / 1e6).toFixed(2)} MWh`),
    h('text', { x: width - right + 6, y: top + 10 }, `${maxP.toFixed(0)} /MWh`),
  );
}

async function showDay(day) {
  const start = Date.parse(`${day}T00:00:00Z`) / 1000;
  if (Number.isNaN(start)) throw new ApiError(`not a day: ${day}`);
  const end = start + 96 * INTERVAL_SECONDS;
  const iso = s => new Date(s * 1000).toISOString().replace('.000Z', '+00:00');
  // Trades name their counterparties: only with a token. The chart is public market data.
  const [series, runs, trades] = await Promise.all([
    intervalSeries(iso(start), iso(end)),
    api(`/settlement-runs?${new URLSearchParams({ periodStart: iso(start), periodEnd: iso(end) })}`),
    token() ? tradesOverlapping(iso(start), iso(end)) : Promise.resolve(null),
  ]);
  const total = series.reduce((sum, s) => sum + s.energyWh, 0);
  show(
    h('h2', {}, `${day} (UTC)`),
    h('p', {}, `${(total / 1e6).toFixed(3)} MWh delivered under recorded trades this day. `,
      h('span', { class: 'muted' }, 'Bars: volume per 15-minute interval; line: volume-weighted price.')),
    chart(series),
    h('h2', {}, 'Settlement runs within the day'),
    table(
      ['period', 'version', 'status', 'root', 'lines'],
      runs.items.map(run =>
        h('tr', {}, h('td', {}, `${run.periodStart} → ${run.periodEnd}`), num(run.version), h('td', {}, run.status),
          h('td', {}, hash(run.root)), num(run.lineCount))),
    ),
    h('h2', {}, 'Trades'),
    trades === null ? h('p', { class: 'muted', id: 'trades-need-token' }, 'Enter an auditor token above to list the trades.') : table(
      ['trade', 'seller → buyer', 'delivery', 'Wh/interval', 'minor/MWh'],
      trades.map(t =>
        h('tr', {}, h('td', {}, route(`/trade/${t.tradeId}`, `${t.tradeId.slice(0, 12)}…`)),
          h('td', {}, route(`/participant/${t.seller}`, t.seller.slice(0, 10)), ' → ', route(`/participant/${t.buyer}`, t.buyer.slice(0, 10))),
          h('td', {}, `${t.deliveryStart.slice(11, 16)}–${t.deliveryEnd.slice(11, 16)}`), num(t.energyPerIntervalWh), num(t.priceMinorPerMWh))),
    ),
  );
}

// --- the chain's own answer ----------------------------------------------------------------------

async function showBlock(number) {
  const path = `/chain/blocks/${number}`;
  const block = await api(path);
  show(
    h('h2', {}, `Block ${block.number}`),
    h('p', { class: 'muted' }, 'As the node has it now, not as the index stored it: compare the hash with a provenance\'s block hash.'),
    h('p', {}, 'JSON: ', json(path)),
    fields([
      ['hash', h('span', { id: 'block-hash', class: 'hash' }, block.hash)],
      ['parent', block.number > 0 ? [blockLink(block.number - 1), h('br'), hash(block.parentHash)] : hash(block.parentHash)],
      ['time', block.timestamp],
      ['confirmations', `${block.confirmations} (${block.final ? 'final' : 'not final yet'})`],
    ]),
    h('h3', {}, `${block.transactionHashes.length} transaction(s)`),
    h('ul', {}, block.transactionHashes.map(txHash => h('li', {}, txLink(txHash)))),
  );
}

const argValue = value => (value !== null && typeof value === 'object' ? JSON.stringify(value) : String(value));

async function showTransaction(txHash) {
  const path = `/chain/transactions/${txHash}`;
  const tx = await api(path);
  show(
    h('h2', {}, 'Transaction ', hash(tx.hash)),
    h('p', { class: 'muted' }, 'Read from the node, logs decoded with the contracts\' ABI (integers as decimal strings).'),
    h('p', {}, 'JSON: ', json(path)),
    fields([
      ['block', [blockLink(tx.blockNumber), h('br'), hash(tx.blockHash)]],
      ['time', tx.blockTime],
      ['from', hash(tx.from)],
      ['to', [hash(tx.to), tx.contract ? ` (${tx.contract})` : '']],
      ['status', h('span', { id: 'tx-status' }, tx.succeeded ? 'succeeded' : 'reverted')],
      ['gas used', tx.gasUsed.toLocaleString('en')],
      ['confirmations', `${tx.confirmations} (${tx.final ? 'final' : 'not final yet'})`],
    ]),
    h('h3', {}, `${tx.logs.length} log(s)`),
    table(
      ['log', 'contract', 'event', 'arguments'],
      tx.logs.map(log =>
        h(
          'tr',
          { 'data-log-index': log.logIndex, 'data-event': log.event ?? '' },
          num(log.logIndex),
          h('td', {}, log.contract ?? hash(log.address)),
          h('td', {}, log.event ?? 'not decoded'),
          h('td', {}, log.event
            ? fields(Object.entries(log.args).map(([name, value]) => [name, h('span', { 'data-arg': name, class: 'hash' }, argValue(value))]))
            : h('code', {}, [...log.topics, log.data].join(' '))),
        ),
      ),
    ),
  );
}

// --- router --------------------------------------------------------------------------------------

const routes = [
  [/^#\/block\/(\d+)$/, showBlock],
  [/^#\/tx\/(0x[0-9a-fA-F]{64})$/, showTransaction],
  [/^#\/trade\/(0x[0-9a-fA-F]{64})$/, showTrade],
  [/^#\/participant\/(0x[0-9a-fA-F]{40})(?:\/(0x[0-9a-fA-F]{64}))?$/, showParticipant],
  [/^#\/trades-of\/(0x[0-9a-fA-F]{40})$/, showTradesOf],
  [/^#\/proof\/(0x[0-9a-fA-F]{64})\/(0x[0-9a-fA-F]{40})\/(\d+)\/(0x[0-9a-fA-F]{64})$/, showProof],
  [/^#\/day\/(\d{4}-\d{2}-\d{2})$/, showDay],
];

// One render at a time: a hash that changes while a page is still loading (a quick second click)
// is rendered after it, so a slower, older page can never replace the newer one. The body says
// which hash is on screen (data-rendered) once nothing is left to render (data-state="ready"):
// what a script driving the page waits for before it acts on the page it navigated to.
let rendering = null;
let renderAgain = false;

function render() {
  if (rendering) {
    renderAgain = true;
    return rendering;
  }
  document.body.dataset.state = 'loading';
  rendering = renderHash().finally(() => {
    rendering = null;
    if (renderAgain) {
      renderAgain = false;
      render();
    } else {
      document.body.dataset.state = 'ready';
    }
  });
  return rendering;
}

async function renderHash() {
  const current = location.hash;
  const match = routes.map(([pattern, handler]) => [pattern.exec(current), handler]).find(([m]) => m);
  try {
    if (match) await match[1](...match[0].slice(1));
  } catch (error) {
    show(h('p', { class: 'error', id: 'error' }, error instanceof ApiError ? error.message : `Error: ${error.message}`));
  } finally {
    document.body.dataset.rendered = current;
  }
}

window.addEventListener('hashchange', render);
showWhoAmI().then(render, error => {
  show(h('p', { class: 'error', id: 'error' }, `Error: ${error.message}`));
  document.body.dataset.state = 'ready';
});
