// Preloaded (`node -r ./bench/peak-rss.cjs ...`) into a command the benchmarks time: at exit,
// writes the process's peak RSS in bytes (getrusage ru_maxrss) to $TORCH_BERT_PEAK_RSS_FILE.
const { writeFileSync } = require('node:fs');

const file = process.env.TORCH_BERT_PEAK_RSS_FILE;
if (file) {
  process.on('exit', () => {
    writeFileSync(file, String(process.resourceUsage().maxRSS * 1024));
  });
}
