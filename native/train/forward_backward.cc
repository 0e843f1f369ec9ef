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

// Runs the classifier on the input and checks it returned [B, C] outputs, as float32 whatever
// the precision. Adapters (if any) take effect for the duration of the call
// only (module/lora_state.h); merged weights, where needed, are computed outside autocast, in float32.
torch::Tensor Forward(ModuleState& state, const BatchInput& input, const c10::Device& device, LoraMode mode,
                      Precision precision) {
  torch::jit::Module& module = state.module;
  c10::IValue out;
  int64_t rows = input.size;
  if (input.tokens) {
    TokenCall call = TokenMethodCall(module, "forward", *input.tokens, device);
    // A per-token model (train/batch.h positions): one output row per position.
    if (input.tokens->positions) {
      call.inputs.emplace_back(ToDevice(*input.tokens->positions, device));
      rows = input.tokens->positions->size(0);
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
  torch::Tensor outputs = out.toTensor();
  if (outputs.dim() != 2 || outputs.size(0) != rows) {
    std::ostringstream os;
    os << "the model's forward must return outputs of shape [" << rows << ", classes], got " << outputs.sizes();
    throw std::runtime_error(os.str());
  }
  // Autocast's output: the loss and everything after it run in float32.
  const bool reduced = outputs.scalar_type() == torch::kHalf || outputs.scalar_type() == torch::kBFloat16;
  return reduced ? outputs.to(torch::kFloat) : outputs;
}

torch::Tensor LossTargets(const torch::Tensor& labels, const torch::Tensor& outputs, ProblemType problem) {
  const int64_t classes = outputs.size(1);
  const bool classIds = !labels.is_floating_point();
  if (classIds != (problem == ProblemType::kSingleLabel)) {
    throw std::runtime_error(std::string("the model's problem type is ") + ProblemTypeName(problem) +
                             ": its labels are " +
                             (problem == ProblemType::kSingleLabel ? "class ids (an Int32Array)"
                                                                   : "targets, one per output (a Float32Array)"));
  }
  if (classIds) {
    if (labels.numel() > 0 && labels.max().item<int64_t>() >= classes) {
      throw std::runtime_error("label " + std::to_string(labels.max().item<int64_t>()) +
                               " is out of range for a model with " + std::to_string(classes) + " classes");
    }
    return labels;
  }
  if (labels.numel() != outputs.numel()) {
    throw std::runtime_error("the labels hold " + std::to_string(labels.numel()) + " targets for " +
                             std::to_string(outputs.size(0)) + " rows, but the model has " + std::to_string(classes) +
                             " outputs per row");
  }
  // BCE's targets are probabilities: another value trains toward a loss below zero, silently.
  if (problem == ProblemType::kMultiLabel && labels.numel() > 0 &&
      (labels.min().item<float>() < 0 || labels.max().item<float>() > 1)) {
    throw std::runtime_error(
        "multi-label targets must be in [0, 1] (1: the class applies), got one of " +
        std::to_string(labels.min().item<float>() < 0 ? labels.min().item<float>() : labels.max().item<float>()));
  }
  return labels.view({outputs.size(0), classes});
}

torch::Tensor ComputeLoss(const torch::Tensor& outputs, const torch::Tensor& targets, const LossOptions& options,
                          ProblemType problem) {
  // A masked-language batch in which no token was chosen: nothing to predict, a zero loss (the
  // mean over no tokens would be NaN and stop the run), gradients zero but defined.
  if (outputs.size(0) == 0) return outputs.sum() * 0;
  namespace F = torch::nn::functional;
  if (options.positiveWeights && problem != ProblemType::kMultiLabel) {
    throw std::runtime_error(
        std::string("positive weights are multi-label classification's; this model's problem type is ") +
        ProblemTypeName(problem));
  }
  if (problem != ProblemType::kSingleLabel) {
    if (options.classWeights || options.labelSmoothing != 0) {
      throw std::runtime_error(std::string("class weights and label smoothing are single-label classification's; "
                                           "this model's problem type is ") +
                               ProblemTypeName(problem));
    }
    if (problem == ProblemType::kRegression) return F::mse_loss(outputs, targets);
    auto bce = F::BinaryCrossEntropyWithLogitsFuncOptions();
    if (options.positiveWeights) {
      if (options.positiveWeights->numel() != outputs.size(1)) {
        throw std::runtime_error("positiveWeights has " + std::to_string(options.positiveWeights->numel()) +
                                 " values but the model has " + std::to_string(outputs.size(1)) + " classes");
      }
      bce.pos_weight(options.positiveWeights->to(outputs.device(), outputs.scalar_type()));
    }
    return F::binary_cross_entropy_with_logits(outputs, targets, bce);
  }
  if (options.Plain()) return torch::nll_loss(outputs, targets);
  auto ce = F::CrossEntropyFuncOptions().label_smoothing(options.labelSmoothing);
  if (options.classWeights) {
    if (options.classWeights->numel() != outputs.size(1)) {
      throw std::runtime_error("classWeights has " + std::to_string(options.classWeights->numel()) +
                               " values but the model has " + std::to_string(outputs.size(1)) + " classes");
    }
    torch::Tensor weights = options.classWeights->to(outputs.device(), outputs.scalar_type());
    // A batch whose rows all weigh zero has nothing to learn: a zero loss, as for no masked token
    // above (the weighted mean would be 0/0). Data-parallel, one rank's share can be such a batch
    // while the global batch is not: the rank then adds nothing to the averaged gradient.
    if (weights.index_select(0, targets).sum().item<double>() == 0) return outputs.sum() * 0;
    ce.weight(weights);
  }
  return F::cross_entropy(outputs, targets, ce);
}

ForwardBackwardResult ForwardBackward(ModuleState& state, const BatchInput& input, const c10::Device& device,
                                      Precision precision, const LossOptions& loss, double lossMultiplier,
                                      bool skipNonFinite, const DataParallelStep& parallel) {
  ForwardBackwardResult out;
  out.problem = ProblemTypeOf(state.module);
  out.outputs = Forward(state, input, device, LoraMode::kTrain, precision);
  out.targets = ToDevice(LossTargets(*input.labels, out.outputs, out.problem), device);
  out.loss = ComputeLoss(out.outputs, out.targets, loss, out.problem);
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
