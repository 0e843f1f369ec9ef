/**
 * TEMPORARY, until the native `writeSafetensors` lands on main (another branch adds it): a
 * stand-in with its signature, installed on the loaded binding only when the binding lacks it,
 * so that export's tests run in the meantime. The tests never read files back through it (an
 * independent Python parser does), so they check the format, not this writer's own idea of it.
 * Delete this file, and its call in test/export.test.ts, once `binding.writeSafetensors` exists.
 */
import { renameSync, writeFileSync } from 'node:fs';
import type { NativeBinding, NativeTensor } from '../../lib/binding.js';

const DTYPES: Partial<Record<NativeTensor['dtype'], string>> = { float32: 'F32', float64: 'F64', int64: 'I64', int32: 'I32' };

export function installSafetensorsShim(binding: NativeBinding): boolean {
  if (typeof binding.writeSafetensors === 'function') return false;
  binding.writeSafetensors = (path, tensors, metadata) => {
    const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
    const chunks: Buffer[] = [];
    let offset = 0;
    for (const [name, t] of tensors) {
      const dtype = DTYPES[t.dtype];
      if (!dtype) throw new Error(`shim: dtype ${t.dtype}`);
      const a = t.toArray();
      const bytes = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
      header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
      chunks.push(bytes);
      offset += bytes.length;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    writeFileSync(`${path}.tmp`, Buffer.concat([size, Buffer.from(json), ...chunks]));
    renameSync(`${path}.tmp`, path);
  };
  return true;
}
