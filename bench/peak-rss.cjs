// Preloaded (`node -r ./bench/peak-rss.cjs ...`) into a command the benchmarks time: at exit,
// writes the process's peak RSS in bytes to $TORCH_BERT_PEAK_RSS_FILE.
//
// VmHWM of /proc/self/status, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec,
// so a child spawned by a large parent reports the parent's peak (measured: 2.7 GB for a
// 0.6 GB run). VmHWM belongs to the process's own address space.
const { readFileSync, writeFileSync } = require('node:fs');

function peakRssBytes() {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (kb) return Number(kb[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

const file = process.env.TORCH_BERT_PEAK_RSS_FILE;
if (file) process.on('exit', () => writeFileSync(file, String(peakRssBytes())));

module.exports = { peakRssBytes };
