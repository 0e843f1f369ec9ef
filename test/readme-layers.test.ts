/**
 * README.md's Architecture lists native/'s and lib/'s folders as layers, lower first, and says a lower layer
 * never includes (imports) a higher one: checked here against every #include of native/ and import of lib/.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './fixtures.js';

const native = join(repoRoot, 'native');

describe('README Architecture: native/ layers', () => {
  it('lists the folders in an order that no #include goes up', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const list = readme.slice(readme.indexOf('- `native/` — '), readme.indexOf('\n- `lib/` — '));
    expect(list).toContain('lower layers never');
    const order = [...list.matchAll(/^ {2}- `([a-z_]+)\/` — /gm)].map((m) => m[1]!);
    const folders = readdirSync(native, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
    expect([...order].sort()).toEqual([...folders].sort());
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
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const list = readme.slice(readme.indexOf('- `lib/` — '), readme.indexOf('\n- `scripts/` — '));
    expect(list).toContain('lower layers never');
    const order = [...list.matchAll(/^ {2}- `([a-z]+)\/` — /gm)].map((m) => m[1]!);
    const folders = readdirSync(lib, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
    expect([...order].sort()).toEqual([...folders].sort());
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
