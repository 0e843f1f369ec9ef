#include "module/mlm_model.h"

#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "addon/errors.h"
#include "module/script_module.h"

namespace torch_bert {

namespace {

// The encoder's forward: (input_ids, attention_mask) or, BERT's, with token_type_ids (fed zeros,
// as the classifier does); its output is the last hidden state, or a tuple (with the pooler's
// output, which masked-language modelling does not use: BertForMaskedLM has no pooler).
std::string EncoderCall(torch::jit::Module& encoder) {
  auto method = encoder.find_method("forward");
  if (!method) throw std::runtime_error("buildMlmModel: the encoder has no forward method");
  const auto& schema = method->function().getSchema();
  const size_t arity = schema.arguments().size() - 1;
  if (arity != 2 && arity != 3) throw std::runtime_error("buildMlmModel: the encoder's forward takes 2 or 3 inputs");
  const bool tuple = schema.returns().size() == 1 && schema.returns()[0].type()->kind() == c10::TypeKind::TupleType;
  std::string call = "self.encoder.forward(input_ids, attention_mask";
  if (arity == 3) call += ", torch.zeros_like(input_ids)";
  call += ")";
  return tuple ? call + "[0]" : call;
}

}  // namespace

Napi::Value BuildMlmModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    ModuleStatePtr encoderState = ScriptModule::Get(info[0], "buildMlmModel: encoder");
    ModuleStatePtr headState = ScriptModule::Get(info[1], "buildMlmModel: head");
    // One buildEncoder call gives both one mutex; a head from elsewhere would not share the
    // encoder's word embeddings either.
    if (encoderState->mutex != headState->mutex) {
      throw std::runtime_error("buildMlmModel: the head must come from the same buildEncoder call as the encoder");
    }
    std::lock_guard<std::mutex> lock(*encoderState->mutex);
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module model(c10::QualifiedName("__torch__.TorchBertMaskedLM"), cu, /*shouldMangle=*/true);
    model.register_attribute("training", c10::BoolType::get(), false);
    // Shared, not copied: training the model trains this encoder and head.
    model.register_module("encoder", encoderState->module);
    model.register_module("head", headState->module);
    model.define(R"(
def forward(self, input_ids, attention_mask, masked_positions):
    hidden = )" + EncoderCall(encoderState->module) +
                 R"(
    rows = hidden.reshape(-1, hidden.size(-1)).index_select(0, masked_positions)
    return torch.log_softmax(self.head.forward(rows), -1)
)");

    // The tied decoder weight appears under two names; AdamW must see it once.
    std::map<const c10::TensorImpl*, std::string> first;
    Napi::Array tied = Napi::Array::New(env);
    for (const auto& p : model.named_parameters(/*recurse=*/true)) {
      auto [at, inserted] = first.emplace(p.value.unsafeGetTensorImpl(), p.name);
      if (inserted) continue;
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::String::New(env, p.name));
      pair.Set(1u, Napi::String::New(env, at->second));
      tied.Set(tied.Length(), pair);
    }
    auto state = std::make_shared<ModuleState>(model, encoderState->mutex, encoderState->device);
    Napi::Object result = Napi::Object::New(env);
    result.Set("module", ScriptModule::Wrap(env, state, /*accountMemory=*/false));
    result.Set("tiedParameters", tied);
    return result;
  });
}

}  // namespace torch_bert
