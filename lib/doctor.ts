/**
 * `torch-bert doctor`: what a bug report needs (filled in below).
 */
export async function commandDoctor(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  console.log(json ? '{}' : 'torch-bert doctor');
}
