#!/usr/bin/env node
// The `granary` command: runs the command its arguments name (see
// commands.ts) and exits with the code it gives; bad usage or configuration
// is printed as `granary [GRANARY_CONFIGURATION]: message` with code 2.

import { ConfigurationError } from '../errors.ts';
import { runCommand } from './commands.ts';
import { describeFailure, Exit } from './exit.ts';
import { flushLogs } from './logging.ts';

runCommand(process.argv.slice(2)).then(
  async (code) => {
    await flushLogs();
    process.exit(code);
  },
  async (e: unknown) => {
    await flushLogs();
    process.stderr.write(`granary ${describeFailure(e)}\n`);
    process.exit(e instanceof ConfigurationError ? Exit.Usage : Exit.Failed);
  },
);
