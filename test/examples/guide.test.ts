// The guide's code is the code that runs: every include in docs/guide/*.md
// names a region that exists and is quoted as it is, every file it quotes is
// imported by a test under test/examples (and so type-checked and run), and
// the patterns' measuring script runs to the end.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
// @ts-expect-error: a plain script, without declarations
import { formatBlock, guideIncludes, regionText, syncMarkdown } from '../../scripts/sync-guide.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Include {
  file: string;
  line: number;
  spec: string;
}

/** The repository paths of the modules a file imports by relative path. */
function importsOf(testFile: string): string[] {
  let text: string;
  try {
    text = readFileSync(testFile, 'utf8');
  } catch {
    return [];
  }
  const found: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    found.push(relative(root, resolve(dirname(testFile), m[1] as string)));
  }
  return found;
}

describe('docs/guide', () => {
  it('quotes every region as it is in its source (node scripts/sync-guide.mjs --check)', () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'sync-guide.mjs'), '--check'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `stale or broken includes:\n${r.stderr}`);
  });

  it('finds a stale block, a missing region and a missing file, and rewrites the stale block', async () => {
    const md = [
      '<!-- include: examples/patterns/deadlock.ts#restructured -->',
      '',
      '```ts',
      'old',
      '```',
      '<!-- include: examples/patterns/deadlock.ts#nothing-here -->',
      '```ts',
      '```',
      '<!-- include: examples/nowhere.ts#x -->',
      '```ts',
      '```',
    ].join('\n');
    const r = (await syncMarkdown(md, 'x.md')) as { text: string; problems: string[] };
    assert.deepEqual(
      r.problems.map((p) => p.replace(/:.*?: /, ': ')),
      [
        'x.md: the block quoting examples/patterns/deadlock.ts#restructured is stale',
        "x.md: examples/patterns/deadlock.ts: no region 'nothing-here' (a line '// #region nothing-here') and no declaration of that name",
        'x.md: examples/nowhere.ts: no such file',
      ],
    );
    assert.match(r.text, /```ts\n@grain\('account'\)\nexport class Account extends Grain \{/);
    assert.ok(!r.text.includes('// #region'));
    assert.equal(((await syncMarkdown(r.text, 'x.md')) as { problems: string[] }).problems.length, 2);
  });

  it('quotes a declaration by name, with its doc comment and decorators, where the source has no region', () => {
    const method = regionText('examples/patterns/deadlock.ts#Ledger.recordWith') as { text: string };
    assert.equal(
      method.text,
      [
        '/** The restructured call: everything the ledger needs comes with it. */',
        'async recordWith(account: string, change: number, balance: number): Promise<void> {',
        '  this.#entries.push({ account, change, balance });',
        '}',
      ].join('\n'),
    );
    const cls = regionText('examples/patterns/blocking.ts#Ping') as { text: string };
    assert.match(
      cls.text,
      /^\/\*\* Another grain[^\n]*\n@grain\('ping'\)\nexport class Ping extends Grain \{\n[^]*\n\}$/,
    );
    const constant = regionText('examples/patterns/blocking.ts#chunk') as { text: string };
    assert.equal(constant.text.split('\n').at(-1), 'export const chunk = 200_000;');
    assert.deepEqual(regionText('examples/patterns/blocking.ts#Ping.nothing'), {
      error:
        "examples/patterns/blocking.ts: no region 'Ping.nothing' (a line '// #region Ping.nothing') and no declaration of that name",
    });
  });

  it('keeps a block as the formatter leaves it, where a quoted statement fits on fewer lines out of its context', async () => {
    const long = `    for (const c of commands)\n      await client.publishAsync(\`\${root}/\${id}/commands\`, JSON.stringify(c), { qos: 1 });`;
    const dedented = long
      .split('\n')
      .map((l) => l.slice(4))
      .join('\n');
    assert.equal(
      await formatBlock(dedented, 'ts'),
      'for (const c of commands) await client.publishAsync(`${root}/${id}/commands`, JSON.stringify(c), { qos: 1 });',
    );
    // A fragment prettier cannot parse (a class member on its own) stays as it is.
    const member = 'async get(): Promise<number> {\n  return 1;\n}';
    assert.equal(await formatBlock(member, 'ts'), member);
  });

  it('types no code by hand: every TypeScript or JavaScript block follows an include', () => {
    const dir = join(root, 'docs', 'guide');
    const typed: string[] = [];
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.md'))) {
      const lines = readFileSync(join(dir, name), 'utf8').split('\n');
      let fence: string | null = null;
      let previous = '';
      lines.forEach((line, i) => {
        const open = /^(`{3,}|~{3,})(\S*)/.exec(line);
        if (fence !== null) {
          if (line.trim() === fence) fence = null;
          return;
        }
        if (open !== null) {
          fence = open[1] as string;
          if (/^(ts|typescript|js|javascript)$/.test(open[2] as string) && !previous.startsWith('<!-- include:'))
            typed.push(`docs/guide/${name}:${i + 1}`);
        }
        if (line.trim() !== '') previous = line.trim();
      });
    }
    assert.deepEqual(typed, [], 'code blocks typed by hand: quote them from a source with an include instead');
  });

  it('links only to files and headings that exist', () => {
    const dir = join(root, 'docs', 'guide');
    // GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens.
    const slug = (h: string): string =>
      h
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, '')
        .replace(/ /g, '-');
    const anchors = (file: string): Set<string> =>
      new Set(
        readFileSync(file, 'utf8')
          .split('\n')
          .filter((l) => /^#{1,6} /.test(l))
          .map((l) => slug(l.replace(/^#+ /, ''))),
      );
    const broken: string[] = [];
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.md'))) {
      const text = readFileSync(join(dir, name), 'utf8').replace(/^(`{3,})[^]*?^\1$/gm, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/.test(target)) continue;
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const file = path === '' ? join(dir, name) : resolve(dir, path);
        let ok = true;
        try {
          readFileSync(file);
        } catch {
          ok = false;
        }
        if (ok && anchor !== undefined && file.endsWith('.md')) ok = anchors(file).has(anchor);
        if (!ok) broken.push(`docs/guide/${name}: ${target}`);
      }
    }
    assert.deepEqual(broken, [], 'links to nothing');
  });

  it('quotes only files that a test under test/examples imports', async () => {
    const includes = (await guideIncludes()) as Include[];
    assert.ok(includes.length > 0, 'the guide quotes no code');
    const dir = join(root, 'test', 'examples');
    // What the tests import, and what that imports in turn.
    const tested = new Set<string>();
    const queue = readdirSync(dir)
      .filter((n) => n.endsWith('.test.ts'))
      .flatMap((n) => importsOf(join(dir, n)));
    for (let f = queue.pop(); f !== undefined; f = queue.pop()) {
      if (tested.has(f) || !f.endsWith('.ts') || f.startsWith('..')) continue;
      tested.add(f);
      queue.push(...importsOf(join(root, f)));
    }
    const untested = [
      ...new Set(includes.map((i) => i.spec.replace(/#.*$/, '')).filter((f) => f.endsWith('.ts') && !tested.has(f))),
    ];
    assert.deepEqual(
      untested,
      [],
      `the guide quotes files no test under test/examples imports: ${untested.join(', ')}`,
    );
  });

  it('runs the patterns as chapter 6 measures them (npm run patterns -- --quick)', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--expose-gc',
        '--import',
        'tsx',
        '--conditions=source',
        join(root, 'examples', 'patterns', 'run.ts'),
        '--quick',
      ],
      { cwd: root, encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.status, 0, `${basename('run.ts')} failed:\n${r.stderr}`);
    for (const heading of [
      '## hot singleton against staged aggregation',
      '## chatty against coarse calls (one silo',
      '## chatty against coarse calls (two silos',
      '## a call cycle',
      '## a blocking turn against a yielding one and a worker thread',
    ])
      assert.ok(r.stdout.includes(heading), `no '${heading}' in the output:\n${r.stdout}`);
    assert.match(r.stdout, /the hot grain counted ([\d,]+) readings, every one sent \(\1\)/);
    assert.match(r.stdout, /the staged fleet grain ([\d,]+) of \1,/);
  });
});
