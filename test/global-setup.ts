/**
 * Fails the whole run early, with the loader's explanation, when the native addon is missing,
 * instead of every test file failing with the same message.
 */
import { loadBinding } from '../lib/addon/loader.js';

export async function setup(): Promise<void> {
  const versions = loadBinding().versions();
  console.log(`torch-bert tests: libtorch ${versions.libtorch} (built against ${versions.builtAgainst}), cuda ${versions.cuda ?? 'none'}`);
}
