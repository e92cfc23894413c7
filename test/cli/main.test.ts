import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { commandHelp, type Command } from '../../src/cli/command.ts';
import { commands } from '../../src/cli/commands.ts';
import { envOf, fileKeyOf, flagOf } from '../../src/cli/options.ts';
import { runCli } from './support.ts';

/** Every command and subcommand, with the words that reach it. */
function everyCommand(): Array<{ command: Command; path: string[] }> {
  const out: Array<{ command: Command; path: string[] }> = [];
  const walk = (cs: readonly Command[], above: string[]): void => {
    for (const c of cs) {
      out.push({ command: c, path: [...above, c.name] });
      if (c.subcommands !== undefined) walk(c.subcommands, [...above, c.name]);
    }
  };
  walk(commands, []);
  return out;
}

describe('granary: commands and help', () => {
  it('gives every command and subcommand a --help listing each flag with its variable, file key and default, and its exit codes', () => {
    for (const { command, path } of everyCommand()) {
      const help = commandHelp(command, `granary ${path.join(' ')}`);
      // Words as they read, wherever a line was folded.
      const flat = help.replace(/\s+/g, ' ');
      assert.match(help, new RegExp(`^granary ${path.join(' ')}: `), path.join(' '));
      for (const [key, spec] of Object.entries(command.options ?? {})) {
        assert.ok(help.includes(`--${flagOf(key, spec)}`), `${path.join(' ')} --help lists --${flagOf(key, spec)}`);
        const env = envOf(key, spec);
        if (env !== undefined) assert.ok(flat.includes(`env ${env}`), `${path.join(' ')} --help names ${env}`);
        if (fileKeyOf(key, spec) !== undefined) assert.ok(flat.includes(`file key ${key}`), `file key ${key}`);
        if (spec.default !== undefined)
          assert.ok(flat.includes(`default ${spec.default}`), `${key} default ${spec.default}`);
      }
      for (const [code] of command.exits ?? []) assert.match(help, new RegExp(`^  ${code} `, 'm'));
    }
  });

  it('documents every command, flag, variable, config file key and exit code in docs/cli.md', () => {
    const doc = readFileSync('docs/cli.md', 'utf8');
    for (const { command, path } of everyCommand()) {
      assert.ok(doc.includes(`granary ${path.join(' ')}`), `docs/cli.md names granary ${path.join(' ')}`);
      for (const [key, spec] of Object.entries(command.options ?? {})) {
        assert.ok(doc.includes(`\`--${flagOf(key, spec)}`), `docs/cli.md lists --${flagOf(key, spec)}`);
        const env = envOf(key, spec);
        if (env !== undefined) assert.ok(doc.includes(`\`${env}\``), `docs/cli.md lists ${env}`);
        if (fileKeyOf(key, spec) !== undefined) assert.ok(doc.includes(`\`${key}\``), `docs/cli.md lists ${key}`);
      }
      for (const [code] of command.exits ?? [])
        assert.match(doc, new RegExp(`^\\| ${code} `, 'm'), `docs/cli.md: exit code ${code}`);
    }
  });

  it('prints the same help for `granary help <command>` and `granary <command> --help`, and the list of commands', async () => {
    const [helpSilo, siloHelp, helpClientCall, clientCallHelp, bare, h] = await Promise.all([
      runCli(['help', 'silo']),
      runCli(['silo', '--help']),
      runCli(['help', 'client', 'call']),
      runCli(['client', 'call', '-h']),
      runCli([]),
      runCli(['--help']),
    ]);
    assert.equal(helpSilo.code, 0, helpSilo.stderr);
    assert.equal(siloHelp.stdout, helpSilo.stdout);
    assert.match(helpSilo.stdout, /^granary silo: /);
    assert.equal(clientCallHelp.stdout, helpClientCall.stdout);
    assert.match(helpClientCall.stdout, /^granary client call: /);
    assert.equal(h.stdout, bare.stdout);
    for (const c of commands) assert.match(bare.stdout, new RegExp(`^  ${c.name} `, 'm'));
  });

  it('prints the version, and refuses an unknown command with exit code 2 and the one it most likely meant', async () => {
    const [version, typo, none, client] = await Promise.all([
      runCli(['version']),
      runCli(['stauts']),
      runCli(['serve']),
      runCli(['client', 'cal', 'x/y', 'm']),
    ]);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
    assert.equal(typo.code, 2);
    assert.equal(
      typo.stderr,
      "granary [GRANARY_CONFIGURATION]: unknown command 'stauts' (did you mean 'status'?); see granary help\n",
    );
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^granary \[GRANARY_CONFIGURATION\]: unknown command 'serve'; see granary help\n$/);
    assert.equal(client.code, 2);
    assert.match(client.stderr, /unknown command 'granary client cal' \(known: call\)/);
  });
});
