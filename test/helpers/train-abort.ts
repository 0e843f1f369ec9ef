/**
 * The interrupted run of the resume tests: train() stopped through its AbortSignal at a chosen
 * progress event, as a user's Ctrl-C or a cancel button would stop it mid-run.
 */
import { type ProgressEvent, type TrainOptions, type TrainResult, train } from '../../lib/index.js';

/** `train(opts)` aborted at the first progress event `at` accepts (the run then rejects, naming where it stopped). */
export function trainAbortedAt(opts: TrainOptions, at: (event: ProgressEvent) => boolean): Promise<TrainResult> {
  const controller = new AbortController();
  return train({
    ...opts,
    signal: controller.signal,
    onProgress: (event) => {
      if (at(event)) controller.abort();
    },
  });
}
