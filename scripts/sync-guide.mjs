// Keeps the code in the guide in step with the sources it quotes. In
// docs/guide/*.md, a line `<!-- include: examples/fleet/device.ts#telemetry -->`
// before a fenced block names a file and a region of it, marked in the file by
// `// #region telemetry` and `// #endregion telemetry` (no `#name`: the whole
// file). Without such a region, `#Name` or `#Class.member` names a declaration
// (with its doc comment and decorators) in the formatted source. The block is
// the lines, less their common indentation and any region markers in them.
// Usage: node scripts/sync-guide.mjs           rewrites stale blocks
//        node scripts/sync-guide.mjs --check   exits 1 naming each stale block or missing file or region
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const guideDir = join(root, 'docs', 'guide');
const includeLine = /^<!--\s*include:\s*(\S+?)\s*-->\s*$/;
const regionMarker = /^\s*\/\/\s*#(end)?region\b/;

const indentOf = (l) => /^ */.exec(l)[0].length;

/**
 * The lines [first, last] of a declaration, found in formatted source without
 * markers: `Name` (a top-level class, function, interface, type, const or
 * enum) or `Class.member` (a method, accessor or field of that class, `#name`
 * for a private one). Its doc comment and decorators come with it.
 */
function declaration(lines, name) {
  const [outer, member] = name.split('.');
  const esc = (x) => x.replace(/[$#]/g, '\\$&');
  const top = new RegExp(
    `^(export )?(default )?(declare )?(abstract )?(async )?(class|function\\*?|interface|type|const|let|enum) ${esc(outer)}\\b`,
  );
  let at = lines.findIndex((l) => top.test(l));
  if (at < 0) return undefined;
  if (member !== undefined) {
    const end = blockEnd(lines, at);
    const inner = new RegExp(
      `^ {${indentOf(lines[at]) + 2}}((static|private|public|protected|readonly|override|async|get|set|declare|abstract|function|const|let) )*${esc(member)}\\b\\s*[(<:=;?!]`,
    );
    at = lines.findIndex((l, i) => i > at && i < end && inner.test(l));
    if (at < 0) return undefined;
  }
  let first = at;
  const indent = indentOf(lines[at]);
  // Decorators and the doc comment right above, at the same indentation.
  while (first > 0) {
    const prev = lines[first - 1];
    const t = prev.trim();
    if (indentOf(prev) === indent && t.startsWith('@')) first--;
    else if (t.endsWith('*/') && indentOf(prev) >= indent) {
      let k = first - 1;
      while (k > 0 && !lines[k].trim().startsWith('/**') && !lines[k].trim().startsWith('/*')) k--;
      first = k;
    } else break;
  }
  return [first, blockEnd(lines, at)];
}

/** The last line of the statement or block that starts at `at`: where its brackets close again. */
function blockEnd(lines, at) {
  let depth = 0;
  let opened = false;
  for (let i = at; i < lines.length; i++) {
    const code = lines[i].replace(/\/\/.*$/, '').replace(/'(?:\\.|[^'])*'|"(?:\\.|[^"])*"|`(?:\\.|[^`])*`/g, '');
    for (const c of code) {
      if (c === '{' || c === '(' || c === '[') {
        depth++;
        opened = true;
      } else if (c === '}' || c === ')' || c === ']') depth--;
    }
    if (depth <= 0 && (opened || /;\s*$/.test(code))) return i;
  }
  return lines.length - 1;
}

/** The text a marker names, or an error message. */
export function regionText(spec) {
  const hash = spec.indexOf('#');
  const file = hash < 0 ? spec : spec.slice(0, hash);
  const name = hash < 0 ? undefined : spec.slice(hash + 1);
  const path = join(root, file);
  if (!existsSync(path)) return { error: `${file}: no such file` };
  const lines = readFileSync(path, 'utf8').replace(/\n$/, '').split('\n');
  let body = lines;
  if (name !== undefined) {
    const start = lines.findIndex((l) => l.trim() === `// #region ${name}`);
    if (start >= 0) {
      const end = lines.findIndex((l, i) => i > start && l.trim() === `// #endregion ${name}`);
      if (end < 0) return { error: `${file}: region '${name}' has no '// #endregion ${name}'` };
      body = lines.slice(start + 1, end);
    } else {
      const range = declaration(lines, name);
      if (range === undefined)
        return {
          error: `${file}: no region '${name}' (a line '// #region ${name}') and no declaration of that name`,
        };
      body = lines.slice(range[0], range[1] + 1);
    }
  }
  body = body.filter((l) => !regionMarker.test(l));
  const indent = Math.min(...body.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)[0].length));
  return { text: body.map((l) => l.slice(Number.isFinite(indent) ? indent : 0).trimEnd()).join('\n') };
}

const fenceLanguage = (spec) =>
  ({ ts: 'ts', mjs: 'js', js: 'js', json: 'json', sh: 'sh', yaml: 'yaml', yml: 'yaml' })[
    spec.replace(/#.*$/, '').split('.').pop()
  ] ?? '';

let prettierOptions;

/**
 * `code` as the guide's formatter leaves it inside a fenced block of
 * `language`: prettier formats code in markdown (a region lifted out of a
 * class or function may fit on fewer lines), so a block is kept as prettier
 * would write it, and `prettier --check` and this script never disagree.
 */
export async function formatBlock(code, language) {
  prettierOptions ??= { ...(await prettier.resolveConfig(join(guideDir, 'README.md'))), parser: 'markdown' };
  const md = await prettier.format(`\`\`\`${language}\n${code}\n\`\`\`\n`, prettierOptions);
  return md.replace(/\n$/, '').split('\n').slice(1, -1).join('\n');
}

/** Syncs one markdown text; resolves to the new text and the problems found. */
export async function syncMarkdown(text, where, onInclude = () => {}) {
  const lines = text.split('\n');
  const problems = [];
  const out = [];
  let fence = null; // the fence of the block we are in, whose lines are never markers
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    out.push(line);
    const f = /^\s*(`{3,}|~{3,})/.exec(line);
    if (fence !== null) {
      if (f !== null && f[1][0] === fence[0] && f[1].length >= fence.length && line.trim() === f[1]) fence = null;
      continue;
    }
    if (f !== null) {
      fence = f[1];
      continue;
    }
    const m = includeLine.exec(line);
    if (m === null) continue;
    const spec = m[1];
    const at = `${where}:${i + 1}`;
    onInclude(i + 1, spec);
    let j = i + 1;
    while (j < lines.length && lines[j].trim() === '') j++;
    const open = /^(`{3,})(.*)$/.exec(lines[j] ?? '');
    if (open === null) {
      problems.push(`${at}: the include of ${spec} is not followed by a fenced code block`);
      continue;
    }
    let k = j + 1;
    while (k < lines.length && lines[k] !== open[1]) k++;
    if (k >= lines.length) {
      problems.push(`${at}: the code block after the include of ${spec} is not closed`);
      continue;
    }
    const r = regionText(spec);
    if (r.error !== undefined) {
      problems.push(`${at}: ${r.error}`);
      continue;
    }
    const language = open[2].trim() === '' ? fenceLanguage(spec) : open[2].trim();
    const expected = await formatBlock(r.text, language);
    const current = lines.slice(j + 1, k).join('\n');
    if (current !== expected) problems.push(`${at}: the block quoting ${spec} is stale`);
    out.push(...lines.slice(i + 1, j), `${open[1]}${language}`, ...expected.split('\n'), open[1]);
    i = k;
  }
  return { text: out.join('\n'), problems };
}

/** Every include of the guide: `{ file, line, spec }`. */
export async function guideIncludes() {
  const found = [];
  for (const name of guideFiles()) {
    const where = `docs/guide/${name}`;
    await syncMarkdown(readFileSync(join(guideDir, name), 'utf8'), where, (line, spec) =>
      found.push({ file: where, line, spec }),
    );
  }
  return found;
}

function guideFiles() {
  return existsSync(guideDir)
    ? readdirSync(guideDir)
        .filter((n) => n.endsWith('.md'))
        .sort()
    : [];
}

async function main() {
  const check = process.argv.includes('--check');
  let problems = 0;
  for (const name of guideFiles()) {
    const path = join(guideDir, name);
    const before = readFileSync(path, 'utf8');
    const r = await syncMarkdown(before, relative(root, path));
    if (check) {
      for (const p of r.problems) console.error(p);
      problems += r.problems.length;
    } else {
      const missing = r.problems.filter((p) => !p.endsWith('is stale'));
      for (const p of missing) console.error(p);
      problems += missing.length;
      if (r.text !== before) {
        writeFileSync(path, r.text);
        console.log(`updated ${relative(root, path)}`);
      }
    }
  }
  if (problems > 0) {
    console.error(
      check
        ? `${problems} problem(s); run node scripts/sync-guide.mjs to rewrite stale blocks`
        : `${problems} problem(s)`,
    );
    process.exit(1);
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await main();
