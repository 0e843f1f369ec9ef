#include "train/train_step.h"

#include <c10/core/DeviceGuard.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/worker.h"
#include "module/lora_state.h"
#include "module/method_call.h"
#include "module/script_module.h"
#include "runtime/device_errors.h"
#include "tensor/tensor.h"
#include "train/fused_adamw.h"
#include "train/optimizer.h"
#include "train/precision.h"

namespace torch_bert {

namespace {

// A batch copied out of JS memory on the main thread, so the worker never reads JS-owned
// buffers (which may be detached or overwritten meanwhile).
struct Batch {
  int64_t size = 0;
  int64_t seqLen = 0;
  torch::Tensor inputIds;               // int64 [B, T], CPU
  torch::Tensor attentionMask;          // int64 [B, T], CPU
  std::optional<torch::Tensor> labels;  // int64 [B], CPU
};

torch::Tensor CopyInt32(const Napi::Int32Array& array, std::vector<int64_t> shape) {
  torch::Tensor t = torch::empty(shape, torch::kInt);
  if (array.ElementLength() > 0) std::memcpy(t.data_ptr(), array.Data(), array.ElementLength() * sizeof(int32_t));
  return t.to(torch::kLong);
}

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

  Napi::Value labelsValue = object.Get("labels");
  if (IsMissing(labelsValue)) {
    if (requireLabels) ThrowTypeError(env, fn + ": batch.labels is required (an Int32Array of class ids)");
    return batch;
  }
  Napi::Int32Array labels = ReadInt32Array(labelsValue, fn + ": batch.labels");
  if (labels.ElementLength() != static_cast<size_t>(batch.size)) {
    ThrowError(env, fn + ": batch.labels has " + std::to_string(labels.ElementLength()) +
                        " elements, expected batchSize = " + std::to_string(batch.size));
  }
  for (size_t i = 0; i < labels.ElementLength(); ++i) {
    // nll_loss would silently skip -100 (its ignore_index); a negative label is a bug upstream.
    if (labels[i] < 0) {
      ThrowError(env, fn + ": batch.labels[" + std::to_string(i) + "] is negative (" + std::to_string(labels[i]) + ")");
    }
  }
  batch.labels = CopyInt32(labels, {batch.size});
  return batch;
}

// ---- Options -------------------------------------------------------------------------------

struct LossOptions {
  std::optional<torch::Tensor> classWeights;  // float32 [C], CPU
  double labelSmoothing = 0;
  bool Plain() const { return !classWeights && labelSmoothing == 0; }
};

struct StepOptions {
  LossOptions loss;
  double maxGradNorm = 0;
  bool accumulateOnly = false;
  double lossScale = 1;
  bool skipNonFinite = false;
  // Before updating, list the optimizer's parameters that require a gradient but got none
  // (the trainer asks on its first applied step); any such parameter cancels the update.
  bool checkGradients = false;
  Precision precision = Precision::kFp32;
  // Dynamic loss scaling with the optimizer's GradScaler; default: on for fp16 only.
  std::optional<bool> gradScaling;
  bool Scaling() const { return gradScaling.value_or(precision == Precision::kFp16); }
};

// evalStep / headEvalStep: loss options and precision.
struct EvalOptions {
  LossOptions loss;
  Precision precision = Precision::kFp32;
};

void ReadLossFields(const Napi::Object& options, const std::string& where, LossOptions& loss) {
  Napi::Env env = options.Env();
  Napi::Value weights = options.Get("classWeights");
  if (!IsMissing(weights)) {
    const std::string what = where + ".classWeights";
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
    loss.classWeights = t;
  }
  Napi::Value smoothing = options.Get("labelSmoothing");
  if (!IsMissing(smoothing)) {
    loss.labelSmoothing = ReadNumber(smoothing, where + ".labelSmoothing");
    if (loss.labelSmoothing < 0 || loss.labelSmoothing >= 1)
      ThrowError(env, where + ".labelSmoothing must be in [0, 1)");
  }
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

// extractFeatures' options: { precision }.
Precision ReadFeatureOptions(const Napi::Value& value, const std::string& fn) {
  if (IsMissing(value)) return Precision::kFp32;
  const std::string where = fn + ": options";
  return ReadPrecision(ReadObject(value, where).Get("precision"), where + ".precision");
}

StepOptions ReadStepOptions(const Napi::Value& value, const std::string& fn) {
  StepOptions step;
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
  Napi::Value scale = options.Get("lossScale");
  if (!IsMissing(scale)) {
    step.lossScale = ReadNumber(scale, where + ".lossScale");
    if (step.lossScale <= 0) ThrowError(env, where + ".lossScale must be > 0");
  }
  step.precision = ReadPrecision(options.Get("precision"), where + ".precision");
  Napi::Value scaling = options.Get("gradScaling");
  if (!IsMissing(scaling)) step.gradScaling = ReadBool(scaling, where + ".gradScaling");
  return step;
}

// ---- Inputs --------------------------------------------------------------------------------

// What a step feeds the classifier: a token batch through `forward`, or rows of cached
// features through `head_forward`.
struct StepInput {
  int64_t size = 0;
  std::optional<Batch> tokens;
  torch::Tensor features;               // [N, H], any device
  torch::Tensor rows;                   // int64 [B], CPU
  std::optional<torch::Tensor> labels;  // int64 [B], CPU
};

StepInput TokenInput(Batch batch) {
  StepInput input;
  input.size = batch.size;
  input.labels = batch.labels;
  input.tokens = std::move(batch);
  return input;
}

// features, rows and labels of headTrainStep / headEvalStep, checked against each other.
StepInput FeatureInput(const Napi::CallbackInfo& info, size_t first, const std::string& fn, bool requireLabels) {
  Napi::Env env = info.Env();
  StepInput input;
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
    if (requireLabels) ThrowTypeError(env, fn + ": labels is required (an Int32Array of class ids)");
    return input;
  }
  Napi::Int32Array labels = ReadInt32Array(labelsValue, fn + ": labels");
  if (labels.ElementLength() != rows.ElementLength()) {
    ThrowError(env, fn + ": labels has " + std::to_string(labels.ElementLength()) + " elements, rows has " +
                        std::to_string(rows.ElementLength()));
  }
  for (size_t i = 0; i < labels.ElementLength(); ++i) {
    if (labels[i] < 0) {
      ThrowError(env, fn + ": labels[" + std::to_string(i) + "] is negative (" + std::to_string(labels[i]) + ")");
    }
  }
  input.labels = CopyInt32(labels, {input.size});
  return input;
}

// ---- Computation ---------------------------------------------------------------------------

torch::jit::Method ClassifierMethod(const torch::jit::Module& module, const std::string& name) {
  if (auto method = module.find_method(name)) return *method;
  throw std::runtime_error("the model has no '" + name + "' method (build it with buildClassifier)");
}

// The dtype of the module's floating-point parameters (float32 when it has none).
c10::ScalarType ParameterDType(const torch::jit::Module& module) {
  for (const auto& p : module.parameters()) {
    if (p.is_floating_point()) return p.scalar_type();
  }
  return torch::kFloat;
}

// Makes `device` the thread's current CUDA device (a worker thread starts on cuda:0), so that
// whatever uses the current device (streams of the non-blocking copies, factories in scripted
// code) uses the model's. A no-op for the CPU.
class ModelDeviceGuard {
 public:
  explicit ModelDeviceGuard(const c10::Device& device) {
    if (device.is_cuda()) guard_.reset_device(device);
  }

 private:
  c10::OptionalDeviceGuard guard_;
};

// A CPU tensor on `device`. To CUDA: through pinned (page-locked) memory with a non-blocking
// copy, which the caching host allocator keeps alive until the copy has run.
torch::Tensor ToDevice(const torch::Tensor& t, const c10::Device& device) {
  if (t.device() == device) return t;
  if (device.is_cuda() && t.is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

// Runs the classifier on the input and checks it returned [B, C] log-probabilities, as
// float32 whatever the precision. Adapters (if any) take effect for the duration of the call
// only (module/method_call.h); merged weights, where needed, are computed outside autocast, in float32.
torch::Tensor RunClassifier(ModuleState& state, const StepInput& input, const c10::Device& device, LoraMode mode,
                            Precision precision) {
  torch::jit::Module& module = state.module;
  c10::IValue out;
  if (input.tokens) {
    std::vector<c10::IValue> args{ToDevice(input.tokens->inputIds, device),
                                  ToDevice(input.tokens->attentionMask, device)};
    AutocastGuard autocast(precision, device);
    out = CallMethod(state, module.get_method("forward"), std::move(args), mode);
  } else {
    torch::jit::Method head = ClassifierMethod(module, "head_forward");
    if (module.hasattr("hidden_size") && module.attr("hidden_size").isInt() &&
        module.attr("hidden_size").toInt() != input.features.size(1)) {
      throw std::runtime_error("features have " + std::to_string(input.features.size(1)) +
                               " columns but the model's hidden size is " +
                               std::to_string(module.attr("hidden_size").toInt()));
    }
    torch::Tensor x = ToDevice(input.features.index_select(0, ToDevice(input.rows, input.features.device())), device)
                          .to(ParameterDType(module));
    // Only adapters that head_forward uses take part (never the encoder's).
    AutocastGuard autocast(precision, device);
    out = CallMethod(state, head, {x}, mode);
  }
  if (!out.isTensor()) throw std::runtime_error("the model's forward must return a tensor, got a " + out.tagKind());
  torch::Tensor logp = out.toTensor();
  if (logp.dim() != 2 || logp.size(0) != input.size) {
    std::ostringstream os;
    os << "the model's forward must return log-probabilities of shape [" << input.size << ", classes], got "
       << logp.sizes();
    throw std::runtime_error(os.str());
  }
  // Autocast's output: the loss and everything after it run in float32.
  const bool reduced = logp.scalar_type() == torch::kHalf || logp.scalar_type() == torch::kBFloat16;
  return reduced ? logp.to(torch::kFloat) : logp;
}

void CheckLabels(const torch::Tensor& labels, int64_t classes) {
  int64_t max = labels.max().item<int64_t>();
  if (max >= classes) {
    throw std::runtime_error("label " + std::to_string(max) + " is out of range for a model with " +
                             std::to_string(classes) + " classes");
  }
}

// Mean loss over the batch. Plain: NLL of the log-probabilities. With class weights or label
// smoothing: cross_entropy on the log-probabilities, which equals nn.CrossEntropyLoss(weight,
// label_smoothing) on the logits since log_softmax is idempotent.
torch::Tensor ComputeLoss(const torch::Tensor& logp, const torch::Tensor& labels, const LossOptions& options) {
  if (options.Plain()) return torch::nll_loss(logp, labels);
  namespace F = torch::nn::functional;
  auto ce = F::CrossEntropyFuncOptions().label_smoothing(options.labelSmoothing);
  if (options.classWeights) {
    if (options.classWeights->numel() != logp.size(1)) {
      throw std::runtime_error("classWeights has " + std::to_string(options.classWeights->numel()) +
                               " values but the model has " + std::to_string(logp.size(1)) + " classes");
    }
    ce.weight(options.classWeights->to(logp.device(), logp.scalar_type()));
  }
  return F::cross_entropy(logp, labels, ce);
}

// What the gradient step works on: the module's parameters and the adapters' tensors that
// hold a gradient.
std::vector<torch::Tensor> ParametersWithGrad(ModuleState& state) {
  std::vector<torch::Tensor> params;
  for (const auto& p : Parameters(state)) {
    if (p.grad().defined()) params.push_back(p);
  }
  for (const auto& p : LoraParameters(state)) {
    if (p.grad().defined()) params.push_back(p);
  }
  return params;
}

// The global L2 norm of the gradients, computed as clip_grad_norm_ does (NaN/Inf propagate).
torch::Tensor GradNormTensor(const std::vector<torch::Tensor>& params) {
  if (params.empty()) return torch::zeros({});
  std::vector<torch::Tensor> norms;
  norms.reserve(params.size());
  for (const auto& p : params) norms.push_back(p.grad().detach().norm(2));
  return norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
}

// clip_grad_norm_'s coefficient for a total norm, as libtorch computes it (a 0-dim tensor in
// the norm's dtype, at most 1; NaN for a NaN norm).
torch::Tensor ClipCoefficient(const torch::Tensor& norm, double maxNorm) {
  return torch::clamp(maxNorm / (norm + 1e-6), c10::nullopt, 1.0);
}

// Clipping (if maxNorm > 0) and the AdamW step, for a norm already taken. The fused step
// applies the coefficient as it reads each gradient; otherwise the gradients are scaled in
// place first, as clip_grad_norm_ does.
void ClipAndStep(torch::optim::AdamW& optimizer, bool fused, const std::vector<torch::Tensor>& params,
                 const torch::Tensor& norm, double maxNorm) {
  if (fused) {
    FusedAdamWStep(optimizer, maxNorm > 0 ? ClipCoefficient(norm, maxNorm).item<float>() : 1.0f, false);
    return;
  }
  if (maxNorm > 0) {
    torch::NoGradGuard noGrad;
    const torch::Tensor coefficient = ClipCoefficient(norm, maxNorm);
    for (const auto& p : params) p.grad().mul_(coefficient);
  }
  optimizer.step();
}

std::vector<int32_t> ToInt32(const torch::Tensor& t) {
  torch::Tensor cpu = t.to(torch::kCPU, torch::kInt).contiguous();
  const auto* data = static_cast<const int32_t*>(cpu.data_ptr());
  return std::vector<int32_t>(data, data + cpu.numel());
}

Napi::Int32Array ToJs(Napi::Env env, const std::vector<int32_t>& values) {
  Napi::Int32Array out = Napi::Int32Array::New(env, values.size());
  if (!values.empty()) std::memcpy(out.Data(), values.data(), values.size() * sizeof(int32_t));
  return out;
}

// Drops gradients when the step ends, so a failed step cannot leak stale gradients into the
// next one; an accumulate-only step that succeeds keeps them (Keep()).
class GradientReset {
 public:
  GradientReset(ModuleState& model, torch::optim::Optimizer& optimizer) : model_(model), optimizer_(optimizer) {}
  void Keep() { keep_ = true; }
  ~GradientReset() {
    if (keep_) return;
    try {
      ClearGradients(optimizer_);
      // Parameters that require grad but are not in the optimizer would otherwise
      // accumulate gradients forever.
      for (const auto& p : Parameters(model_)) {
        if (p.grad().defined()) {
          torch::Tensor param = p;
          param.mutable_grad() = torch::Tensor();
        }
      }
      for (auto& p : LoraParameters(model_)) {
        if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
      }
    } catch (...) {
    }
  }

 private:
  ModuleState& model_;
  torch::optim::Optimizer& optimizer_;
  bool keep_ = false;
};

// trainStep and headTrainStep: forward in the model's current mode, loss, backward, then
// (unless accumulating) clipping, optimizer.step() and zeroed gradients.
class TrainStepWorker : public PromiseWorker {
 public:
  TrainStepWorker(Napi::Env env, ModuleStatePtr model, OptimizerStatePtr optimizer, StepInput input,
                  StepOptions options)
      : PromiseWorker(env),
        model_(std::move(model)),
        optimizer_(std::move(optimizer)),
        input_(std::move(input)),
        options_(std::move(options)) {}

 protected:
  void Run() override {
    // Always model, then optimizer: the only place both are held, so no lock-order cycle.
    std::lock_guard<std::mutex> modelLock(*model_->mutex);
    std::lock_guard<std::mutex> optimizerLock(optimizer_->mutex);
    const c10::Device device = ModuleDevice(*model_);
    WithDeviceContext(device, input_.size, [&] {
      ModelDeviceGuard guard(device);
      Step(device);
    });
  }

  void Step(const c10::Device& device) {
    CheckPrecision(options_.precision, device);
    c10::AutoGradMode grad(true);
    GradientReset reset(*model_, *optimizer_->optimizer);
    GradScaler& scaler = optimizer_->scaler;
    const bool scaling = options_.Scaling();
    if (scaling) gradScale_ = scaler.scale;

    torch::Tensor logp = RunClassifier(*model_, input_, device, LoraMode::kTrain, options_.precision);
    CheckLabels(*input_.labels, logp.size(1));
    torch::Tensor labels = ToDevice(*input_.labels, device);
    torch::Tensor loss = ComputeLoss(logp, labels, options_.loss);
    if (options_.skipNonFinite && !std::isfinite(loss.item<double>())) {
      // A NaN/Inf loss never reaches the gradients: the batch is dropped, and gradients
      // accumulated by earlier batches of the window are kept.
      skipped_ = true;
      reset.Keep();
    } else {
      const double factor = options_.lossScale * (scaling ? scaler.scale : 1.0);
      if (factor == 1) {
        loss.backward();
      } else {
        (loss * factor).backward();
      }
      if (options_.accumulateOnly) {
        reset.Keep();
      } else if (options_.checkGradients && FindMissingGradients()) {
        // No update: the reset drops the gradients; the caller reports the parameters.
      } else {
        std::vector<torch::Tensor> params = ParametersWithGrad(*model_);
        if (scaling && scaler.Unscale(params)) {
          // Overflow: no step, the reset drops the gradients, and the scale backs off. The
          // loss itself is fine (reported), the gradient norm is meaningless (null).
          overflow_ = true;
          scaler.Update(true);
        } else {
          // The norm before clipping; NaN or Inf are reported, not thrown (clipping then scales
          // by NaN, as PyTorch's clip_grad_norm_ does with error_if_nonfinite=False).
          torch::optim::AdamW& adamw = *optimizer_->optimizer;
          const bool fused = FusedAdamWApplies(adamw);
          if (options_.skipNonFinite || options_.maxGradNorm > 0 || !fused) {
            // The norm comes first: it decides whether to step, or how much to clip.
            const torch::Tensor norm = GradNormTensor(params);
            gradNorm_ = norm.item<double>();
            if (options_.skipNonFinite && !std::isfinite(*gradNorm_)) {
              skipped_ = true;  // no step; the reset drops the poisoned gradients
            } else {
              ClipAndStep(adamw, fused, params, norm, options_.maxGradNorm);
            }
          } else {
            // Nothing to clip: the norm is summed in the optimizer's own pass over the gradients.
            gradNorm_ = FusedAdamWStep(adamw, 1.0f, true);
          }
          if (scaling) scaler.Update(false);
        }
      }
    }

    torch::NoGradGuard noGrad;
    torch::Tensor predictions = logp.argmax(1);
    loss_ = loss.item<double>();
    correct_ = predictions.eq(labels).sum().item<int64_t>();
    predictions_ = ToInt32(predictions);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", Napi::Number::New(env, loss_));
    out.Set("gradNorm", gradNorm_ ? Napi::Value(Napi::Number::New(env, *gradNorm_)) : env.Null());
    out.Set("skipped", Napi::Boolean::New(env, skipped_));
    out.Set("overflow", Napi::Boolean::New(env, overflow_));
    out.Set("gradScale", gradScale_ ? Napi::Value(Napi::Number::New(env, *gradScale_)) : env.Null());
    out.Set("correct", Napi::Number::New(env, static_cast<double>(correct_)));
    out.Set("predictions", ToJs(env, predictions_));
    if (options_.checkGradients) {
      Napi::Array missing = Napi::Array::New(env, missingGradients_.size());
      for (size_t i = 0; i < missingGradients_.size(); ++i) {
        Napi::Array at = Napi::Array::New(env, 2);
        at.Set(0u, Napi::Number::New(env, static_cast<double>(missingGradients_[i].first)));
        at.Set(1u, Napi::Number::New(env, static_cast<double>(missingGradients_[i].second)));
        missing.Set(static_cast<uint32_t>(i), at);
      }
      out.Set("missingGradients", missing);
    } else {
      out.Set("missingGradients", env.Null());
    }
    return out;
  }

 private:
  // [group, index] of each optimizer parameter that requires a gradient but has none after
  // backward: the loss does not reach it, so AdamW would silently never train it.
  bool FindMissingGradients() {
    const auto& groups = optimizer_->optimizer->param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& params = groups[g].params();
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].requires_grad() && !params[i].grad().defined()) missingGradients_.emplace_back(g, i);
      }
    }
    return !missingGradients_.empty();
  }

  ModuleStatePtr model_;
  OptimizerStatePtr optimizer_;
  StepInput input_;
  StepOptions options_;
  double loss_ = 0;
  std::optional<double> gradNorm_;
  bool skipped_ = false;
  bool overflow_ = false;
  std::optional<double> gradScale_;
  int64_t correct_ = 0;
  std::vector<int32_t> predictions_;
  std::vector<std::pair<size_t, size_t>> missingGradients_;
};

// evalStep and headEvalStep: eval mode, no autograd.
class EvalStepWorker : public PromiseWorker {
 public:
  EvalStepWorker(Napi::Env env, ModuleStatePtr model, StepInput input, EvalOptions options)
      : PromiseWorker(env), model_(std::move(model)), input_(std::move(input)), options_(std::move(options)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(*model_->mutex);
    const c10::Device device = ModuleDevice(*model_);
    WithDeviceContext(device, input_.size, [&] {
      ModelDeviceGuard guard(device);
      Evaluate(device);
    });
  }

  void Evaluate(const c10::Device& device) {
    CheckPrecision(options_.precision, device);
    // no_grad, not InferenceMode: once TorchScript's profiling executor has specialised a
    // graph for training it contains DifferentiableGraph nodes, which save their inputs for
    // backward unconditionally and fail on inference tensors ("Inference tensors cannot be
    // saved for backward"), in Python as in C++.
    torch::NoGradGuard noGrad;
    TrainingModeSnapshot restore(Modules(*model_));
    for (const auto& m : Modules(*model_)) SetTrainingFlag(m, false);

    torch::Tensor logp = RunClassifier(*model_, input_, device, LoraMode::kForward, options_.precision);
    classes_ = logp.size(1);
    torch::Tensor predictions = logp.argmax(1);
    if (input_.labels) {
      CheckLabels(*input_.labels, classes_);
      torch::Tensor labels = ToDevice(*input_.labels, device);
      loss_ = ComputeLoss(logp, labels, options_.loss).item<double>();
      correct_ = predictions.eq(labels).sum().item<int64_t>();
    }
    predictions_ = ToInt32(predictions);
    // softmax rather than exp: right whether forward returns log-probabilities or logits.
    torch::Tensor probabilities = torch::softmax(logp.to(torch::kFloat), 1).to(torch::kCPU).contiguous();
    const auto* data = static_cast<const float*>(probabilities.data_ptr());
    probabilities_.assign(data, data + probabilities.numel());
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", loss_ ? Napi::Value(Napi::Number::New(env, *loss_)) : env.Null());
    out.Set("correct", correct_ ? Napi::Value(Napi::Number::New(env, static_cast<double>(*correct_))) : env.Null());
    out.Set("predictions", ToJs(env, predictions_));
    Napi::Float32Array probabilities = Napi::Float32Array::New(env, probabilities_.size());
    if (!probabilities_.empty()) {
      std::memcpy(probabilities.Data(), probabilities_.data(), probabilities_.size() * sizeof(float));
    }
    out.Set("probabilities", probabilities);
    return out;
  }

 private:
  ModuleStatePtr model_;
  StepInput input_;
  EvalOptions options_;
  int64_t classes_ = 0;
  std::optional<double> loss_;
  std::optional<int64_t> correct_;
  std::vector<int32_t> predictions_;
  std::vector<float> probabilities_;
};

// extractFeatures: the classifier's `features` in eval mode without autograd.
class FeaturesWorker : public PromiseWorker {
 public:
  FeaturesWorker(Napi::Env env, ModuleStatePtr model, Batch batch, Precision precision)
      : PromiseWorker(env), model_(std::move(model)), batch_(std::move(batch)), precision_(precision) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(*model_->mutex);
    const c10::Device device = ModuleDevice(*model_);
    WithDeviceContext(device, batch_.size, [&] {
      ModelDeviceGuard guard(device);
      Extract(device);
    });
  }

  void Extract(const c10::Device& device) {
    CheckPrecision(precision_, device);
    torch::jit::Module& module = model_->module;
    torch::NoGradGuard noGrad;  // not InferenceMode: see EvalStepWorker
    TrainingModeSnapshot restore(Modules(*model_));
    for (const auto& m : Modules(*model_)) SetTrainingFlag(m, false);

    torch::jit::Method features = ClassifierMethod(module, "features");
    std::vector<c10::IValue> args{ToDevice(batch_.inputIds, device), ToDevice(batch_.attentionMask, device)};
    c10::IValue out;
    {
      AutocastGuard autocast(precision_, device);
      out = CallMethod(*model_, features, std::move(args), LoraMode::kForward);
    }
    if (!out.isTensor() || out.toTensor().dim() != 2 || out.toTensor().size(0) != batch_.size) {
      std::ostringstream os;
      os << "the model's features must return a [" << batch_.size << ", hidden] tensor, got ";
      if (out.isTensor())
        os << "shape " << out.toTensor().sizes();
      else
        os << "a " << out.tagKind();
      throw std::runtime_error(os.str());
    }
    features_ = out.toTensor().to(torch::kFloat).contiguous();
  }

  Napi::Value Result(Napi::Env env) override { return Tensor::Wrap(env, features_); }

 private:
  ModuleStatePtr model_;
  Batch batch_;
  Precision precision_;
  torch::Tensor features_;
};

}  // namespace

Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "trainStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    OptimizerStatePtr optimizer = AdamW::Get(info[1], fn + ": optimizer");
    Batch batch = ReadBatch(info[2], fn, /*requireLabels=*/true);
    StepOptions options = ReadStepOptions(info[3], fn);
    return PromiseWorker::Start(new TrainStepWorker(env, std::move(model), std::move(optimizer),
                                                    TokenInput(std::move(batch)), std::move(options)));
  });
}

Napi::Value EvalStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "evalStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    Batch batch = ReadBatch(info[1], fn, /*requireLabels=*/false);
    EvalOptions options = ReadEvalOptions(info[2], fn);
    return PromiseWorker::Start(
        new EvalStepWorker(env, std::move(model), TokenInput(std::move(batch)), std::move(options)));
  });
}

Napi::Value ExtractFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "extractFeatures";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    Batch batch = ReadBatch(info[1], fn, /*requireLabels=*/false);
    Precision precision = ReadFeatureOptions(info[2], fn);
    return PromiseWorker::Start(new FeaturesWorker(env, std::move(model), std::move(batch), precision));
  });
}

Napi::Value HeadTrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "headTrainStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    OptimizerStatePtr optimizer = AdamW::Get(info[1], fn + ": optimizer");
    StepInput input = FeatureInput(info, 2, fn, /*requireLabels=*/true);
    StepOptions options = ReadStepOptions(info[5], fn);
    return PromiseWorker::Start(
        new TrainStepWorker(env, std::move(model), std::move(optimizer), std::move(input), std::move(options)));
  });
}

Napi::Value HeadEvalStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "headEvalStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    StepInput input = FeatureInput(info, 1, fn, /*requireLabels=*/false);
    EvalOptions options = ReadEvalOptions(info[4], fn);
    return PromiseWorker::Start(new EvalStepWorker(env, std::move(model), std::move(input), std::move(options)));
  });
}

}  // namespace torch_bert
