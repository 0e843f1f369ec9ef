#include "train_step.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cstring>
#include <optional>
#include <sstream>

#include "errors.h"
#include "optimizer.h"
#include "script_module.h"
#include "worker.h"

namespace torch_bert {

namespace {

// A batch copied out of JS memory on the main thread, so the worker never reads JS-owned
// buffers (which may be detached or overwritten meanwhile).
struct Batch {
  int64_t size = 0;
  int64_t seqLen = 0;
  torch::Tensor inputIds;       // int64 [B, T], CPU
  torch::Tensor attentionMask;  // int64 [B, T], CPU
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

// Runs forward(input_ids, attention_mask) and checks it returned [B, C] log-probabilities.
torch::Tensor Forward(torch::jit::Module& module, const Batch& batch, const c10::Device& device) {
  c10::IValue out = module.forward({batch.inputIds.to(device), batch.attentionMask.to(device)});
  if (!out.isTensor()) throw std::runtime_error("the model's forward must return a tensor, got a " + out.tagKind());
  torch::Tensor logp = out.toTensor();
  if (logp.dim() != 2 || logp.size(0) != batch.size) {
    std::ostringstream os;
    os << "the model's forward must return log-probabilities of shape [" << batch.size << ", classes], got "
       << logp.sizes();
    throw std::runtime_error(os.str());
  }
  return logp;
}

void CheckLabels(const torch::Tensor& labels, int64_t classes) {
  int64_t max = labels.max().item<int64_t>();
  if (max >= classes) {
    throw std::runtime_error("label " + std::to_string(max) + " is out of range for a model with " +
                             std::to_string(classes) + " classes");
  }
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

// Drops gradients however the step ends, so a failed step cannot leak stale gradients into
// the next one.
class GradientReset {
 public:
  GradientReset(torch::jit::Module& module, torch::optim::Optimizer& optimizer)
      : module_(module), optimizer_(optimizer) {}
  ~GradientReset() {
    try {
      ClearGradients(optimizer_);
      // Parameters that require grad but are not in the optimizer would otherwise
      // accumulate gradients forever.
      for (const auto& p : module_.parameters()) {
        if (p.grad().defined()) {
          torch::Tensor param = p;
          param.mutable_grad() = torch::Tensor();
        }
      }
    } catch (...) {
    }
  }

 private:
  torch::jit::Module& module_;
  torch::optim::Optimizer& optimizer_;
};

class TrainStepWorker : public PromiseWorker {
 public:
  TrainStepWorker(Napi::Env env, ModuleStatePtr model, OptimizerStatePtr optimizer, Batch batch, double maxGradNorm)
      : PromiseWorker(env),
        model_(std::move(model)),
        optimizer_(std::move(optimizer)),
        batch_(std::move(batch)),
        maxGradNorm_(maxGradNorm) {}

 protected:
  void Run() override {
    // Always model, then optimizer: the only place both are held, so no lock-order cycle.
    std::lock_guard<std::mutex> modelLock(*model_->mutex);
    std::lock_guard<std::mutex> optimizerLock(optimizer_->mutex);
    c10::AutoGradMode grad(true);
    torch::jit::Module& module = model_->module;
    GradientReset reset(module, *optimizer_->optimizer);

    const c10::Device device = ModuleDevice(*model_);
    torch::Tensor logp = Forward(module, batch_, device);
    CheckLabels(*batch_.labels, logp.size(1));
    torch::Tensor labels = batch_.labels->to(device);
    torch::Tensor loss = torch::nll_loss(logp, labels);
    loss.backward();
    if (maxGradNorm_ > 0) {
      std::vector<torch::Tensor> params;
      for (const auto& p : module.parameters()) {
        if (p.grad().defined()) params.push_back(p);
      }
      torch::nn::utils::clip_grad_norm_(params, maxGradNorm_);
    }
    optimizer_->optimizer->step();

    torch::NoGradGuard noGrad;
    torch::Tensor predictions = logp.argmax(1);
    loss_ = loss.item<double>();
    correct_ = predictions.eq(labels).sum().item<int64_t>();
    predictions_ = ToInt32(predictions);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", Napi::Number::New(env, loss_));
    out.Set("correct", Napi::Number::New(env, static_cast<double>(correct_)));
    out.Set("predictions", ToJs(env, predictions_));
    return out;
  }

 private:
  ModuleStatePtr model_;
  OptimizerStatePtr optimizer_;
  Batch batch_;
  double maxGradNorm_;
  double loss_ = 0;
  int64_t correct_ = 0;
  std::vector<int32_t> predictions_;
};

class EvalStepWorker : public PromiseWorker {
 public:
  EvalStepWorker(Napi::Env env, ModuleStatePtr model, Batch batch)
      : PromiseWorker(env), model_(std::move(model)), batch_(std::move(batch)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(*model_->mutex);
    torch::jit::Module& module = model_->module;
    // no_grad, not InferenceMode: once TorchScript's profiling executor has specialised a
    // graph for training it contains DifferentiableGraph nodes, which save their inputs for
    // backward unconditionally and fail on inference tensors ("Inference tensors cannot be
    // saved for backward"), in Python as in C++.
    torch::NoGradGuard noGrad;
    TrainingModeSnapshot restore(module);
    for (const auto& m : module.modules()) SetTrainingFlag(m, false);

    const c10::Device device = ModuleDevice(*model_);
    torch::Tensor logp = Forward(module, batch_, device);
    classes_ = logp.size(1);
    torch::Tensor predictions = logp.argmax(1);
    if (batch_.labels) {
      CheckLabels(*batch_.labels, classes_);
      torch::Tensor labels = batch_.labels->to(device);
      loss_ = torch::nll_loss(logp, labels).item<double>();
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
  Batch batch_;
  int64_t classes_ = 0;
  std::optional<double> loss_;
  std::optional<int64_t> correct_;
  std::vector<int32_t> predictions_;
  std::vector<float> probabilities_;
};

}  // namespace

Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "trainStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    OptimizerStatePtr optimizer = AdamW::Get(info[1], fn + ": optimizer");
    Batch batch = ReadBatch(info[2], fn, /*requireLabels=*/true);
    double maxGradNorm = 0;
    if (!IsMissing(info[3])) {
      Napi::Object options = ReadObject(info[3], fn + ": options");
      Napi::Value norm = options.Get("maxGradNorm");
      if (!IsMissing(norm)) {
        maxGradNorm = ReadNumber(norm, fn + ": options.maxGradNorm");
        if (maxGradNorm < 0) ThrowError(env, fn + ": options.maxGradNorm must be >= 0");
      }
    }
    return PromiseWorker::Start(
        new TrainStepWorker(env, std::move(model), std::move(optimizer), std::move(batch), maxGradNorm));
  });
}

Napi::Value EvalStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "evalStep";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    Batch batch = ReadBatch(info[1], fn, /*requireLabels=*/false);
    return PromiseWorker::Start(new EvalStepWorker(env, std::move(model), std::move(batch)));
  });
}

}  // namespace torch_bert
