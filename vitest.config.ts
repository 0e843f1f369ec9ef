import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Native training steps on small models take seconds, not milliseconds.
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // The machine has 2 cores and libtorch uses them; run test files one at a time.
    fileParallelism: false,
  },
});
