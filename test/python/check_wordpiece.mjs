#!/usr/bin/env node
import { execFileSync } from 'node:child_process';
// Checks that scripts/python/wordpiece.py produces the same ids as @huggingface/tokenizers.
// usage: node test/python/check_wordpiece.mjs [tokenizer.json] [texts.csv] [column] [limit]
//   defaults: the shared bert-base-uncased tokenizer and IMDB train shard, column `text`, 400 rows.
// Each review is checked whole and also split into sentences; a set of edge cases is added.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import { parse } from 'csv-parse/sync';

const here = path.dirname(fileURLToPath(import.meta.url));
const [
  tokPath = '/work/shared/models/bert-base-uncased/tokenizer.json',
  csvPath = '/work/shared/data/imdb/train-00-of-10.csv',
  column = 'text',
  limitArg = '400',
] = process.argv.slice(2);
const limit = Number(limitArg);

const rows = parse(fs.readFileSync(csvPath), { columns: true, skip_empty_lines: true });
const texts = [];
for (const row of rows.slice(0, limit)) {
  const t = String(row[column]);
  texts.push(t);
  for (const s of t.split(/(?<=[.!?])\s+/)) if (s.trim()) texts.push(s);
}
texts.push(
  '',
  '   ',
  'Héllo Wörld! Café naïve façade',
  'ÀÉÎÕÜ ñ ß ø',
  '你好世界 and 日本語テキスト',
  '한국어 텍스트',
  'tab\there\nnewline\r\ncr',
  'zero\u0000width\u200bjoiner\u200d soft\u00adhyphen',
  'nbsp\u00a0here\u3000ideographic space',
  'emoji 😀👍 test',
  '[CLS] literal [SEP] and [MASK] and [UNK] [PAD]x',
  'a'.repeat(120) + ' b',
  'unbelievably antidisestablishmentarianism',
  "don't can't won't it's",
  '“curly quotes” — em-dash … ellipsis « guillemets »',
  '$100 & 50% off @home #tag ~tilde `tick`',
  'ΣΊΣΥΦΟΣ Greek CAPS',
  'İstanbul',
  'x\ufffdy',
  'math ∑ ≤ ≥ √ symbols ©®™',
  '<br /><br />html-ish',
);

const tok = new Tokenizer(JSON.parse(fs.readFileSync(tokPath, 'utf8')), {});
const js = texts.map((t) => tok.encode(t).ids);
const out = execFileSync('/usr/bin/python3', [path.join(here, '..', '..', 'scripts', 'python', 'wordpiece.py'), tokPath, '--jsonl'], {
  input: texts.map((t) => JSON.stringify(t)).join('\n') + '\n',
  maxBuffer: 1 << 28,
}).toString('utf8');
const py = out
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l));
if (py.length !== texts.length) throw new Error(`python returned ${py.length} rows for ${texts.length} texts`);
let bad = 0;
let tokens = 0;
for (let i = 0; i < texts.length; i++) {
  tokens += js[i].length;
  if (JSON.stringify(js[i]) !== JSON.stringify(py[i])) {
    bad++;
    if (bad <= 5) {
      let k = 0;
      while (js[i][k] === py[i][k]) k++;
      console.error(
        `MISMATCH #${i} ${JSON.stringify(texts[i].slice(0, 200))}\n  at ${k}: js ${JSON.stringify(js[i].slice(k, k + 8))} py ${JSON.stringify(py[i].slice(k, k + 8))}`,
      );
    }
  }
}
console.log(`${texts.length - bad}/${texts.length} texts identical (${tokens} tokens); ${bad} mismatches`);
process.exit(bad ? 1 : 0);
