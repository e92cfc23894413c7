import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { DeviceKind } from '../../examples/fleet/model.ts';
import { eventually } from '../helpers.ts';
import { get, post, startTwoSilos, telemetry } from './fleet-support.ts';

const CHROMIUM = '/usr/bin/chromium';
const NUMBERS = ['devices', 'online', 'offline', 'inAlert', 'messages'] as const;

describe('examples/fleet: the live page', () => {
  let cluster: Awaited<ReturnType<typeof startTwoSilos>>;
  let browser: Browser;
  let page: Page;

  before(async () => {
    // The page test needs a browser: without one it fails, it is never skipped.
    assert.ok(existsSync(CHROMIUM), `the page test needs Chromium at ${CHROMIUM}`);
    // Offline after a minute: no device goes offline while the page is compared with the API.
    cluster = await startTwoSilos({ offlineAfterMs: 60_000 });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  /** The page's numbers, as numbers. */
  async function shown(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const k of NUMBERS) out[k] = Number(((await page.textContent(`#${k}`)) ?? '').replace(/,/g, ''));
    return out;
  }

  async function send(url: string, n: number, seq: number, kind: DeviceKind, battery = 80): Promise<void> {
    const id = `dev-${String(n).padStart(6, '0')}`;
    const r = await post(
      `${url}/api/devices/${id}/telemetry`,
      telemetry(seq, kind, `site-${n % 3}`, 'region-1', { battery }),
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }

  it('shows the fleet numbers of /api/fleet, live, and devices going into alert and out of it', async () => {
    const { a, b } = cluster;
    await page.goto(`${b.url}/`);
    assert.equal(await page.title(), 'Fleet');
    await eventually(
      'the page to follow /api/live',
      async () => (await page.textContent('#status')) === 'live',
      10_000,
    );

    for (let seq = 1; seq <= 4; seq++)
      for (let n = 1; n <= 10; n++) await send(n % 2 === 0 ? a.url : b.url, n, seq, n % 2 === 0 ? 'meter' : 'sensor');
    await eventually(
      'the page to show 10 devices and 40 messages, as /api/fleet does',
      async () => {
        const [api, page] = [(await get(`${a.url}/api/fleet`)).body, await shown()];
        return api.devices === 10 && api.messages === 40 && NUMBERS.every((k) => page[k] === api[k]);
      },
      15_000,
    );
    assert.deepEqual(await shown(), { devices: 10, online: 10, offline: 0, inAlert: 0, messages: 40 });
    assert.equal(await page.locator('#alerts tr').count(), 0);
    assert.deepEqual(await page.locator('#regions tr[data-region="region-1"] td').allTextContents(), [
      'region-1',
      '10',
      '10',
      '0',
      '0',
      '40',
    ]);

    // A vehicle with a flat battery: it comes into the list, and the count follows.
    await send(a.url, 11, 1, 'vehicle', 5);
    const row = page.locator('#alerts tr[data-device="dev-000011"]');
    await row.waitFor({ state: 'visible', timeout: 15_000 });
    assert.match((await row.textContent()) ?? '', /battery-low/);
    await eventually('the page to count the alert', async () => (await shown()).inAlert === 1, 15_000);
    assert.match((await page.textContent('#log')) ?? '', /dev-000011 \+battery-low/);

    // Charged again: it leaves the list.
    await send(b.url, 11, 2, 'vehicle', 90);
    await row.waitFor({ state: 'detached', timeout: 15_000 });
    await eventually(
      'the page to match /api/fleet after the alert cleared',
      async () => {
        const [api, page] = [(await get(`${a.url}/api/fleet`)).body, await shown()];
        return api.messages === 42 && api.inAlert === 0 && NUMBERS.every((k) => page[k] === api[k]);
      },
      15_000,
    );
  });
});
