/**
 * `torch-bert train --nproc-per-node N` (and `pretrain`): torchrun's single-machine launch
 * without Python. The command starts N copies of itself (the same arguments, without
 * --nproc-per-node), each with the variables torchrun would set (RANK = LOCAL_RANK = 0..N-1,
 * WORLD_SIZE = LOCAL_WORLD_SIZE = N, MASTER_ADDR 127.0.0.1 and a free MASTER_PORT unless given),
 * their output going to this command's. Each worker joins the group through train()'s or
 * pretrain()'s `distributed: 'auto'` and uses the cores / N threads. The first worker to fail
 * stops the others (as torchrun does), and the command exits with its code.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

/** A port free now on 127.0.0.1 (the operating system's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** `args` (after the command name) without `--nproc-per-node N` / `--nproc-per-node=N`. */
export function withoutNproc(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--nproc-per-node') i++;
    else if (!args[i]!.startsWith('--nproc-per-node=')) out.push(args[i]!);
  }
  return out;
}

/**
 * torchrun's variables for rank `rank` of `worldSize` on one machine (RANK = LOCAL_RANK, WORLD_SIZE
 * = LOCAL_WORLD_SIZE, node 0), its master at `masterAddr:masterPort`.
 */
export function rankVariables(rank: number, worldSize: number, masterPort: number | string, masterAddr = '127.0.0.1') {
  return {
    RANK: String(rank),
    LOCAL_RANK: String(rank),
    WORLD_SIZE: String(worldSize),
    LOCAL_WORLD_SIZE: String(worldSize),
    GROUP_RANK: '0',
    MASTER_ADDR: masterAddr,
    MASTER_PORT: String(masterPort),
  };
}

/**
 * Runs `nproc` workers of `command args` (argv after node: the script, then its arguments) and
 * resolves with the exit code: 0 when all succeed, else the first failure's (1 for a signal).
 */
export async function launchWorkers(nproc: number, script: string, args: readonly string[]): Promise<number> {
  const port = process.env.MASTER_PORT ?? String(await freePort());
  const workers = Array.from({ length: nproc }, (_, rank) =>
    spawn(process.execPath, [script, ...args], {
      stdio: 'inherit',
      env: { ...process.env, ...rankVariables(rank, nproc, port, process.env.MASTER_ADDR) },
    }),
  );
  // Ctrl-C reaches the workers through the terminal; the launcher waits for them to save and stop.
  const ignoreInterrupt = () => undefined;
  process.on('SIGINT', ignoreInterrupt);
  let failure = 0;
  try {
    await Promise.all(
      workers.map(
        (worker) =>
          new Promise<void>((resolve) => {
            worker.on('exit', (code, signal) => {
              const status = code ?? (signal ? 1 : 0);
              if (status !== 0 && failure === 0) {
                failure = status;
                // As torchrun: one failed worker ends the job.
                for (const other of workers) if (other !== worker && other.exitCode === null) other.kill('SIGTERM');
              }
              resolve();
            });
            worker.on('error', () => {
              failure ||= 1;
              resolve();
            });
          }),
      ),
    );
  } finally {
    process.off('SIGINT', ignoreInterrupt);
  }
  return failure;
}
