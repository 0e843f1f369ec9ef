/**
 * The names README.md's prose gives the reader to type: an option, a field or a method written
 * in a code span must be one the library declares, or the reader's code fails on it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { libSources, repoRoot } from './fixtures.js';

const camelCase = /\b[a-z]+[A-Z][A-Za-z0-9]*\b/g;

describe('README names', () => {
  it('starts no code span with a camelCase name that lib/ does not declare', () => {
    const lib = join(repoRoot, 'lib');
    const declared = new Set(libSources().flatMap((f) => readFileSync(join(lib, f), 'utf8').match(camelCase) ?? []));
    // Prose only: fenced blocks are compiled (TypeScript) or are another language's code.
    const prose = readFileSync(join(repoRoot, 'README.md'), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
    // A span's first word is the name the reader copies (`lora.dropout`, `skippedBatches`); later
    // words are often placeholders (`{ encoder: baseFolder }`).
    const written = [...prose.matchAll(/`([a-z]+[A-Z][A-Za-z0-9]*)/g)].map((m) => m[1]);
    expect(written.length).toBeGreaterThan(50);
    expect([...new Set(written.filter((name) => !declared.has(name)))]).toEqual([]);
  });
});
