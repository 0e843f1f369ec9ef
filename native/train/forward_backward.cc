#include "train/forward_backward.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "module/method_call.h"

namespace torch_bert {

namespace {

// The dtype of the module's floating-point parameters (float32 when it has none).
c10::ScalarType ParameterDType(const torch::jit::Module& module) {
  for (const auto& p : module.parameters()) {
    if (p.is_floating_point()) return p.scalar_type();
  }
  return torch::kFloat;
}

}  // namespace

torch::jit::Method ClassifierMethod(const torch::jit::Module& module, const std::string& name) {
  if (auto method = module.find_method(name)) return *method;
  throw std::runtime_error("the model has no '" + name + "' method (build it with buildClassifier)");
}

torch::Tensor ToDevice(const torch::Tensor& t, const c10::Device& device) {
  if (t.device() == device) return t;
  if (device.is_cuda() && t.is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

TokenCall TokenMethodCall(const torch::jit::Module& module, const std::string& name, const Batch& batch,
                          const c10::Device& device) {
  std::vector<c10::IValue> inputs{ToDevice(batch.inputIds, device), ToDevice(batch.attentionMask, device)};
  if (!batch.tokenTypeIds) return {ClassifierMethod(module, name), std::move(inputs)};
  const std::string typed = name + "_token_types";
  auto method = module.find_method(typed);
  if (!method) {
    throw std::runtime_error("the batch has token type ids (text pairs), but the model has no '" + typed +
                             "' method: its encoder's forward takes no token_type_ids, or it was saved before text "
                             "pairs were supported");
  }
  inputs.emplace_back(ToDevice(*batch.tokenTypeIds, device));
  return {*method, std::move(inputs)};
}

// Runs the classifier on the input and checks it returned [B, C] log-probabilities, as
// float32 whatever the precision. Adapters (if any) take effect for the duration of the call
// only (module/lora_state.h); merged weights, where needed, are computed outside autocast, in float32.
torch::Tensor Forward(ModuleState& state, const BatchInput& input, const c10::Device& device, LoraMode mode,
                      Precision precision) {
  torch::jit::Module& module = state.module;
  c10::IValue out;
  int64_t rows = input.size;
  if (input.tokens) {
    TokenCall call = TokenMethodCall(module, "forward", *input.tokens, device);
    // Masked-language modelling (module/mlm_model.h): one output row per masked token.
    if (input.tokens->maskedPositions) {
      call.inputs.emplace_back(ToDevice(*input.tokens->maskedPositions, device));
      rows = input.tokens->maskedPositions->size(0);
    }
    AutocastGuard autocast(precision, device);
    out = CallMethod(state, call.method, std::move(call.inputs), mode);
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
  if (logp.dim() != 2 || logp.size(0) != rows) {
    std::ostringstream os;
    os << "the model's forward must return log-probabilities of shape [" << rows << ", classes], got " << logp.sizes();
    throw std::runtime_error(os.str());
  }
  // Autocast's output: the loss and everything after it run in float32.
  const bool reduced = logp.scalar_type() == torch::kHalf || logp.scalar_type() == torch::kBFloat16;
  return reduced ? logp.to(torch::kFloat) : logp;
}

void CheckLabels(const torch::Tensor& labels, int64_t classes) {
  if (labels.numel() == 0) return;
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
  // A masked-language batch in which no token was chosen: nothing to predict, a zero loss (the
  // mean over no tokens would be NaN and stop the run), gradients zero but defined.
  if (logp.size(0) == 0) return logp.sum() * 0;
  if (options.Plain()) return torch::nll_loss(logp, labels);
  namespace F = torch::nn::functional;
  auto ce = F::CrossEntropyFuncOptions().label_smoothing(options.labelSmoothing);
  if (options.classWeights) {
    if (options.classWeights->numel() != logp.size(1)) {
      throw std::runtime_error("classWeights has " + std::to_string(options.classWeights->numel()) +
                               " values but the model has " + std::to_string(logp.size(1)) + " classes");
    }
    torch::Tensor weights = options.classWeights->to(logp.device(), logp.scalar_type());
    // A batch whose rows all weigh zero has nothing to learn: a zero loss, as for no masked token
    // above (the weighted mean would be 0/0). Data-parallel, one rank's share can be such a batch
    // while the global batch is not: the rank then adds nothing to the averaged gradient.
    if (weights.index_select(0, labels).sum().item<double>() == 0) return logp.sum() * 0;
    ce.weight(weights);
  }
  return F::cross_entropy(logp, labels, ce);
}

ForwardBackwardResult ForwardBackward(ModuleState& state, const BatchInput& input, const c10::Device& device,
                                      Precision precision, const LossOptions& loss, double lossMultiplier,
                                      bool skipNonFinite, const DataParallelStep& parallel) {
  ForwardBackwardResult out;
  out.logp = Forward(state, input, device, LoraMode::kTrain, precision);
  CheckLabels(*input.labels, out.logp.size(1));
  out.labels = ToDevice(*input.labels, device);
  out.loss = ComputeLoss(out.logp, out.labels, loss);
  if (skipNonFinite || parallel.agree) {
    double decisive = out.loss.item<double>();
    // Data-parallel: a rank that skipped alone would leave the others waiting in the window's
    // all-reduce (or stop alone): the global batch's loss is non-finite when any rank's is.
    if (parallel.agree) {
      const double group = GroupNonFiniteLoss(decisive);
      if (group != 0) decisive = *(out.groupLoss = group);
    }
    if (skipNonFinite && !std::isfinite(decisive)) {
      out.nonFiniteLoss = true;
      return out;
    }
  }
  const auto backward = [&] {
    if (lossMultiplier == 1) {
      out.loss.backward();
    } else {
      (out.loss * lossMultiplier).backward();
    }
  };
  if (parallel.reducer) {
    out.averaged = parallel.reducer->AveragingBackward(backward);
  } else {
    backward();
  }
  return out;
}

}  // namespace torch_bert
