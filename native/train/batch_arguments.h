// The argument readers of the batch calls (trainStep, evalStep, extractFeatures, headTrainStep,
// headEvalStep): JS values in, train/batch.h's plain data out, validated, on the main thread.
// Messages name the function and the field ("trainStep: options.maxGradNorm must be >= 0").
// Kept apart from the computation as onnxruntime-node keeps its argument parsing in
// *_helper.cc.
#pragma once

#include <napi.h>

#include <string>

#include "train/batch.h"
#include "train/precision.h"

namespace torch_bert {

// batch = { batchSize, seqLen, inputIds, attentionMask, labels? } (Int32Arrays of
// batchSize * seqLen; labels: batchSize class ids, or a Float32Array of batchSize rows of targets). `fn` names the
// function in messages.
Batch ReadBatch(const Napi::Value& value, const std::string& fn, bool requireLabels);

// features, rows and labels of headTrainStep / headEvalStep (info[first..first + 2]), checked
// against each other.
BatchInput FeatureInput(const Napi::CallbackInfo& info, size_t first, const std::string& fn, bool requireLabels);

// trainStep / headTrainStep options: loss fields, maxGradNorm, accumulateOnly, lossScale (the
// accumulation weight), skipNonFinite, checkGradients, precision, gradScaling.
TrainOptions ReadTrainOptions(const Napi::Value& value, const std::string& fn);

// evalStep / headEvalStep's `loss` argument: loss fields and precision.
EvalOptions ReadEvalOptions(const Napi::Value& value, const std::string& fn);

// extractFeatures' options: { precision, method }.
FeatureOptions ReadFeatureOptions(const Napi::Value& value, const std::string& fn);

}  // namespace torch_bert
