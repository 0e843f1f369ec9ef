/**
 * The native checkpoint readers and writer (native/tensor/safetensors.cc, weight_files.cc,
 * pickle_file.cc's ReadTorchStateDict): safetensors round trips in every dtype, interop both
 * ways with an independent Python reader and writer (struct + json + torch, no safetensors
 * package), one test per rule a hostile file can break, a fuzz loop over mutated files, and
 * state dicts written by Python's torch.save (tied weights, views, every dtype, the legacy
 * format refused).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DType, NativeBinding, NativeTensor } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { PYTHON } from './fixtures.js';
import { rng } from './helpers/reliability.js';

let b: NativeBinding;
let dir: string;

beforeAll(() => {
  b = loadBinding();
  dir = mkdtempSync(path.join(tmpdir(), 'torch-bert-safetensors-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const file = (name: string): string => path.join(dir, name);

/**
 * An independent safetensors writer and reader in Python (struct + json + torch only), and
 * `values(t)`: a tensor's values as a flat list of floats (exact for every dtype used here),
 * non-finite ones as 'inf', '-inf', 'nan' (JSON has no spelling for them).
 */
const PY_SAFETENSORS = `
import json, math, struct, sys, torch
CODES = {'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
         'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
         'U8': torch.uint8, 'BOOL': torch.bool}
NAMES = {v: k for k, v in CODES.items()}

def tobytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()

def write(path, items, metadata=None):
    header = {}
    if metadata is not None:
        header['__metadata__'] = metadata
    blobs, offset = [], 0
    for name, t in items:
        data = tobytes(t)
        header[name] = {'dtype': NAMES[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for data in blobs:
            f.write(data)

def read(path):
    data = open(path, 'rb').read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n].decode('utf-8'))
    metadata = header.pop('__metadata__', None)
    buf = data[8 + n:]
    out = []
    for name, info in header.items():
        begin, end = info['data_offsets']
        dtype = CODES[info['dtype']]
        raw = bytearray(buf[begin:end])
        if len(raw) == 0:
            t = torch.empty(0, dtype=dtype)
        elif dtype == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dtype)
        out.append((name, t.reshape(info['shape'])))
    return out, metadata, n

def values(t):
    return [x if math.isfinite(x) else str(x) for x in t.double().flatten().tolist()]
`;

/** Runs Python code after PY_SAFETENSORS (argv after the code: `args`); parses the last stdout line as JSON. */
function py<T = unknown>(code: string, ...args: string[]): T {
  const out = execFileSync(PYTHON, ['-c', `${PY_SAFETENSORS}\n${code}`, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}

/** A tensor's values as plain numbers (float16/bfloat16 through float32, as toArray does). */
function values(t: NativeTensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
}

/** values(), non-finite ones spelled as the Python side spells them. */
function pyValues(t: NativeTensor): Array<number | string> {
  return values(t).map((v) => (Number.isFinite(v) ? v : Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf'));
}

const ELEMENT_SIZE: Record<string, number> = {
  float64: 8,
  int64: 8,
  float32: 4,
  int32: 4,
  float16: 2,
  bfloat16: 2,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

interface Described {
  name: string;
  dtype: string;
  shape: number[];
  values: Array<number | string>;
}

function describeAll(tensors: Array<[string, NativeTensor]>): Described[] {
  return tensors.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, values: pyValues(t) }));
}

/** One tensor of every dtype, with awkward values (extremes, -0, non-finite floats), a 0-d and an empty one. */
function everyDtype(): Array<[string, NativeTensor]> {
  const f = (data: number[], shape: number[], dtype: DType) => b.Tensor.fromArray(new Float32Array(data), shape, dtype);
  return [
    ['f64', b.Tensor.fromArray(new Float64Array([1.5, -2.25, 1e300, -1e-300, Math.PI, -0]), [2, 3])],
    ['f32', b.Tensor.fromArray(new Float32Array([0.1, -3.5, Number.POSITIVE_INFINITY, -0, 3e38, 1e-40]), [3, 2])],
    ['f16', f([0.5, -1.25, 65504, 6e-8, 1000, -0.099975586], [2, 3], 'float16')],
    ['bf16', f([0.5, -1.25, 3e38, 1e-30, 257, -0.1], [6], 'bfloat16')],
    ['i64', b.Tensor.fromArray(new BigInt64Array([2n ** 62n, -(2n ** 63n), 0n, -1n]), [2, 2])],
    ['i32', b.Tensor.fromArray(new Int32Array([2 ** 31 - 1, -(2 ** 31), 7]), [3])],
    ['i16', b.Tensor.fromArray(new Int32Array([32767, -32768, -5, 0]), [4], 'int16')],
    ['i8', b.Tensor.fromArray(new Int32Array([127, -128, 3]), [1, 3], 'int8')],
    ['u8', b.Tensor.fromArray(new Uint8Array([0, 255, 128]), [3])],
    ['bool', b.Tensor.fromArray(new Uint8Array([1, 0, 0, 1]), [2, 2], 'bool')],
    ['scalar', b.Tensor.fromArray(new Float32Array([7.25]), [])],
    ['empty', b.Tensor.fromArray(new Float32Array(0), [0, 3])],
  ];
}

describe('writeSafetensors / readSafetensors', () => {
  it('round-trips every dtype, 0-d and empty tensors, names in the given order and metadata', () => {
    const out = file('round.safetensors');
    const tensors = everyDtype();
    const metadata = { format: 'pt', note: 'quote " backslash \\ newline \n unicode é 🙂' };
    b.writeSafetensors(out, tensors, metadata);
    const back = b.readSafetensors(out);
    expect(back.metadata).toEqual(metadata);
    const got = describeAll(back.tensors);
    const want = describeAll(tensors);
    expect(got.map((t) => [t.name, t.dtype, t.shape])).toEqual(want.map((t) => [t.name, t.dtype, t.shape]));
    // toEqual tells -0 from 0 and matches NaN to NaN: the bytes came back, not just close values.
    for (let i = 0; i < got.length; i++) expect(got[i].values, got[i].name).toEqual(want[i].values);
    expect(back.tensors.every(([, t]) => t.device === 'cpu')).toBe(true);

    // The layout the brief and the reference writer use: header padded with spaces to a
    // multiple of 8, tensors back to back in the given order.
    const bytes = readFileSync(out);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    expect(Object.keys(header)).toEqual(['__metadata__', ...tensors.map(([name]) => name)]);
    let offset = 0;
    for (const [name, t] of tensors) {
      const size = t.shape.reduce((a, d) => a * d, 1) * ELEMENT_SIZE[t.dtype];
      expect(header[name].data_offsets, name).toEqual([offset, offset + size]);
      offset += size;
    }
    expect(bytes.length).toBe(8 + n + offset);
    expect(readSafetensorsHeaderShapes(out)).toEqual(want.map((t) => [t.name, t.dtype, t.shape]));
    expect(b.readSafetensorsHeader(out).metadata).toEqual(metadata);
  });

  it('writes no __metadata__ unless given, and reads null for a file without it', () => {
    const out = file('nometa.safetensors');
    b.writeSafetensors(out, [['x', b.Tensor.fromArray(new Float32Array([1, 2]), [2])]]);
    const bytes = readFileSync(out);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'));
    expect(header).toEqual({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
    expect(b.readSafetensors(out).metadata).toBeNull();
    // An empty file (no tensors at all) is valid too.
    b.writeSafetensors(out, []);
    expect(b.readSafetensors(out)).toEqual({ tensors: [], metadata: null });
  });

  it('writes non-contiguous tensors as their values and replaces a file atomically', () => {
    const out = file('view.safetensors');
    const base = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    // A grad-tracking tensor: written as values.
    base.setRequiresGrad(true);
    b.writeSafetensors(out, [['w', base]]);
    b.writeSafetensors(out, [['w', b.Tensor.fromArray(new Float32Array([9]), [1])]]);
    expect(describeAll(b.readSafetensors(out).tensors)).toEqual([{ name: 'w', dtype: 'float32', shape: [1], values: [9] }]);
    expect(() => readFileSync(`${out}.tmp`)).toThrow();
  });

  it('refuses bad arguments: duplicate names, __metadata__ as a name, non-string metadata, non-pairs', () => {
    const t = b.Tensor.fromArray(new Float32Array([1]), [1]);
    const out = file('bad-args.safetensors');
    expect(() =>
      b.writeSafetensors(out, [
        ['a', t],
        ['a', t],
      ]),
    ).toThrow(/bad-args\.safetensors.*tensor 'a' appears twice/);
    expect(() => b.writeSafetensors(out, [['__metadata__', t]])).toThrow(/'__metadata__' cannot name a tensor/);
    expect(() => b.writeSafetensors(out, [['a', t]], { k: 3 as unknown as string })).toThrow(/metadata\['k'\] must be a string/);
    expect(() => b.writeSafetensors(out, [['a'] as unknown as [string, NativeTensor]])).toThrow(
      /tensors\[0\] must be a \[name, Tensor\] pair/,
    );
    expect(() => b.writeSafetensors(out, [['a', 5 as unknown as NativeTensor]])).toThrow(/tensors\[0\]\[1\] \('a'\) must be a Tensor/);
    expect(() => b.readSafetensors(file('missing.safetensors'))).toThrow(/missing\.safetensors': No such file/);
    expect(() => b.readSafetensors(dir)).toThrow(/not a regular file/);
  });
});

function readSafetensorsHeaderShapes(p: string): Array<[string, string, number[]]> {
  return b.readSafetensorsHeader(p).tensors.map((t) => [t.name, t.dtype, t.shape]);
}

describe('safetensors interop with an independent Python reader and writer', () => {
  it('reads a file written by Python with exact values in every dtype', () => {
    const out = file('from-python.safetensors');
    const want = py<{ tensors: Described[]; metadata: Record<string, string> }>(
      `
g = torch.Generator().manual_seed(0)
items = [
    ('embeddings.word_embeddings.weight', torch.randn(5, 4, generator=g)),
    ('f64', torch.randn(3, 2, dtype=torch.float64, generator=g)),
    ('f16', torch.randn(7, generator=g).half()),
    ('bf16', torch.randn(2, 3, generator=g).bfloat16()),
    ('i64', torch.randint(-2**40, 2**40, (4,), generator=g)),
    ('i32', torch.randint(-2**31, 2**31 - 1, (3,), generator=g, dtype=torch.int32)),
    ('i16', torch.randint(-2**15, 2**15 - 1, (2, 2), generator=g, dtype=torch.int16)),
    ('i8', torch.randint(-128, 127, (5,), generator=g, dtype=torch.int8)),
    ('u8', torch.randint(0, 255, (3,), generator=g, dtype=torch.uint8)),
    ('bool', torch.randint(0, 2, (2, 3), generator=g).bool()),
    ('scalar', torch.tensor(-0.375)),
    ('empty', torch.zeros(2, 0)),
    ('noncontiguous.t', torch.randn(3, 4, generator=g).t()),
]
meta = {'format': 'pt', 'é': 'ü'}
write(sys.argv[1], items, meta)
print(json.dumps({'metadata': meta, 'tensors': [
    {'name': n, 'dtype': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape), 'values': values(t)} for n, t in items]}))
`,
      out,
    );
    const got = b.readSafetensors(out);
    expect(got.metadata).toEqual(want.metadata);
    expect(describeAll(got.tensors)).toEqual(want.tensors);
  });

  it('writes files the Python reader reads with exact values', () => {
    const out = file('to-python.safetensors');
    const tensors = everyDtype();
    b.writeSafetensors(out, tensors, { source: 'torch-bert' });
    const seen = py<{ tensors: Described[]; metadata: Record<string, string>; headerLength: number }>(
      `
items, meta, n = read(sys.argv[1])
print(json.dumps({'metadata': meta, 'headerLength': n, 'tensors': [
    {'name': k, 'dtype': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape), 'values': values(t)} for k, t in items]}))
`,
      out,
    );
    expect(seen.metadata).toEqual({ source: 'torch-bert' });
    expect(seen.headerLength % 8).toBe(0);
    expect(seen.tensors).toEqual(describeAll(tensors));
  });
});

/** Writes a safetensors file by hand: the length prefix (the header's length unless given), the header, the data. */
function handmade(name: string, header: string | Buffer | object, data: Buffer = Buffer.alloc(0), length?: bigint): string {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length ?? BigInt(json.length));
  const out = file(name);
  writeFileSync(out, Buffer.concat([prefix, json, data]));
  return out;
}

/**
 * Both readers refuse `p` with an Error whose message names the file, the tensor (when given)
 * and matches `why`.
 */
function expectRefused(p: string, tensor: string | null, why: RegExp): void {
  for (const read of [b.readSafetensors, b.readSafetensorsHeader]) {
    let error: unknown;
    try {
      read(p);
    } catch (e) {
      error = e;
    }
    expect(error, `${read.name} accepted ${path.basename(p)}`).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain(`'${p}'`);
    if (tensor !== null) expect(message).toContain(`tensor '${tensor}'`);
    expect(message).toMatch(why);
  }
}

const f32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

describe('readSafetensors on hostile files', () => {
  it('accepts zero-sized and 0-d tensors', () => {
    const data = Buffer.alloc(4);
    data.writeFloatLE(2.5);
    const p = handmade('zero.safetensors', { e: f32([0, 5], 0, 0), s: f32([], 0, 4), e2: f32([3, 0], 4, 4) }, data);
    expect(describeAll(b.readSafetensors(p).tensors)).toEqual([
      { name: 'e', dtype: 'float32', shape: [0, 5], values: [] },
      { name: 's', dtype: 'float32', shape: [], values: [2.5] },
      { name: 'e2', dtype: 'float32', shape: [3, 0], values: [] },
    ]);
  });

  it('refuses a file shorter than 8 bytes', () => {
    const p = file('short.safetensors');
    writeFileSync(p, Buffer.from([1, 0, 0]));
    expectRefused(p, null, /3 bytes, shorter than the 8-byte header length/);
  });

  it('refuses a header length past the end of the file', () => {
    expectRefused(
      handmade('past.safetensors', '{}', Buffer.alloc(0), 1000n),
      null,
      /header length 1000 runs past the end of the file \(10 bytes\)/,
    );
    expectRefused(
      handmade('huge-len.safetensors', '{}', Buffer.alloc(0), 2n ** 64n - 1n),
      null,
      /header length 18446744073709551615 is over the limit/,
    );
  });

  it('refuses a header length over 100 MB', () => {
    expectRefused(
      handmade('over.safetensors', '{}', Buffer.alloc(0), 100_000_001n),
      null,
      /header length 100000001 is over the limit of 100000000 bytes/,
    );
  });

  it('refuses headers that are not valid UTF-8', () => {
    const bad = Buffer.concat([Buffer.from('{"a'), Buffer.from([0xff]), Buffer.from('":{}}')]);
    expectRefused(handmade('utf8.safetensors', bad), null, /invalid UTF-8/);
    // An overlong encoding of '/' and a lone surrogate escape are not valid either.
    const overlong = Buffer.concat([Buffer.from('{"'), Buffer.from([0xc0, 0xaf]), Buffer.from('":{}}')]);
    expectRefused(handmade('overlong.safetensors', overlong), null, /invalid UTF-8/);
    expectRefused(handmade('surrogate.safetensors', '{"\\ud800":{}}'), null, /unpaired UTF-16 surrogate/);
  });

  it('refuses headers that are not JSON, or not an object', () => {
    expectRefused(handmade('truncated.safetensors', '{"a": {"dtype": "F32", "sha'), null, /unterminated string/);
    expectRefused(handmade('garbage.safetensors', 'PK\x03\x04garbage'), null, /the header must be a JSON object, found the character 'P'/);
    expectRefused(handmade('array.safetensors', '[]'), null, /the header must be a JSON object, found an array/);
    expectRefused(handmade('trailing.safetensors', '{} {}'), null, /trailing characters after the header's object/);
    expectRefused(
      handmade('comma.safetensors', '{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4],}}', Buffer.alloc(4)),
      null,
      /a field name of tensor 'a' must be a string/,
    );
    expectRefused(handmade('nul.safetensors', Buffer.from('{}\0\0\0\0\0\0')), null, /trailing characters/);
  });

  it('refuses fields of the wrong type, missing, unknown or repeated', () => {
    const cases: Array<[object | string, string, RegExp]> = [
      [{ a: 5 }, 'a', /tensor 'a' must be an object \{dtype, shape, data_offsets\}, found a number/],
      [{ a: { dtype: 32, shape: [1], data_offsets: [0, 4] } }, 'a', /the dtype of tensor 'a' must be a string, found a number/],
      [
        { a: { dtype: 'F32', shape: '1', data_offsets: [0, 4] } },
        'a',
        /the shape of tensor 'a' must be an array of integers, found a string/,
      ],
      [
        { a: { dtype: 'F32', shape: [1], data_offsets: { begin: 0 } } },
        'a',
        /the data_offsets of tensor 'a' must be an array of integers, found an object/,
      ],
      [
        { a: { dtype: 'F32', shape: [[1]], data_offsets: [0, 4] } },
        'a',
        /an entry of the shape of tensor 'a' must be a non-negative integer, found an array/,
      ],
      [{ a: { dtype: 'F32', data_offsets: [0, 4] } }, 'a', /tensor 'a': missing shape/],
      [{ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4], extra: 1 } }, 'a', /tensor 'a': unknown field 'extra'/],
      ['{"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 'a', /tensor 'a' has the field 'dtype' twice/],
    ];
    for (const [i, [header, tensor, why]] of cases.entries())
      expectRefused(handmade(`types-${i}.safetensors`, header, Buffer.alloc(4)), tensor, why);
  });

  it('refuses an unknown dtype', () => {
    expectRefused(
      handmade('dtype.safetensors', { w: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, Buffer.alloc(1)),
      'w',
      /unsupported dtype 'Q4' \(supported: F64, F32/,
    );
    // A dtype of the format that libtorch 1.13 lacks.
    expectRefused(
      handmade('u32.safetensors', { w: { dtype: 'U32', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4)),
      'w',
      /unsupported dtype 'U32'/,
    );
  });

  it('refuses negative, non-integer, too large and overflowing shapes', () => {
    expectRefused(
      handmade('neg.safetensors', '{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
      'w',
      /must be a non-negative integer, found a negative number/,
    );
    expectRefused(
      handmade('frac.safetensors', '{"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
      'w',
      /must be a non-negative integer, found a number with a fraction or exponent/,
    );
    expectRefused(
      handmade('exp.safetensors', '{"w": {"dtype": "F32", "shape": [1e0], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
      'w',
      /fraction or exponent/,
    );
    expectRefused(
      handmade('big.safetensors', '{"w": {"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
      'w',
      /is too large \(at most 2\^63 - 1\)/,
    );
    // 2^62 x 4 x 4 bytes wraps to 0 in 64 bits: must not pass as a match for an empty range.
    expectRefused(
      handmade('overflow.safetensors', '{"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}'),
      'w',
      /the shape's size overflows/,
    );
    expectRefused(
      handmade(
        'overflow0.safetensors',
        '{"w": {"dtype": "U8", "shape": [0, 9223372036854775807, 9223372036854775807], "data_offsets": [0, 0]}}',
      ),
      'w',
      /the shape's size overflows/,
    );
  });

  it('refuses data_offsets that are not two integers, reversed, or past the data buffer', () => {
    const d = Buffer.alloc(8);
    expectRefused(
      handmade('one.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, d),
      'w',
      /data_offsets must be two integers \[begin, end\], found 1/,
    );
    expectRefused(handmade('three.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 4, 8] } }, d), 'w', /found 3/);
    expectRefused(
      handmade('str.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: ['0', 8] } }, d),
      'w',
      /an entry of the data_offsets of tensor 'w' must be a non-negative integer, found a string/,
    );
    expectRefused(handmade('reversed.safetensors', { w: f32([0], 8, 0) }, d), 'w', /data_offsets begin 8 is after end 0/);
    expectRefused(
      handmade('pastend.safetensors', { w: f32([4], 0, 16) }, d),
      'w',
      /data_offsets end 16 is past the end of the data buffer \(8 bytes\)/,
    );
    expectRefused(handmade('size.safetensors', { w: f32([3], 0, 8) }, d), 'w', /data_offsets span 8 bytes but shape x dtype is 12 bytes/);
  });

  it('refuses overlapping tensors, holes and trailing bytes', () => {
    const d = Buffer.alloc(16);
    expectRefused(
      handmade('overlap.safetensors', { a: f32([2], 0, 8), b: f32([2], 4, 12), c: f32([1], 12, 16) }, d),
      'b',
      /tensor 'b' overlaps tensor 'a'/,
    );
    // The same tensor twice over the same bytes is an overlap too.
    expectRefused(handmade('alias.safetensors', { a: f32([4], 0, 16), b: f32([4], 0, 16) }, d), 'b', /overlaps tensor 'a'/);
    expectRefused(
      handmade('hole.safetensors', { a: f32([1], 0, 4), b: f32([2], 8, 16) }, d),
      'b',
      /a hole of 4 bytes before tensor 'b' \(at byte 4\)/,
    );
    expectRefused(handmade('lead.safetensors', { b: f32([2], 8, 16) }, d), 'b', /a hole of 8 bytes before tensor 'b'/);
    expectRefused(
      handmade('tail.safetensors', { a: f32([2], 0, 8) }, d),
      null,
      /the tensors cover 8 bytes of the data buffer but it holds 16 bytes/,
    );
    // Out of order in the header is fine when the bytes are covered exactly.
    const ordered = Buffer.alloc(16);
    ordered.writeFloatLE(1, 0);
    ordered.writeFloatLE(2, 4);
    ordered.writeFloatLE(3, 8);
    ordered.writeFloatLE(4, 12);
    const p = handmade('unordered.safetensors', { late: f32([2], 8, 16), early: f32([2], 0, 8) }, ordered);
    expect(describeAll(b.readSafetensors(p).tensors)).toEqual([
      { name: 'late', dtype: 'float32', shape: [2], values: [3, 4] },
      { name: 'early', dtype: 'float32', shape: [2], values: [1, 2] },
    ]);
  });

  it('refuses duplicate tensor names and duplicate __metadata__', () => {
    const d = Buffer.alloc(8);
    const t = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}';
    const u = '{"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}';
    expectRefused(handmade('dup.safetensors', `{"w": ${t}, "w": ${u}}`, d), 'w', /tensor 'w' appears twice/);
    expectRefused(
      handmade('dupmeta.safetensors', `{"__metadata__": {}, "w": ${t}, "__metadata__": {}}`, Buffer.alloc(4)),
      null,
      /the header has __metadata__ twice/,
    );
    // Escapes are decoded before names are compared.
    expectRefused(handmade('dupesc.safetensors', `{"w": ${t}, "\\u0077": ${u}}`, d), 'w', /tensor 'w' appears twice/);
  });

  it('refuses __metadata__ that is not an object of strings', () => {
    expectRefused(
      handmade('meta-num.safetensors', { __metadata__: { format: 'pt', epoch: 3 } }),
      null,
      /__metadata__\['epoch'\] must be a string, found a number/,
    );
    expectRefused(
      handmade('meta-arr.safetensors', { __metadata__: ['pt'] }),
      null,
      /__metadata__ must be an object of strings, found an array/,
    );
    expectRefused(handmade('meta-dup.safetensors', '{"__metadata__": {"k": "a", "k": "b"}}'), null, /__metadata__ has the key 'k' twice/);
    // "__proto__" is an ordinary key of the metadata object.
    const p = handmade('meta-proto.safetensors', '{"__metadata__": {"__proto__": "x", "a": "b"}}');
    const { metadata } = b.readSafetensors(p);
    expect(Object.getPrototypeOf(metadata)).toBe(Object.prototype);
    expect(Object.entries(metadata!)).toEqual([
      ['__proto__', 'x'],
      ['a', 'b'],
    ]);
  });
});

describe('readSafetensors fuzz', () => {
  it('survives thousands of mutated files: each one reads or throws an Error naming the file', () => {
    const base = file('fuzz-base.safetensors');
    b.writeSafetensors(
      base,
      [
        ['a.weight', b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3])],
        ['ids', b.Tensor.fromArray(new BigInt64Array([5n, -6n]), [2])],
        ['half', b.Tensor.fromArray(new Float32Array([0.5, 1.5, 2.5]), [3], 'bfloat16')],
        ['s', b.Tensor.fromArray(new Uint8Array([1]), [], 'bool')],
        ['e', b.Tensor.fromArray(new Float32Array(0), [0, 2])],
      ],
      { format: 'pt', k: 'v' },
    );
    const original = readFileSync(base);
    const headerEnd = 8 + Number(original.readBigUInt64LE(0));
    const rand = rng(20240611);
    const int = (n: number) => Math.floor(rand() * n);
    const tokens = ['{', '}', '[', ']', '"', '\\', ':', ',', '-', '.', 'e', '0', '9', ' ', '\\u', '\u00e9', '\xff'];
    const target = file('fuzz.safetensors');
    let read = 0;
    let refused = 0;
    const iterations = 3000;
    for (let i = 0; i < iterations; i++) {
      let bytes = Buffer.from(original);
      const mutations = 1 + int(3);
      for (let m = 0; m < mutations; m++) {
        const end = Math.max(1, Math.min(bytes.length, headerEnd));
        const at = int(end);
        switch (int(7)) {
          case 0: // flip bits of a byte of the length prefix or header
            bytes[at] ^= 1 << int(8);
            break;
          case 1: // a random byte
            bytes[at] = int(256);
            break;
          case 2: // insert a JSON-significant token (shifts everything after it)
            bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(tokens[int(tokens.length)], 'latin1'), bytes.subarray(at)]);
            break;
          case 3: // delete a few bytes
            bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + int(4))]);
            break;
          case 4: // truncate anywhere, data included
            bytes = bytes.subarray(0, int(bytes.length + 1));
            break;
          case 5: // a new length prefix, small or huge
            if (bytes.length >= 8)
              bytes.writeBigUInt64LE(rand() < 0.5 ? BigInt(int(bytes.length + 16)) : BigInt(int(2 ** 31)) * BigInt(int(2 ** 31) + 1), 0);
            break;
          default:
            {
              // change one digit of the header (shapes and offsets)
              const digits = [];
              for (let j = 8; j < Math.min(bytes.length, headerEnd); j++) if (bytes[j] >= 0x30 && bytes[j] <= 0x39) digits.push(j);
              if (digits.length) bytes[digits[int(digits.length)]] = 0x30 + int(10);
            }
            break;
        }
      }
      writeFileSync(target, bytes);
      try {
        const got = b.readSafetensors(target);
        // What reads must be consistent: every tensor's bytes were inside the file.
        let total = 0;
        for (const [, t] of got.tensors) {
          total += t.shape.reduce((x, d) => x * d, 1) * ELEMENT_SIZE[t.dtype];
          t.dispose();
        }
        expect(total).toBeLessThanOrEqual(bytes.length);
        b.readSafetensorsHeader(target);
        read++;
      } catch (e) {
        if (!(e instanceof Error) || !e.message.includes(`'${target}'`)) throw new Error(`fuzz case ${i}: unexpected failure ${String(e)}`);
        expect(() => b.readSafetensorsHeader(target)).toThrow(e.message);
        refused++;
      }
    }
    expect(read + refused).toBe(iterations);
    // Both outcomes occur (a mutation of a digit or of padding can leave a valid file).
    expect(read).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(iterations / 2);
  });
});

describe('readTorchStateDict', () => {
  it("reads Python's torch.save(model.state_dict()): tied weights, views, every dtype, in file order", () => {
    const out = file('pytorch_model.bin');
    const want = py<Described[]>(
      `
import torch.nn as nn
torch.manual_seed(0)
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.decoder = nn.Linear(4, 6)
        self.decoder.weight = self.emb.weight  # tied: one storage, two names
        base = torch.randn(5, 6)
        self.register_buffer('transposed', base.t())  # non-contiguous
        self.register_buffer('strided', base[1:, ::2])  # offset + strides into the same storage
        for name, dt in [('f64', torch.float64), ('f16', torch.float16), ('bf16', torch.bfloat16)]:
            self.register_buffer(name, torch.randn(2, 3).to(dt))
        self.register_buffer('i64', torch.tensor([2**40, -3]))
        self.register_buffer('i32', torch.tensor([7, -2**31], dtype=torch.int32))
        self.register_buffer('i16', torch.tensor([[-32768, 5]], dtype=torch.int16))
        self.register_buffer('i8', torch.tensor([-128, 127], dtype=torch.int8))
        self.register_buffer('u8', torch.tensor([0, 255], dtype=torch.uint8))
        self.register_buffer('mask', torch.tensor([True, False, True]))
        self.register_buffer('scalar', torch.tensor(1.25))
        self.register_buffer('empty', torch.zeros(0, 2))
sd = M().state_dict()
assert type(sd).__name__ == 'OrderedDict'
assert sd['transposed'].is_contiguous() is False and sd['emb.weight'].data_ptr() == sd['decoder.weight'].data_ptr()
torch.save(sd, sys.argv[1])
print(json.dumps([{'name': k, 'dtype': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape), 'values': values(t)} for k, t in sd.items()]))
`,
      out,
    );
    expect(want.map((t) => t.name)).toContain('decoder.weight');
    const got = b.readTorchStateDict(out);
    expect(describeAll(got)).toEqual(want);
  });

  it('refuses the legacy (non-zip) format, non-dicts and dicts of other things, naming the file', () => {
    const legacy = file('legacy.bin');
    const list = file('list.bin');
    const mixed = file('mixed.bin');
    const nested = file('nested.bin');
    py(
      `
torch.save({'w': torch.ones(2)}, sys.argv[1], _use_new_zipfile_serialization=False)
torch.save([torch.ones(1)], sys.argv[2])
torch.save({'w': torch.ones(1), 'step': 3}, sys.argv[3])
torch.save({'model': {'w': torch.ones(1)}}, sys.argv[4])
class Payload:
    def __reduce__(self):
        return (print, ('ran',))
torch.save({'w': torch.ones(1), 'x': Payload()}, sys.argv[5])
print('null')
`,
      legacy,
      list,
      mixed,
      nested,
      file('payload.bin'),
    );
    // Any global beyond a state dict's is refused before it could be called.
    expect(() => b.readTorchStateDict(file('payload.bin'))).toThrow(
      /payload\.bin'.*it references __builtin__\.print, which a state dict of tensors does not need/,
    );
    expect(() => b.readTorchStateDict(legacy)).toThrow(
      /legacy\.bin'.*legacy \(non-zip\) format.*re-save it with torch >= 1\.6.*safetensors/,
    );
    expect(() => b.readTorchStateDict(list)).toThrow(/list\.bin'.*does not hold a dict of tensors \(found a list\)/);
    expect(() => b.readTorchStateDict(mixed)).toThrow(/mixed\.bin'.*does not hold a dict of tensors \('step' is a int\)/);
    expect(() => b.readTorchStateDict(nested)).toThrow(/nested\.bin'.*'model' is a dict/);
    const st = file('not-a-bin.safetensors');
    b.writeSafetensors(st, [['w', b.Tensor.fromArray(new Float32Array([1]), [1])]]);
    expect(() => b.readTorchStateDict(st)).toThrow(/not-a-bin\.safetensors': not a torch\.save zip archive/);
    expect(() => b.readTorchStateDict(file('absent.bin'))).toThrow(/absent\.bin': no such file/);
  });
});
