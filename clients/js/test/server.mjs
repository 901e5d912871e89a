// Test helper: runs .bin/arq serve (ARQ_BIN overrides) in a temp dir on a
// fixed free port, so it can be stopped and started again at the same
// address; mints tokens with `arq token` in the same dir (same dev secret).
// Processes are killed by PID when the tests end.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = process.env.ARQ_BIN || join(ROOT, '.bin', 'arq');

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

const live = new Set();
function killAll() {
  for (const p of live) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
process.on('exit', killAll);

export class Server {
  constructor(extraArgs) {
    this.extraArgs = extraArgs || [];
    this.dir = '';
    this.proc = null;
    this.log = '';
  }

  async start() {
    if (!existsSync(BIN)) {
      execFileSync('go', ['build', '-o', BIN, './cmd/arq'], { cwd: ROOT, stdio: 'inherit', timeout: 300000 });
    }
    if (!this.dir) {
      this.dir = mkdtempSync(join(tmpdir(), 'arq-js-client-'));
      this.port = await freePort();
      this.adminPort = await freePort();
    }
    const args = ['serve', '--listen', '127.0.0.1:' + this.port, '--admin', '127.0.0.1:' + this.adminPort].concat(this.extraArgs);
    // the port was just free; a restart may race TIME_WAIT, so retry a little
    for (let i = 0; ; i++) {
      try {
        await this.spawnOnce(args);
        return;
      } catch (e) {
        if (i >= 5) throw e;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  spawnOnce(args) {
    this.log = '';
    const p = spawn(BIN, args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    live.add(p);
    p.on('exit', () => live.delete(p));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error('arq serve printed no websocket: line in 20s\n' + this.log)), 20000);
      p.stdout.setEncoding('utf8').on('data', (c) => {
        this.log += c;
        const m = /websocket:\s+(ws:\/\/\S+)/.exec(this.log);
        if (m && !this.url) this.url = m[1];
        if (m) {
          clearTimeout(timer);
          res();
        }
      });
      p.stderr.setEncoding('utf8').on('data', (c) => (this.log += c));
      p.on('exit', (code, sig) => {
        clearTimeout(timer);
        rej(new Error(`arq serve exited (${code ?? sig})\n${this.log}`));
      });
    });
  }

  get wsURL() {
    return 'ws://127.0.0.1:' + this.port + '/v1/socket';
  }

  get httpURL() {
    return 'http://127.0.0.1:' + this.port;
  }

  get adminURL() {
    return 'http://127.0.0.1:' + this.adminPort;
  }

  // stop sends SIGTERM (drain: clients get close 1001) and waits for exit.
  async stop(signal) {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    process.kill(p.pid, signal || 'SIGTERM');
    const t = setTimeout(() => {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, 12000);
    await exited;
    clearTimeout(t);
  }

  pause() {
    process.kill(this.proc.pid, 'SIGSTOP');
  }

  resume() {
    process.kill(this.proc.pid, 'SIGCONT');
  }

  mint(tenant, user, ttl) {
    return execFileSync(BIN, ['token', '--tenant', tenant, '--sub', user, '--ttl', ttl || '10m'], {
      cwd: this.dir,
      timeout: 10000,
      encoding: 'utf8',
    }).trim();
  }

  async cleanup() {
    await this.stop();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

// until polls fn (sync or async) until it returns truthy, or throws after ms.
export async function until(fn, ms, what) {
  const end = Date.now() + (ms || 5000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + (what || fn.toString()));
    await new Promise((r) => setTimeout(r, 25));
  }
}
