/**
 * The folder an export writes (lib/files/export-folder.ts): whole or not at all, never mixed with older
 * files. exportHuggingFace and exportAdapterHub write through it; their own tests check what they
 * write, this one what a failure leaves behind.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { checkOut, writeFolder } from '../lib/files/export-folder.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-export-folder-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('an export folder', () => {
  it('appears whole under its name, listing the files written, and leaves nothing beside it', async () => {
    const out = join(work, 'a', 'nested', 'model');
    const result = await writeFolder(out, async (folder) => {
      await folder.writeJson('config.json', { hidden_size: 8 });
      await folder.write('tokenizer.json', '{}');
      mkdirSync(join(folder.dir, 'adapter'));
      writeFileSync(folder.file(join('adapter', 'weights.bin')), new Uint8Array([1, 2, 3]));
      // Nothing is under `out` until the folder is complete.
      expect(readdirSync(join(work, 'a', 'nested')).filter((n) => n === 'model')).toEqual([]);
      return [...folder.files];
    });
    expect(result).toEqual(['config.json', 'tokenizer.json', join('adapter', 'weights.bin')]);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toEqual({ hidden_size: 8 });
    expect(readFileSync(join(out, 'config.json'), 'utf8').endsWith('}\n')).toBe(true);
    expect([...readFileSync(join(out, 'adapter', 'weights.bin'))]).toEqual([1, 2, 3]);
    expect(readdirSync(join(work, 'a', 'nested'))).toEqual(['model']);
  });

  it('has the permissions of any folder made beside it, not those of a private staging folder', async () => {
    // Exports are read by other users (a model server, a container); mkdtemp made them 0700.
    const parent = join(work, 'modes');
    mkdirSync(parent);
    const out = join(parent, 'model');
    await writeFolder(out, (folder) => folder.write('config.json', '{}'));
    mkdirSync(join(parent, 'plain'));
    const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);
    expect(mode(out)).toBe(mode(join(parent, 'plain')));
  });

  it('fills an existing empty folder', async () => {
    const out = join(work, 'empty');
    mkdirSync(out);
    await checkOut(out);
    await writeFolder(out, (folder) => folder.write('model.safetensors', 'x'));
    expect(readdirSync(out)).toEqual(['model.safetensors']);
  });

  it('on a failure midway: the error, no folder under the name, and no staging folder left', async () => {
    const parent = join(work, 'failing');
    mkdirSync(parent);
    const out = join(parent, 'model');
    const failure = writeFolder(out, async (folder) => {
      await folder.writeJson('config.json', {});
      throw new Error('the weights could not be written');
    });
    await expect(failure).rejects.toThrow('the weights could not be written');
    expect(readdirSync(parent)).toEqual([]);
  });

  it('refuses a folder that holds files, naming it', async () => {
    const out = join(work, 'used');
    mkdirSync(out);
    writeFileSync(join(out, 'old.bin'), 'old');
    const refusal = checkOut(out);
    await expect(refusal).rejects.toBeInstanceOf(InputError);
    await expect(refusal).rejects.toThrow(`${out} exists and is not empty; export into a new folder`);
    await expect(checkOut(join(work, 'absent'))).resolves.toBeUndefined();
  });
});
