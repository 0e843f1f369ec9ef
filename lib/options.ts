/**
 * Options of `train()`, with defaults equal to the seed tutorial's job
 * (frozen bert-base-uncased + Linear(768,512)-ReLU-Dropout(0.1)-Linear(512,C), AdamW lr 1e-5,
 * batch 32, 5 epochs, max length 250, stratified 80/20 split with seed 42, best weights by
 * validation loss).
 */
import type { DataSource } from './data.js';

export type Pooling = 'cls' | 'mean';
export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/** Emitted after every optimisation step. */
export interface StepEvent {
  type: 'step';
  epoch: number;
  /** 1-based step within the epoch. */
  step: number;
  stepsPerEpoch: number;
  /** Mean loss of this batch. */
  loss: number;
  /** Running mean training loss of the epoch so far. */
  epochLoss: number;
  examplesPerSecond: number;
  /** Estimated seconds until the epoch's training steps end. */
  etaSeconds: number;
}

/** Emitted after every epoch's validation. */
export interface EpochEvent extends EpochMetrics {
  type: 'epoch';
  epochs: number;
}

export type ProgressEvent = StepEvent | EpochEvent;

export interface EpochMetrics {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  validationLoss: number;
  validationAccuracy: number;
  /** Wall seconds of the epoch (training + validation). */
  seconds: number;
  /** Whether this epoch set a new best validation loss (and was checkpointed). */
  isBest: boolean;
}

export interface TrainOptions {
  /** Training data: a CSV path, `{ csv, textColumn, labelColumn }`, or `{ texts, labels }`. */
  data: DataSource;
  /** Validation data. Default: a stratified `validationSplit` share of `data`. */
  validationData?: DataSource;
  /** TorchScript encoder file; forward(input_ids, attention_mask[, token_type_ids]) → [B, T, H] first. */
  encoder: string;
  /** Hugging Face `tokenizer.json` matching the encoder's vocabulary. */
  tokenizer: string;
  /** Directory for the best checkpoint (classifier.pt, config.json, tokenizer.json, history.json). Default: not saved. */
  outDir?: string;
  /** Class names in id order. Default: inferred (integer labels → ids 0..max; names → sorted). */
  labels?: string[];
  /** Fine-tuning technique. Only the seed's `frozen` (feature extraction) for now. Default `frozen`. */
  technique?: 'frozen';
  /** Tokens per text after truncation, special tokens included; shorter texts are padded. Default 250. */
  maxLength?: number;
  /** Default 32. */
  batchSize?: number;
  /** Default 5. */
  epochs?: number;
  /** AdamW learning rate. Default 1e-5. */
  learningRate?: number;
  /** AdamW decoupled weight decay. Default 0.01. */
  weightDecay?: number;
  /** AdamW betas. Default [0.9, 0.999]. */
  betas?: [number, number];
  /** AdamW epsilon. Default 1e-8. */
  eps?: number;
  /** Share of `data` held out for validation, stratified by class. Default 0.2. */
  validationSplit?: number;
  /** Seeds the split, the head's initialisation, shuffling and dropout. Default 42. */
  seed?: number;
  /** Width of the head's hidden layer. Default 512. */
  headHidden?: number;
  /** Dropout after the head's ReLU. Default 0.1. */
  dropout?: number;
  /** How the encoder's [B, T, H] output becomes one vector per text. Default `cls`. */
  pooling?: Pooling;
  /** Clip gradients to this global norm; 0 disables (the seed does not clip). Default 0. */
  maxGradNorm?: number;
  /** Default `auto`: CUDA when libtorch sees a GPU, else CPU. */
  device?: Device;
  /** libtorch intra-op threads. Default: libtorch's own choice. */
  threads?: number;
  /** Called after each step and each epoch. */
  onProgress?: (event: ProgressEvent) => void;
  /** Stops training at the next step boundary; the best checkpoint so far is kept. */
  signal?: AbortSignal;
}

export const DEFAULTS = {
  technique: 'frozen',
  maxLength: 250,
  batchSize: 32,
  epochs: 5,
  learningRate: 1e-5,
  weightDecay: 0.01,
  betas: [0.9, 0.999] as [number, number],
  eps: 1e-8,
  validationSplit: 0.2,
  seed: 42,
  headHidden: 512,
  dropout: 0.1,
  pooling: 'cls' as Pooling,
  maxGradNorm: 0,
  device: 'auto' as Device,
} as const;

export type ResolvedTrainOptions = Required<
  Omit<TrainOptions, 'validationData' | 'outDir' | 'labels' | 'threads' | 'onProgress' | 'signal'>
> &
  Pick<TrainOptions, 'validationData' | 'outDir' | 'labels' | 'threads' | 'onProgress' | 'signal'>;
