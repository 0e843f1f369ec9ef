/**
 * A state dict of float32 tensors as `torch.save` writes it (the zip format torch has used since
 * 1.6), so that Python's `torch.load(path)` gives an `OrderedDict[str, Tensor]`: for file formats that
 * name a `.bin` pickle, such as AdapterHub's `pytorch_adapter.bin`, which its loader opens with
 * `torch.load` whatever else is in the folder.
 *
 * The archive holds `archive/data.pkl` (a protocol-2 pickle: an OrderedDict whose values are
 * `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, each storage a
 * persistent id `('storage', torch.FloatStorage, '<n>', 'cpu', numel)`), `archive/data/<n>` (each
 * tensor's bytes, little-endian) and `archive/version` ("3"). Entries are stored uncompressed with
 * their CRC-32 (torch's reader checks it), and their data 64-byte aligned as torch aligns it (what
 * `torch.load(mmap=True)` needs). Written only from data this library holds: nothing here reads
 * a pickle.
 */
import { crc32 } from 'node:zlib';

export interface Float32Entry {
  name: string;
  shape: number[];
  data: Float32Array;
}

const ARCHIVE = 'archive';
const ALIGN = 64;

/** The protocol-2 pickle opcodes used (pickletools' names). */
const OP = {
  PROTO: 0x80,
  GLOBAL: 0x63,
  EMPTY_TUPLE: 0x29,
  REDUCE: 0x52,
  MARK: 0x28,
  TUPLE: 0x74,
  BINUNICODE: 0x58,
  BININT: 0x4a,
  BINPERSID: 0x51,
  NEWFALSE: 0x89,
  SETITEMS: 0x75,
  STOP: 0x2e,
} as const;

class PickleWriter {
  private readonly parts: Buffer[] = [];
  op(code: number): this {
    this.parts.push(Buffer.from([code]));
    return this;
  }
  global(module: string, name: string): this {
    this.op(OP.GLOBAL);
    this.parts.push(Buffer.from(`${module}\n${name}\n`, 'utf8'));
    return this;
  }
  string(s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(bytes.length);
    this.op(OP.BINUNICODE);
    this.parts.push(len, bytes);
    return this;
  }
  int(n: number): this {
    if (!Number.isInteger(n) || n < -(2 ** 31) || n >= 2 ** 31) throw new RangeError(`torch-save: ${n} is not a 32-bit integer`);
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    this.op(OP.BININT);
    this.parts.push(b);
    return this;
  }
  tuple(items: number[]): this {
    this.op(OP.MARK);
    for (const i of items) this.int(i);
    return this.op(OP.TUPLE);
  }
  orderedDict(): this {
    return this.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function contiguousStrides(shape: number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** data.pkl: the OrderedDict of tensors, storage n being entries[n]. */
function statePickle(entries: Float32Entry[]): Buffer {
  const p = new PickleWriter().op(OP.PROTO).op(2).orderedDict().op(OP.MARK);
  entries.forEach((e, n) => {
    p.string(e.name).global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK);
    p.op(OP.MARK).string('storage').global('torch', 'FloatStorage').string(String(n)).string('cpu').int(e.data.length).op(OP.TUPLE);
    p.op(OP.BINPERSID);
    p.int(0).tuple(e.shape).tuple(contiguousStrides(e.shape)).op(OP.NEWFALSE).orderedDict();
    p.op(OP.TUPLE).op(OP.REDUCE);
  });
  return p.op(OP.SETITEMS).op(OP.STOP).bytes();
}

/** A stored entry's local file header (30 bytes), before its name, extra field and data. */
function localHeader(name: Buffer, crc: number, size: number, extraLength: number): Buffer {
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4); // version needed
  local.writeUInt16LE(0, 6); // flags
  local.writeUInt16LE(0, 8); // stored
  local.writeUInt16LE(0, 10); // time
  local.writeUInt16LE(0x21, 12); // date: 1980-01-01
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(size, 18);
  local.writeUInt32LE(size, 22);
  local.writeUInt16LE(name.length, 26);
  local.writeUInt16LE(extraLength, 28);
  return local;
}

/** A stored entry's central directory header (46 bytes), before its name; `offset`: where its local header is. */
function centralHeader(name: Buffer, crc: number, size: number, offset: number): Buffer {
  const header = Buffer.alloc(46);
  header.writeUInt32LE(0x02014b50, 0);
  header.writeUInt16LE(20, 4); // made by
  header.writeUInt16LE(20, 6); // needed
  header.writeUInt16LE(0, 8);
  header.writeUInt16LE(0, 10);
  header.writeUInt16LE(0, 12);
  header.writeUInt16LE(0x21, 14);
  header.writeUInt32LE(crc, 16);
  header.writeUInt32LE(size, 20);
  header.writeUInt32LE(size, 24);
  header.writeUInt16LE(name.length, 28);
  header.writeUInt16LE(0, 30); // extra
  header.writeUInt16LE(0, 32); // comment
  header.writeUInt16LE(0, 34); // disk
  header.writeUInt16LE(0, 36); // internal attributes
  header.writeUInt32LE(0, 38); // external attributes
  header.writeUInt32LE(offset, 42);
  return header;
}

/** The end of central directory record (22 bytes): `entries` headers of `size` bytes from `offset`. */
function endOfCentralDirectory(entries: number, size: number, offset: number): Buffer {
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries, 8);
  end.writeUInt16LE(entries, 10);
  end.writeUInt32LE(size, 12);
  end.writeUInt32LE(offset, 16);
  return end;
}

const tooLargeForZip = () => new RangeError('torch-save: the state dict is too large for a zip without ZIP64');

/** An uncompressed zip whose entries' data start at multiples of 64 bytes (padding in the local header's extra field). */
function storedZip(files: Array<{ name: string; data: Buffer }>): Buffer {
  const out: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const crc = crc32(f.data) >>> 0;
    // Extra field: id 'FB' (as torch writes it) + length + zero padding up to the alignment.
    const pad = (ALIGN - ((offset + 30 + name.length + 4) % ALIGN)) % ALIGN;
    const extra = Buffer.alloc(4 + pad);
    extra.writeUInt16LE(0x4246, 0);
    extra.writeUInt16LE(pad, 2);
    // An offset the headers' 32-bit fields cannot hold.
    if (offset >= 2 ** 32) throw tooLargeForZip();
    const local = localHeader(name, crc, f.data.length, extra.length);
    central.push(centralHeader(name, crc, f.data.length, offset), name);
    out.push(local, name, extra, f.data);
    offset += local.length + name.length + extra.length + f.data.length;
  }
  const centralBytes = Buffer.concat(central);
  // Before the end record is written: its 16- and 32-bit fields would throw Node's bare out-of-range error.
  if (offset + centralBytes.length >= 2 ** 32 || files.length >= 2 ** 16) throw tooLargeForZip();
  return Buffer.concat([...out, centralBytes, endOfCentralDirectory(files.length, centralBytes.length, offset)]);
}

/** The bytes of `torch.save(OrderedDict(entries))` for float32 CPU tensors. */
export function torchSaveBytes(entries: Float32Entry[]): Buffer {
  for (const e of entries) {
    const numel = e.shape.reduce((a, b) => a * b, 1);
    if (numel !== e.data.length)
      throw new RangeError(`torch-save: ${e.name} has ${e.data.length} values for shape [${e.shape.join(', ')}]`);
  }
  const files = [
    { name: `${ARCHIVE}/data.pkl`, data: statePickle(entries) },
    ...entries.map((e, n) => ({ name: `${ARCHIVE}/data/${n}`, data: Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength) })),
    { name: `${ARCHIVE}/version`, data: Buffer.from('3\n') },
  ];
  return storedZip(files);
}
