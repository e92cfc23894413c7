// The dashboard in a headless Chromium, over a cluster of three silo
// processes sharing SQLite membership and storage: the page lists the silos,
// shows calls per second of the type under load and the hot grain, finds a
// grain, and shows a silo killed with SIGKILL as dead. Set DASHBOARD_SCREENSHOT
// to a file name to keep a screenshot of the page at the end.

import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ClusterClient, silentLogger } from 'granary';
import { SiloProcess, type SiloProcessOptions } from 'granary/testing';
import type { DashCounter, DashPing } from '../grains/dashboard.ts';

/** What the functions run in the page use of it (this project compiles without the DOM's types). */
declare const document: {
  querySelector(
    selector: string,
  ): { getAttribute(name: string): string | null; readonly textContent: string | null } | null;
  readonly body: { readonly innerText: string };
};

/** The browser: CHROMIUM_PATH, else the system's. */
const executablePath = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const grains = join(import.meta.dirname, '..', 'grains', 'dashboard.ts');
const fast = {
  iAmAliveIntervalMs: 200,
  tableRefreshIntervalMs: 100,
  probeIntervalMs: 150,
  probeTimeoutMs: 300,
  missedProbesLimit: 3,
  joinTimeoutMs: 5000,
};

/** Waits until `fn(arg)` is true in the page; fails naming `what`, with the page's text. */
async function until<A>(page: Page, what: string, fn: (arg: A) => boolean, arg: A, timeoutMs = 20_000): Promise<void> {
  try {
    await page.waitForFunction(fn as (a: unknown) => boolean, arg as unknown, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    const text = await page.evaluate(() => document.body.innerText).catch(() => '(page gone)');
    throw new Error(
      `the page did not show ${what} within ${timeoutMs} ms (${(e as Error).message})\n${text.slice(0, 3000)}`,
    );
  }
}

describe('the dashboard in a browser', () => {
  before(() => {
    // Never skipped: .ci/run installs Chromium where it is missing.
    assert.ok(existsSync(executablePath), `no Chromium at ${executablePath}: apt-get install -y chromium`);
  });
  const processes: SiloProcess[] = [];
  let client: ClusterClient | undefined;
  let browser: Browser | undefined;
  let driving = true;
  after(async () => {
    driving = false;
    await browser?.close();
    await client?.close();
    await Promise.all(processes.map((p) => p.kill().catch(() => undefined)));
  });

  it('shows the silos, the load and the hottest grain, finds a grain, and shows a killed silo dead', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-dash-'));
    const opts: SiloProcessOptions = {
      grains,
      clusterId: `dash-${Math.random().toString(36).slice(2, 8)}`,
      membership: { kind: 'sqlite', path: join(dir, 'cluster.db') },
      storage: { kind: 'sqlite', path: join(dir, 'state.db') },
      membershipOptions: fast,
      siloOptions: {
        httpPort: 0,
        responseTimeoutMs: 5000,
        loadReportIntervalMs: 100,
        dashboard: { hotGrainCallsPerSecond: 200 },
      },
    };
    for (let i = 0; i < 3; i++) processes.push(await SiloProcess.start(opts));
    const [first, , last] = processes as [SiloProcess, SiloProcess, SiloProcess];
    client = await ClusterClient.connect({
      clusterId: opts.clusterId,
      gateways: processes.map((p) => p.gatewayAddress as string),
      responseTimeoutMs: 5000,
      logger: silentLogger(),
    });
    const c = client;
    for (let i = 0; i < 30; i++) await c.getGrain<DashCounter>('dash.counter', `c${i}`).increment();
    // Load until the end: one hot grain, and a spread of others. Calls to the killed silo fail; that is fine.
    const drive = async (): Promise<void> => {
      for (let n = 0; driving; n++) {
        await Promise.all([
          ...Array.from({ length: 16 }, () => c.getGrain<DashPing>('dash.ping', 'hot').ping()),
          c.getGrain<DashPing>('dash.ping', `p${n % 40}`).ping(),
          c.getGrain<DashCounter>('dash.counter', `c${n % 30}`).increment(),
        ]).catch(() => undefined);
      }
    };
    const driver = drive();

    browser = await chromium.launch({ executablePath, headless: true });
    const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
    await page.goto(`http://${first.httpAddress as string}/dashboard`);

    const addresses = processes.map((p) => p.address);
    await until(
      page,
      'three active silos',
      (all: string[]) =>
        all.every(
          (a) => document.querySelector(`#silos tr[data-silo="${a}"]`)?.getAttribute('data-status') === 'active',
        ),
      addresses,
    );
    await until(
      page,
      'calls per second of dash.ping above zero',
      () =>
        Number(document.querySelector('#types tr[data-type="dash.ping"]')?.getAttribute('data-calls-per-second') || 0) >
        0,
      undefined,
    );
    await until(
      page,
      'dash.ping/hot as the hottest grain',
      () => document.querySelector('#hot tr[data-grain]')?.getAttribute('data-grain') === 'dash.ping/hot',
      undefined,
    );
    await until(
      page,
      'a hot-grain warning for dash.ping/hot',
      () => document.querySelector('#warnings li[data-grain="dash.ping/hot"]') !== null,
      undefined,
    );

    // Grain search: where a grain lives, and its state as stored.
    await page.fill('#q-type', 'dash.counter');
    await page.fill('#q-key', 'c1');
    await page.click('#search button');
    await until(
      page,
      'the search result for dash.counter/c1 on one of the silos',
      (all: string[]) => {
        const r = document.querySelector('#grain-result [data-grain="dash.counter/c1"]');
        return r !== null && all.includes(r.getAttribute('data-silo') ?? '');
      },
      addresses,
    );
    const stored = await page.inputValue('#grain-result textarea[data-state="count"]');
    assert.ok((JSON.parse(stored) as { value: number }).value >= 1, `stored state: ${stored}`);

    // A crash: the page keeps updating, and shows the silo dead once the cluster declares it.
    await last.kill();
    await until(
      page,
      `silo ${last.address} dead`,
      (a: string) => document.querySelector(`#silos tr[data-silo="${a}"]`)?.getAttribute('data-status') === 'dead',
      last.address,
      30_000,
    );
    await until(
      page,
      'the other two silos still active',
      (all: string[]) =>
        all.every(
          (a) => document.querySelector(`#silos tr[data-silo="${a}"]`)?.getAttribute('data-status') === 'active',
        ),
      addresses.slice(0, 2),
    );
    await until(
      page,
      'the page still live',
      () => document.querySelector('#conn-text')?.textContent === 'live',
      undefined,
    );

    const shot = process.env['DASHBOARD_SCREENSHOT'];
    if (shot !== undefined && shot !== '') {
      await page.click('#search button');
      await until(
        page,
        'the search result again',
        () => document.querySelector('#grain-result [data-grain]') !== null,
        undefined,
      );
      mkdirSync(dirname(shot), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true });
    }
    driving = false;
    await driver;
  });
});
