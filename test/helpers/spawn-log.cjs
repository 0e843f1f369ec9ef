/**
 * Preloaded with `node --require` (NODE_OPTIONS) to record every child process a Node program
 * starts: one JSON line per call to child_process's spawn / exec / fork family, appended to the
 * file named by TORCH_BERT_SPAWN_LOG. Every way Node starts a process goes through one of these
 * exports; the ESM bindings (`import { execFile } from 'node:child_process'`) are re-synced to
 * the patched functions. The test of "no Python on the user's path" reads the log.
 */
const childProcess = require('node:child_process');
const { appendFileSync } = require('node:fs');
const { syncBuiltinESMExports } = require('node:module');

const log = process.env.TORCH_BERT_SPAWN_LOG;
if (log) {
  for (const name of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']) {
    const original = childProcess[name];
    childProcess[name] = function recorded(command, ...rest) {
      const args = Array.isArray(rest[0]) ? rest[0] : [];
      appendFileSync(log, `${JSON.stringify({ call: name, command: String(command), args: args.map(String), pid: process.pid })}\n`);
      return original.call(this, command, ...rest);
    };
  }
  syncBuiltinESMExports();
}
