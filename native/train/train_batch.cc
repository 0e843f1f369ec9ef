#include "train/train_batch.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "addon/errors.h"
#include "distributed/gradient_reducer.h"
#include "module/method_call.h"
#include "module/problem_type.h"
#include "module/script_module.h"
#include "tensor/tensor.h"
#include "train/batch.h"
#include "train/batch_arguments.h"
#include "train/batch_worker.h"
#include "train/forward_backward.h"
#include "train/optimizer.h"
#include "train/update.h"

namespace torch_bert {

namespace {

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

// Whether `module` is buildClassifier's token classifier (module/classifier.h).
bool IsTokenClassifier(const torch::jit::Module& module) {
  return module.hasattr("head_kind") && module.attr("head_kind").isString() &&
         module.attr("head_kind").toStringRef() == "token-classification";
}

// trainStep and headTrainStep: forward in the model's current mode, loss, backward, then
// (unless accumulating) the update: unscaling, norm, clipping, the optimizer step
// (train/update.h); gradients are dropped unless the batch keeps them for its window.
class TrainBatchWorker : public BatchWorker {
 public:
  TrainBatchWorker(Napi::Env env, ModuleStatePtr model, OptimizerStatePtr optimizer, BatchInput input,
                   TrainOptions options)
      : BatchWorker(env, std::move(model), input.size, options.precision, &optimizer->mutex),
        optimizer_(std::move(optimizer)),
        input_(std::move(input)),
        options_(std::move(options)) {}

 protected:
  void Compute(const c10::Device& device) override {
    c10::AutoGradMode grad(true);
    torch::optim::AdamW& adamw = *optimizer_->optimizer;
    GradientReset reset(*model_, adamw);
    GradScaler* scaler = options_.Scaling() ? &optimizer_->scaler : nullptr;
    if (scaler) scalerScale_ = scaler->scale;

    // The loss is multiplied by the accumulation weight and the grad scaler's scale (train/batch.h).
    const double lossMultiplier = options_.accumulationWeight * (scaler ? scaler->scale : 1.0);
    // Data-parallel: the window's last batch averages the gradients while backward runs, through
    // the trainee's reducer (built on its first averaged step).
    DataParallelStep parallel;
    parallel.agree = options_.averageGradients;
    if (options_.averageGradients && !options_.accumulateOnly) {
      if (!optimizer_->reducer) optimizer_->reducer = std::make_shared<GradientReducer>(TrainableParameters(adamw));
      parallel.reducer = optimizer_->reducer.get();
    }
    ForwardBackwardResult batch;
    try {
      batch = ForwardBackward(*model_, input_, device, options_.precision, options_.loss, lossMultiplier,
                              options_.skipNonFinite, parallel);
    } catch (...) {
      // A backward that failed half-way leaves the reducer mid-step: a later step builds a new one.
      if (parallel.reducer) optimizer_->reducer.reset();
      throw;
    }
    if (!batch.averaged) optimizer_->reducer.reset();
    if (batch.nonFiniteLoss) {
      // A NaN/Inf loss never reaches the gradients: the batch is dropped, and gradients
      // accumulated by earlier batches of the window are kept.
      skipped_ = true;
      reset.Keep();
    } else if (options_.accumulateOnly) {
      reset.Keep();
    } else {
      if (options_.checkGradients || !batch.averaged) missingGradients_ = MissingGradients(adamw);
      if (!batch.averaged && (!options_.checkGradients || missingGradients_.empty())) {
        throw std::runtime_error(
            "data-parallel: backward left trainable parameters without a gradient, so their gradients were never "
            "all-reduced (parameters the loss does not reach must be frozen)");
      }
      if (missingGradients_.empty()) {
        UpdateResult update = ApplyUpdate(*model_, adamw, scaler, {options_.maxGradNorm, options_.skipNonFinite});
        gradNorm_ = update.gradNorm;
        skipped_ = update.skipped;
        overflow_ = update.overflow;
      }
      // Else no update: the reset drops the gradients; the caller reports the parameters.
    }

    torch::NoGradGuard noGrad;
    // Data-parallel: a non-finite loss on any rank is every rank's (the global batch's).
    loss_ = batch.groupLoss.value_or(batch.loss.item<double>());
    // A class per row is single-label classification's; the others predict no one class.
    if (batch.problem == ProblemType::kSingleLabel) {
      torch::Tensor predictions = batch.outputs.argmax(1);
      correct_ = predictions.eq(batch.targets).sum().item<int64_t>();
      predictions_ = ToInt32(predictions);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", Napi::Number::New(env, loss_));
    out.Set("gradNorm", gradNorm_ ? Napi::Value(Napi::Number::New(env, *gradNorm_)) : env.Null());
    out.Set("skipped", Napi::Boolean::New(env, skipped_));
    out.Set("overflow", Napi::Boolean::New(env, overflow_));
    // JS `gradScale`: the grad scaler's scale this batch's loss was multiplied by.
    out.Set("gradScale", scalerScale_ ? Napi::Value(Napi::Number::New(env, *scalerScale_)) : env.Null());
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
  OptimizerStatePtr optimizer_;
  BatchInput input_;
  TrainOptions options_;
  double loss_ = 0;
  std::optional<double> gradNorm_;
  bool skipped_ = false;
  bool overflow_ = false;
  std::optional<double> scalerScale_;
  int64_t correct_ = 0;
  std::vector<int32_t> predictions_;
  // [group, index] of the optimizer's parameters without a gradient (checkGradients).
  std::vector<std::pair<size_t, size_t>> missingGradients_;
};

// evalStep and headEvalStep: eval mode, no autograd.
class EvalBatchWorker : public BatchWorker {
 public:
  EvalBatchWorker(Napi::Env env, ModuleStatePtr model, BatchInput input, EvalOptions options)
      : BatchWorker(env, std::move(model), input.size, options.precision),
        input_(std::move(input)),
        options_(std::move(options)) {}

 protected:
  void Compute(const c10::Device& device) override {
    // no_grad, not InferenceMode: once TorchScript's profiling executor has specialised a
    // graph for training it contains DifferentiableGraph nodes, which save their inputs for
    // backward unconditionally and fail on inference tensors ("Inference tensors cannot be
    // saved for backward"), in Python as in C++.
    torch::NoGradGuard noGrad;
    TrainingModeSnapshot restore(Modules(*model_));
    for (const auto& m : Modules(*model_)) SetTrainingFlag(m, false);

    const ProblemType problem = ProblemTypeOf(model_->module);
    torch::Tensor outputs = Forward(*model_, input_, device, LoraMode::kForward, options_.precision);
    if (input_.labels) {
      torch::Tensor targets = ToDevice(LossTargets(*input_.labels, outputs, problem), device);
      loss_ = ComputeLoss(outputs, targets, options_.loss, problem).item<double>();
      if (problem == ProblemType::kSingleLabel) correct_ = outputs.argmax(1).eq(targets).sum().item<int64_t>();
    }
    if (problem == ProblemType::kSingleLabel) predictions_ = ToInt32(outputs.argmax(1));
    // A masked-language model's rows are vocabulary-wide: only the loss and predictions return (a
    // token classifier's, a row per word, return their probabilities).
    if (input_.tokens && input_.tokens->positions && !IsTokenClassifier(model_->module)) return;
    // Single-label: softmax rather than exp, right whether forward returns log-probabilities or
    // logits. Multi-label: a sigmoid per class. Regression: the values as they are.
    torch::Tensor scores = problem == ProblemType::kSingleLabel  ? torch::softmax(outputs, 1)
                           : problem == ProblemType::kMultiLabel ? torch::sigmoid(outputs)
                                                                 : outputs;
    scores = scores.to(torch::kCPU, torch::kFloat).contiguous();
    const auto* data = static_cast<const float*>(scores.data_ptr());
    (problem == ProblemType::kRegression ? values_ : probabilities_).assign(data, data + scores.numel());
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
    Napi::Float32Array values = Napi::Float32Array::New(env, values_.size());
    if (!values_.empty()) std::memcpy(values.Data(), values_.data(), values_.size() * sizeof(float));
    out.Set("values", values);
    return out;
  }

 private:
  BatchInput input_;
  EvalOptions options_;
  std::optional<double> loss_;
  std::optional<int64_t> correct_;
  std::vector<int32_t> predictions_;
  std::vector<float> probabilities_;
  std::vector<float> values_;
};

// extractFeatures: the classifier's `features` in eval mode without autograd.
class FeaturesWorker : public BatchWorker {
 public:
  FeaturesWorker(Napi::Env env, ModuleStatePtr model, Batch batch, FeatureOptions options)
      : BatchWorker(env, std::move(model), batch.size, options.precision),
        batch_(std::move(batch)),
        method_(std::move(options.method)) {}

 protected:
  void Compute(const c10::Device& device) override {
    torch::jit::Module& module = model_->module;
    torch::NoGradGuard noGrad;  // not InferenceMode: see EvalBatchWorker
    TrainingModeSnapshot restore(Modules(*model_));
    for (const auto& m : Modules(*model_)) SetTrainingFlag(m, false);

    TokenCall call = TokenMethodCall(module, method_, batch_, device);
    c10::IValue out;
    {
      AutocastGuard autocast(precision_, device);
      out = CallMethod(*model_, call.method, std::move(call.inputs), LoraMode::kForward);
    }
    // features: [B, hidden]; a question-answering model's span_logits: [B, T, 2].
    const bool perToken = method_ == "span_logits";
    if (!out.isTensor() || out.toTensor().dim() != (perToken ? 3 : 2) || out.toTensor().size(0) != batch_.size) {
      std::ostringstream os;
      os << "the model's " << method_ << " must return a [" << batch_.size
         << (perToken ? ", tokens, width" : ", hidden") << "] tensor, got ";
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
  Batch batch_;
  std::string method_;
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
    TrainOptions options = ReadTrainOptions(info[3], fn);
    return PromiseWorker::Start(new TrainBatchWorker(env, std::move(model), std::move(optimizer),
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
        new EvalBatchWorker(env, std::move(model), TokenInput(std::move(batch)), std::move(options)));
  });
}

Napi::Value ExtractFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "extractFeatures";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    Batch batch = ReadBatch(info[1], fn, /*requireLabels=*/false);
    FeatureOptions options = ReadFeatureOptions(info[2], fn);
    return PromiseWorker::Start(new FeaturesWorker(env, std::move(model), std::move(batch), std::move(options)));
  });
}

Napi::Value HeadTrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "headTrainStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    OptimizerStatePtr optimizer = AdamW::Get(info[1], fn + ": optimizer");
    BatchInput input = FeatureInput(info, 2, fn, /*requireLabels=*/true);
    TrainOptions options = ReadTrainOptions(info[5], fn);
    return PromiseWorker::Start(
        new TrainBatchWorker(env, std::move(model), std::move(optimizer), std::move(input), std::move(options)));
  });
}

Napi::Value HeadEvalStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "headEvalStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    BatchInput input = FeatureInput(info, 1, fn, /*requireLabels=*/false);
    EvalOptions options = ReadEvalOptions(info[4], fn);
    return PromiseWorker::Start(new EvalBatchWorker(env, std::move(model), std::move(input), std::move(options)));
  });
}

}  // namespace torch_bert
