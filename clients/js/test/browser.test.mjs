// End-to-end test in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core; CHROMIUM overrides the path): the demo page served by
// `arq serve` in its dev default, two users in one room. Screenshots go to
// clients/js/test-artifacts/ (not committed).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { Server } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ART = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'test-artifacts');
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const srv = new Server();
let ctx = null;
let profile = '';

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM + ' is missing: run scripts/deps.sh (apt-get install chromium)');
  mkdirSync(ART, { recursive: true });
  await srv.start();
  profile = mkdtempSync(join(tmpdir(), 'arq-chromium-'));
  // launchPersistentContext: a fresh --user-data-dir of our own
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    timeout: 60000,
    viewport: { width: 1100, height: 700 },
  });
}, { timeout: 330000 });

after(async () => {
  if (ctx) await ctx.close().catch(() => {});
  await srv.cleanup();
  if (profile) rmSync(profile, { recursive: true, force: true });
}, { timeout: 30000 });

async function openUser(name, room) {
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${srv.httpURL}/?name=${name}&room=${room}&autojoin=1`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  return { page, errors };
}

test('demo page: two users see each other, chat, show on the admin page, survive a server restart, and see a leave', { timeout: 120000 }, async () => {
  const a = await openUser('alice', 'e2e');
  const b = await openUser('bob', 'e2e');
  // each sees the other in presence
  await a.page.waitForSelector('#members li[data-user="bob"]', { timeout: 10000 });
  await b.page.waitForSelector('#members li[data-user="alice"]', { timeout: 10000 });
  assert.equal(await a.page.textContent('#count'), '2');

  // a message typed in one page appears in the other
  await b.page.fill('#text', 'hello from bob');
  await b.page.click('#sendBtn');
  await a.page.waitForSelector('#log li.msg:has-text("hello from bob")', { timeout: 10000 });
  await b.page.waitForSelector('#log li.msg.me:has-text("hello from bob") .lat', { timeout: 10000 });
  assert.equal(await b.page.textContent('#sent'), '1');
  assert.equal(await a.page.textContent('#received'), '1');
  await a.page.screenshot({ path: join(ART, 'demo-alice.png') });
  await b.page.screenshot({ path: join(ART, 'demo-bob.png') });

  // the admin page (admin listener) shows the connections
  const admin = await ctx.newPage();
  await admin.goto(srv.adminURL + '/');
  await admin.waitForSelector('#ready[data-ready="true"]', { timeout: 10000 });
  await admin.waitForFunction(() => Number(document.getElementById('connections').textContent) >= 2, null, { timeout: 10000 });
  await admin.waitForSelector('#tenants tr[data-tenant="demo"]', { timeout: 10000 });
  await admin.waitForFunction(() => document.getElementById('rate-in').textContent !== '-', null, { timeout: 10000 });
  assert.match(await admin.textContent('#node'), /^node-/);
  await admin.screenshot({ path: join(ART, 'admin.png') });
  await admin.close();

  // a server restart: both pages reconnect and carry on
  await srv.stop();
  await a.page.waitForSelector('#status[data-state="disconnected"]', { timeout: 10000 });
  await srv.start();
  for (const u of [a, b]) {
    await u.page.waitForSelector('#log li.sys:has-text("reconnected")', { timeout: 20000 });
    await u.page.waitForSelector('#status[data-state="connected"]', { timeout: 20000 });
  }
  await a.page.waitForSelector('#members li[data-user="bob"]', { timeout: 10000 });
  await a.page.fill('#text', 'back again');
  await a.page.click('#sendBtn');
  await b.page.waitForSelector('#log li.msg:has-text("back again")', { timeout: 10000 });

  // closing one page makes the other show the leave
  await b.page.close();
  await a.page.waitForSelector('#log li.leave:has-text("bob left")', { timeout: 10000 });
  await a.page.waitForFunction(() => !document.querySelector('#members li[data-user="bob"]'), null, { timeout: 10000 });
  assert.equal(await a.page.textContent('#count'), '1');
  await a.page.screenshot({ path: join(ART, 'demo-after-leave.png') });
  assert.deepEqual(a.errors.concat(b.errors).map(String), []);
  await a.page.close();
});

test('the dev token endpoint refuses bad names; a refused token stops the page client', { timeout: 30000 }, async () => {
  const page = await ctx.newPage();
  await page.goto(`${srv.httpURL}/`);
  const st = await page.evaluate(async () => (await fetch('/demo/token?user=' + encodeURIComponent('a b'))).status);
  assert.equal(st, 400);
  // the client's auth probe turns a 401 at the upgrade into a fatal error
  const res = await page.evaluate(async () => {
    const { ArqonClient } = await import('/demo/client/index.js');
    const c = new ArqonClient({ url: 'ws://' + location.host, token: 'not.a.jwt' });
    const states = [];
    c.on('state', (s) => states.push(s.state));
    try {
      await c.connect();
      return { ok: true };
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500));
      return { code: e.code, message: e.message, states: states };
    }
  });
  assert.equal(res.code, 'AUTH');
  assert.match(res.message, /401/);
  assert.deepEqual(res.states, ['connecting', 'closed']);
  await page.close();
});
