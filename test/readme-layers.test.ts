/**
 * README.md's Architecture lists native/'s and lib/'s folders as layers, lower first, and says a lower layer
 * never includes (imports) a higher one: checked here against every #include of native/ and import of lib/.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './fixtures.js';

const native = join(repoRoot, 'native');
const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/**
 * The README's list of `root`'s folders (from its `- \`root/\` — ` line to the next top-level
 * item): its text and the folders in their listed order, checked to be every folder on disk, the
 * list saying that lower layers never reach higher ones.
 */
function listedLayers(root: string, next: string): { list: string; order: string[]; folders: string[] } {
  const list = readme.slice(readme.indexOf(`- \`${root}/\` — `), readme.indexOf(`\n- \`${next}/\` — `));
  expect(list).toContain('lower layers never');
  const order = [...list.matchAll(/^ {2}- `([a-z_]+)\/` — /gm)].map((m) => m[1]!);
  const folders = readdirSync(join(repoRoot, root), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
  expect([...order].sort()).toEqual([...folders].sort());
  return { list, order, folders };
}

describe('README Architecture: native/ layers', () => {
  it('lists the folders in an order that no #include goes up', () => {
    const { order, folders } = listedLayers('native', 'lib');
    const upward: string[] = [];
    for (const folder of folders) {
      for (const file of readdirSync(join(native, folder)).filter((f) => /\.(cc|h)$/.test(f))) {
        // addon.cc is the top: the exports of every layer.
        if (folder === 'addon' && file === 'addon.cc') continue;
        for (const m of readFileSync(join(native, folder, file), 'utf8').matchAll(/^#include "([a-z_]+)\//gm)) {
          if (order.indexOf(m[1]!) > order.indexOf(folder)) upward.push(`${folder}/${file} includes ${m[1]}/`);
        }
      }
    }
    expect([...new Set(upward)]).toEqual([]);
  });
});

const lib = join(repoRoot, 'lib');

describe('README Architecture: lib/ layers', () => {
  it('lists the folders in an order that no import goes up', () => {
    const { list, order, folders } = listedLayers('lib', 'scripts');
    // The top, index.ts and cli.ts, are the only files beside the folders.
    expect(readdirSync(lib).filter((f) => f.endsWith('.ts'))).toEqual(['cli.ts', 'index.ts']);
    const upward: string[] = [];
    const unlisted: string[] = [];
    for (const folder of folders) {
      for (const file of readdirSync(join(lib, folder)).filter((f) => f.endsWith('.ts'))) {
        if (!list.includes(`\`${file}\``)) unlisted.push(`${folder}/${file}`);
        // Static, dynamic and type-only imports alike: a type from a higher layer ties the lower one to it too.
        // `../NAME.js` is the top (index.ts, cli.ts); `../NAME/` a folder.
        for (const m of readFileSync(join(lib, folder, file), 'utf8').matchAll(/(?:from\s+|import\s*\(\s*)'\.\.\/([a-z]+)(\/|\.js')/g)) {
          const top = m[2] !== '/';
          if (top || order.indexOf(m[1]!) > order.indexOf(folder)) upward.push(`${folder}/${file} imports ${m[1]}${top ? '.ts' : '/'}`);
        }
      }
    }
    expect(unlisted).toEqual([]);
    expect([...new Set(upward)]).toEqual([]);
  });
});
