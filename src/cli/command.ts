// What a `granary` command is (its name, its options, its exit codes, how it
// runs), and its --help, written from the same declarations it runs by.

import { envOf, fileKeyOf, flagOf, type OptionTable } from './options.ts';

/** One command of `granary`, or a subcommand (`granary client call`). */
export interface Command {
  readonly name: string;
  /** Other names it answers to (`--version` for `version`). */
  readonly aliases?: readonly string[];
  /** One line for the list of commands. */
  readonly summary: string;
  /** Its usage lines, without `usage:`. */
  readonly usage: readonly string[];
  /** What it does, in a paragraph or two (blank lines between paragraphs). */
  readonly description: string;
  readonly options?: OptionTable;
  /** The exit codes it uses: code and when. */
  readonly exits?: ReadonlyArray<readonly [code: number, meaning: string]>;
  /** Commands under it; `run` then gets the arguments after a name none of them has. */
  readonly subcommands?: readonly Command[];
  /** Runs it with the arguments after its name; resolves with the exit code. */
  readonly run: (argv: readonly string[]) => Promise<number>;
}

const WIDTH = 80;

/** `text` folded into lines of at most WIDTH columns, each starting with `indent`. */
export function wrap(text: string, indent: string): string {
  const out: string[] = [];
  for (const paragraph of text.split('\n')) {
    let line = indent;
    for (const word of paragraph.split(/\s+/).filter((w) => w !== '')) {
      if (line.length > indent.length && line.length + 1 + word.length > WIDTH) {
        out.push(line);
        line = indent;
      }
      line += line.length > indent.length ? ` ${word}` : word;
    }
    out.push(line.trimEnd());
  }
  return out.join('\n');
}

/** Paragraphs (lines of `text`) folded, a blank line between them. */
function paragraphs(text: string): string[] {
  return text.split('\n').flatMap((p, i) => (i > 0 ? ['', wrap(p, '')] : [wrap(p, '')]));
}

/** The options part of --help: each flag, what it does, its variable, file key and default. */
export function optionsHelp(table: OptionTable): string {
  const parts: string[] = [];
  for (const [key, spec] of Object.entries(table)) {
    const where = [
      envOf(key, spec) !== undefined ? `env ${envOf(key, spec)}` : undefined,
      fileKeyOf(key, spec) !== undefined ? `file key ${key}` : undefined,
      spec.default !== undefined ? `default ${spec.default}` : undefined,
      spec.repeatable === true ? 'repeatable' : undefined,
    ].filter((p) => p !== undefined);
    parts.push(
      `  --${flagOf(key, spec)}${spec.arg !== undefined ? ` ${spec.arg}` : ''}\n${wrap(spec.help, '      ')}\n${wrap(where.join('; '), '      ')}`,
    );
  }
  return parts.join('\n');
}

/** The --help of `cmd`, reached as `path` (`granary client call`). */
export function commandHelp(cmd: Command, path: string): string {
  const out = [
    `${path}: ${cmd.summary}`,
    '',
    'usage:',
    ...cmd.usage.map((u) => `  ${u}`),
    '',
    ...paragraphs(cmd.description),
  ];
  if (cmd.subcommands !== undefined) {
    out.push('', 'commands:');
    const w = Math.max(...cmd.subcommands.map((c) => c.name.length));
    for (const c of cmd.subcommands) out.push(`  ${c.name.padEnd(w)}  ${c.summary}`);
  }
  if (cmd.options !== undefined && Object.keys(cmd.options).length > 0) {
    out.push('', 'options (a flag beats its variable, which beats the config file key):', optionsHelp(cmd.options));
  }
  if (cmd.exits !== undefined) {
    out.push('', 'exit codes:');
    for (const [code, meaning] of cmd.exits)
      out.push(`  ${String(code).padEnd(5)}${wrap(meaning, '       ').trimStart()}`);
  }
  return out.join('\n');
}

/** The help of `granary` itself: every command in one line. */
export function mainHelp(commands: readonly Command[]): string {
  const w = Math.max(...commands.map((c) => c.name.length));
  return [
    'granary: run and operate a Granary cluster',
    '',
    'usage:',
    '  granary <command> [options]',
    '  granary help <command>      (or granary <command> --help)',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    wrap(
      'Options come from flags, GRANARY_* environment variables and a JSON config file (--config FILE or GRANARY_CONFIG); a flag beats its variable, which beats the file. Bad usage or configuration exits with code 2.',
      '',
    ),
  ].join('\n');
}
