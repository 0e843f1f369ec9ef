#include "model/build_encoder.h"

#include <torch/script.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "model/bert.h"
#include "model/distilbert.h"
#include "model/encoder_config.h"
#include "model/mlm_head.h"
#include "model/module_builder.h"
#include "model/weights.h"
#include "module/script_module.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

const std::string kFn = "buildEncoder";

double ReadProbability(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  return IsMissing(v) ? fallback : ReadNumber(v, kFn + ": config." + key);
}

EncoderConfig ReadConfig(const Napi::Value& value) {
  const std::string what = kFn + ": config";
  Napi::Object o = ReadObject(value, what);
  constexpr int64_t kMax = int64_t{1} << 40;
  auto integer = [&](const char* key, int64_t min) { return ReadInteger(o.Get(key), what + "." + key, min, kMax); };
  EncoderConfig c;
  c.familyName = ReadString(o.Get("family"), what + ".family");
  c.family = ParseEncoderFamily(c.familyName);
  // Ranges are checked by ValidateEncoderConfig, which names the field; here only integrality.
  c.vocabSize = integer("vocabSize", -kMax);
  c.hiddenSize = integer("hiddenSize", -kMax);
  c.numLayers = integer("numLayers", -kMax);
  c.numHeads = integer("numHeads", -kMax);
  c.intermediateSize = integer("intermediateSize", -kMax);
  c.maxPositions = integer("maxPositions", -kMax);
  c.typeVocabSize = integer("typeVocabSize", -kMax);
  c.layerNormEps = ReadNumber(o.Get("layerNormEps"), what + ".layerNormEps");
  c.padTokenId = integer("padTokenId", -kMax);
  c.hiddenAct = ReadString(o.Get("hiddenAct"), what + ".hiddenAct");
  c.pooler = ReadBool(o.Get("pooler"), what + ".pooler");
  c.mlmHead = ReadBool(o.Get("mlmHead"), what + ".mlmHead");
  c.hiddenDropout = ReadProbability(o, "hiddenDropoutProb", 0.1);
  c.attentionDropout = ReadProbability(o, "attentionDropoutProb", 0.1);
  ValidateEncoderConfig(c);
  return c;
}

std::vector<std::pair<std::string, torch::Tensor>> ReadWeights(const Napi::Value& value) {
  const std::string what = kFn + ": weights";
  Napi::Array list = ReadArray(value, what);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const std::string item = what + "[" + std::to_string(i) + "]";
    Napi::Array pair = ReadArray(list.Get(i), item);
    if (pair.Length() != 2) ThrowTypeError(value.Env(), item + " must be a [name, Tensor] pair");
    std::string name = ReadString(pair.Get(0u), item + "[0]");
    out.emplace_back(std::move(name), Tensor::Get(pair.Get(1u), item + "[1]"));
  }
  return out;
}

}  // namespace

Napi::Value BuildEncoder(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    EncoderConfig config = ReadConfig(info[0]);
    std::vector<std::pair<std::string, torch::Tensor>> named = ReadWeights(info[1]);
    const c10::Device device = ParseDevice(IsMissing(info[2]) ? "cpu" : ReadString(info[2], kFn + ": device"));

    WeightStore weights(std::move(named), device);
    ModelBuilder builder(weights);
    torch::jit::Module encoder = config.family == EncoderFamily::kDistilBert ? BuildDistilBertModel(builder, config)
                                                                             : BuildBertModel(builder, config);
    std::optional<torch::jit::Module> head;
    if (config.mlmHead) {
      torch::Tensor words =
          encoder.attr("embeddings").toModule().attr("word_embeddings").toModule().attr("weight").toTensor();
      head = BuildMlmHead(builder, config, words);
    }
    weights.CheckAllTaken();

    // One mutex for both: the head's decoder weight is the encoder's word embedding tensor.
    auto mutex = std::make_shared<std::mutex>();
    Napi::Object result = Napi::Object::New(env);
    result.Set("encoder", ScriptModule::Wrap(env, std::make_shared<ModuleState>(encoder, mutex, device)));
    result.Set(
        "mlmHead",
        head ? Napi::Value(ScriptModule::Wrap(env, std::make_shared<ModuleState>(*head, mutex, device))) : env.Null());
    return result;
  });
}

}  // namespace torch_bert
