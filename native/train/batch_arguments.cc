#include "train/batch_arguments.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

torch::Tensor CopyInt32(const Napi::Int32Array& array, std::vector<int64_t> shape) {
  torch::Tensor t = torch::empty(shape, torch::kInt);
  if (array.ElementLength() > 0) std::memcpy(t.data_ptr(), array.Data(), array.ElementLength() * sizeof(int32_t));
  return t.to(torch::kLong);
}

// Per-class weights (classWeights, positiveWeights): a non-empty Float32Array of finite numbers >= 0.
std::optional<torch::Tensor> ReadClassValues(const Napi::Object& options, const char* name, const std::string& where) {
  Napi::Env env = options.Env();
  Napi::Value weights = options.Get(name);
  if (IsMissing(weights)) return std::nullopt;
  const std::string what = where + "." + name;
  if (!weights.IsTypedArray() || weights.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowTypeError(env, what + " must be a Float32Array, got " + TypeOfValue(weights));
  }
  auto array = weights.As<Napi::Float32Array>();
  if (array.ElementLength() == 0) ThrowError(env, what + " must not be empty");
  for (size_t i = 0; i < array.ElementLength(); ++i) {
    if (!std::isfinite(array[i]) || array[i] < 0) {
      ThrowError(env,
                 what + "[" + std::to_string(i) + "] must be a finite number >= 0, got " + std::to_string(array[i]));
    }
  }
  torch::Tensor t = torch::empty({static_cast<int64_t>(array.ElementLength())}, torch::kFloat);
  std::memcpy(t.data_ptr(), array.Data(), array.ElementLength() * sizeof(float));
  return t;
}

void ReadLossFields(const Napi::Object& options, const std::string& where, LossOptions& loss) {
  Napi::Env env = options.Env();
  loss.classWeights = ReadClassValues(options, "classWeights", where);
  loss.positiveWeights = ReadClassValues(options, "positiveWeights", where);
  Napi::Value smoothing = options.Get("labelSmoothing");
  if (!IsMissing(smoothing)) {
    loss.labelSmoothing = ReadNumber(smoothing, where + ".labelSmoothing");
    if (loss.labelSmoothing < 0 || loss.labelSmoothing >= 1)
      ThrowError(env, where + ".labelSmoothing must be in [0, 1)");
  }
}

// A batch's labels: an Int32Array of `count` class ids (none negative: nll_loss would silently
// skip -100, its ignore_index, and a negative label is a bug upstream), or a Float32Array of
// finite targets, `count` rows of one or more values each (multi-label classification and
// regression, train/batch.h).
torch::Tensor ReadLabels(const Napi::Value& value, const std::string& what, int64_t count,
                         const std::string& countName) {
  Napi::Env env = value.Env();
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    auto targets = value.As<Napi::Float32Array>();
    const size_t n = targets.ElementLength();
    if (count == 0 ? n != 0 : n == 0 || n % static_cast<size_t>(count) != 0) {
      ThrowError(env, what + " has " + std::to_string(n) + " targets, not a positive multiple of " + countName + " = " +
                          std::to_string(count) + " (one or more per row)");
    }
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(targets[i])) {
        ThrowError(env,
                   what + "[" + std::to_string(i) + "] is not a finite number (" + std::to_string(targets[i]) + ")");
      }
    }
    torch::Tensor t = torch::empty({static_cast<int64_t>(n)}, torch::kFloat);
    if (n > 0) std::memcpy(t.data_ptr(), targets.Data(), n * sizeof(float));
    return t;
  }
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowTypeError(
        env, what + " must be an Int32Array of class ids or a Float32Array of targets, got " + TypeOfValue(value));
  }
  auto ids = value.As<Napi::Int32Array>();
  if (ids.ElementLength() != static_cast<size_t>(count)) {
    ThrowError(env, what + " has " + std::to_string(ids.ElementLength()) + " elements, expected " + countName + " = " +
                        std::to_string(count));
  }
  for (size_t i = 0; i < ids.ElementLength(); ++i) {
    if (ids[i] < 0) ThrowError(env, what + "[" + std::to_string(i) + "] is negative (" + std::to_string(ids[i]) + ")");
  }
  return CopyInt32(ids, {count});
}

}  // namespace

Batch ReadBatch(const Napi::Value& value, const std::string& fn, bool requireLabels) {
  Napi::Env env = value.Env();
  Napi::Object object = ReadObject(value, fn + ": batch");
  Batch batch;
  batch.size = ReadInteger(object.Get("batchSize"), fn + ": batch.batchSize", 1, int64_t{1} << 31);
  batch.seqLen = ReadInteger(object.Get("seqLen"), fn + ": batch.seqLen", 1, int64_t{1} << 31);
  const size_t expected = static_cast<size_t>(batch.size * batch.seqLen);

  Napi::Int32Array ids = ReadInt32Array(object.Get("inputIds"), fn + ": batch.inputIds");
  Napi::Int32Array mask = ReadInt32Array(object.Get("attentionMask"), fn + ": batch.attentionMask");
  auto checkLength = [&](const Napi::Int32Array& a, const std::string& name) {
    if (a.ElementLength() != expected) {
      ThrowError(env, fn + ": batch." + name + " has " + std::to_string(a.ElementLength()) +
                          " elements, expected batchSize * seqLen = " + std::to_string(expected));
    }
  };
  checkLength(ids, "inputIds");
  checkLength(mask, "attentionMask");
  batch.inputIds = CopyInt32(ids, {batch.size, batch.seqLen});
  batch.attentionMask = CopyInt32(mask, {batch.size, batch.seqLen});
  Napi::Value typesValue = object.Get("tokenTypeIds");
  if (!IsMissing(typesValue)) {
    Napi::Int32Array types = ReadInt32Array(typesValue, fn + ": batch.tokenTypeIds");
    checkLength(types, "tokenTypeIds");
    for (size_t i = 0; i < types.ElementLength(); ++i) {
      // An embedding row: a negative one would read before the table.
      if (types[i] < 0) {
        ThrowError(
            env, fn + ": batch.tokenTypeIds[" + std::to_string(i) + "] is negative (" + std::to_string(types[i]) + ")");
      }
    }
    batch.tokenTypeIds = CopyInt32(types, {batch.size, batch.seqLen});
  }

  // A per-token model (train/batch.h): one label per position instead of one per row.
  Napi::Value positionsValue = object.Get("positions");
  int64_t labelCount = batch.size;
  std::string labelCountName = "batchSize";
  if (!IsMissing(positionsValue)) {
    Napi::Int32Array positions = ReadInt32Array(positionsValue, fn + ": batch.positions");
    for (size_t i = 0; i < positions.ElementLength(); ++i) {
      if (positions[i] < 0 || static_cast<size_t>(positions[i]) >= expected) {
        ThrowError(env, fn + ": batch.positions[" + std::to_string(i) + "] = " + std::to_string(positions[i]) +
                            " is out of range for batchSize * seqLen = " + std::to_string(expected));
      }
    }
    labelCount = static_cast<int64_t>(positions.ElementLength());
    labelCountName = "positions.length";
    batch.positions = CopyInt32(positions, {labelCount});
  }

  Napi::Value labelsValue = object.Get("labels");
  if (IsMissing(labelsValue)) {
    if (requireLabels)
      ThrowTypeError(env, fn + ": batch.labels is required (an Int32Array of class ids, or a Float32Array of targets)");
    return batch;
  }
  batch.labels = ReadLabels(labelsValue, fn + ": batch.labels", labelCount, labelCountName);
  return batch;
}

EvalOptions ReadEvalOptions(const Napi::Value& value, const std::string& fn) {
  EvalOptions eval;
  if (IsMissing(value)) return eval;
  // Named `loss` in messages, as before precision joined the loss options.
  const std::string where = fn + ": loss";
  Napi::Object options = ReadObject(value, where);
  ReadLossFields(options, where, eval.loss);
  eval.precision = ReadPrecision(options.Get("precision"), where + ".precision");
  return eval;
}

FeatureOptions ReadFeatureOptions(const Napi::Value& value, const std::string& fn) {
  FeatureOptions features;
  if (IsMissing(value)) return features;
  const std::string where = fn + ": options";
  Napi::Object options = ReadObject(value, where);
  features.precision = ReadPrecision(options.Get("precision"), where + ".precision");
  Napi::Value method = options.Get("method");
  if (!IsMissing(method)) {
    features.method = ReadString(method, where + ".method");
    if (features.method != "features" && features.method != "span_logits") {
      ThrowError(value.Env(), where + ".method must be 'features' or 'span_logits', got '" + features.method + "'");
    }
  }
  return features;
}

TrainOptions ReadTrainOptions(const Napi::Value& value, const std::string& fn) {
  TrainOptions step;
  if (IsMissing(value)) return step;
  const std::string where = fn + ": options";
  Napi::Object options = ReadObject(value, where);
  Napi::Env env = value.Env();
  ReadLossFields(options, where, step.loss);
  Napi::Value norm = options.Get("maxGradNorm");
  if (!IsMissing(norm)) {
    step.maxGradNorm = ReadNumber(norm, where + ".maxGradNorm");
    if (step.maxGradNorm < 0) ThrowError(env, where + ".maxGradNorm must be >= 0");
  }
  Napi::Value accumulate = options.Get("accumulateOnly");
  if (!IsMissing(accumulate)) step.accumulateOnly = ReadBool(accumulate, where + ".accumulateOnly");
  Napi::Value skip = options.Get("skipNonFinite");
  if (!IsMissing(skip)) step.skipNonFinite = ReadBool(skip, where + ".skipNonFinite");
  Napi::Value check = options.Get("checkGradients");
  if (!IsMissing(check)) step.checkGradients = ReadBool(check, where + ".checkGradients");
  Napi::Value average = options.Get("averageGradients");
  if (!IsMissing(average)) step.averageGradients = ReadBool(average, where + ".averageGradients");
  Napi::Value scale = options.Get("lossScale");
  if (!IsMissing(scale)) {
    step.accumulationWeight = ReadNumber(scale, where + ".lossScale");
    if (step.accumulationWeight <= 0) ThrowError(env, where + ".lossScale must be > 0");
  }
  step.precision = ReadPrecision(options.Get("precision"), where + ".precision");
  Napi::Value scaling = options.Get("gradScaling");
  if (!IsMissing(scaling)) step.gradScaling = ReadBool(scaling, where + ".gradScaling");
  return step;
}

// features, rows and labels of headTrainStep / headEvalStep, checked against each other.
BatchInput FeatureInput(const Napi::CallbackInfo& info, size_t first, const std::string& fn, bool requireLabels) {
  Napi::Env env = info.Env();
  BatchInput input;
  input.features = Tensor::Get(info[first], fn + ": features");
  if (input.features.dim() != 2 || !input.features.is_floating_point()) {
    std::ostringstream os;
    os << fn << ": features must be a floating-point [N, hidden] tensor, got "
       << DTypeName(input.features.scalar_type()) << " of shape " << input.features.sizes();
    ThrowError(env, os.str());
  }
  const int64_t n = input.features.size(0);
  Napi::Int32Array rows = ReadInt32Array(info[first + 1], fn + ": rows");
  if (rows.ElementLength() == 0) ThrowError(env, fn + ": rows must not be empty");
  for (size_t i = 0; i < rows.ElementLength(); ++i) {
    if (rows[i] < 0 || rows[i] >= n) {
      ThrowError(env, fn + ": rows[" + std::to_string(i) + "] = " + std::to_string(rows[i]) +
                          " is out of range for features with " + std::to_string(n) + " rows");
    }
  }
  input.size = static_cast<int64_t>(rows.ElementLength());
  input.rows = CopyInt32(rows, {input.size});

  Napi::Value labelsValue = info[first + 2];
  if (IsMissing(labelsValue)) {
    if (requireLabels)
      ThrowTypeError(env, fn + ": labels is required (an Int32Array of class ids, or a Float32Array of targets)");
    return input;
  }
  input.labels = ReadLabels(labelsValue, fn + ": labels", input.size, "rows.length");
  return input;
}

}  // namespace torch_bert
