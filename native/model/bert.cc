// One function per transformers module, in the order of
// transformers/models/bert/modeling_bert.py (and modeling_roberta.py, whose modules are
// "Copied from" BERT's except the embeddings). Eager attention; dropout as the modules' own
// Dropout children, honouring `training`.
#include "model/bert.h"

#include <cmath>
#include <string>

namespace torch_bert {

namespace {

const std::string kBert = "__torch__.transformers.models.bert.modeling_bert.";
const std::string kRoberta = "__torch__.transformers.models.roberta.modeling_roberta.";

// finfo(float32).min, the additive mask value of transformers' get_extended_attention_mask.
const std::string kFloatMin = "-3.4028234663852886e+38";

// BertEmbeddings: word + token type (+ absolute position), LayerNorm, dropout.
torch::jit::Module BertEmbeddings(ModelBuilder& b, const EncoderConfig& c) {
  static const char* kSource = R"(
def forward(self, input_ids, token_type_ids):
    position_ids = torch.arange(input_ids.size(1), dtype=4, device=input_ids.device).unsqueeze(0)
    embeddings = self.word_embeddings.forward(input_ids) + self.token_type_embeddings.forward(token_type_ids)
    embeddings = embeddings + self.position_embeddings.forward(position_ids)
    embeddings = self.LayerNorm.forward(embeddings)
    return self.dropout.forward(embeddings)
)";
  return b.Make(kBert + "BertEmbeddings", kSource, [&](torch::jit::Module& m) {
    m.register_module("word_embeddings",
                      b.Embedding("embeddings.word_embeddings", c.vocabSize, c.hiddenSize, c.padTokenId));
    m.register_module("position_embeddings",
                      b.Embedding("embeddings.position_embeddings", c.maxPositions, c.hiddenSize, -1));
    m.register_module("token_type_embeddings",
                      b.Embedding("embeddings.token_type_embeddings", c.typeVocabSize, c.hiddenSize, -1));
    m.register_module("LayerNorm", b.LayerNorm("embeddings.LayerNorm", c.hiddenSize, c.layerNormEps));
    m.register_module("dropout", b.Dropout(c.hiddenDropout));
  });
}

// RobertaEmbeddings: positions count the non-padding tokens from padding_idx + 1
// (create_position_ids_from_input_ids), token type row 0 (the buffered zeros), padding_idx on
// the position embeddings too.
torch::jit::Module RobertaEmbeddings(ModelBuilder& b, const EncoderConfig& c) {
  const std::string pad = std::to_string(c.padTokenId);
  const std::string source = R"(
def forward(self, input_ids):
    mask = input_ids.ne()" + pad +
                             R"().to(3)
    incremental_indices = torch.cumsum(mask, 1).type_as(mask) * mask
    position_ids = incremental_indices.to(4) + )" +
                             pad + R"(
    token_type_ids = torch.zeros_like(input_ids)
    embeddings = self.word_embeddings.forward(input_ids) + self.token_type_embeddings.forward(token_type_ids)
    embeddings = embeddings + self.position_embeddings.forward(position_ids)
    embeddings = self.LayerNorm.forward(embeddings)
    return self.dropout.forward(embeddings)
)";
  return b.Make(kRoberta + "RobertaEmbeddings", source, [&](torch::jit::Module& m) {
    m.register_module("word_embeddings",
                      b.Embedding("embeddings.word_embeddings", c.vocabSize, c.hiddenSize, c.padTokenId));
    m.register_module("position_embeddings",
                      b.Embedding("embeddings.position_embeddings", c.maxPositions, c.hiddenSize, c.padTokenId));
    m.register_module("token_type_embeddings",
                      b.Embedding("embeddings.token_type_embeddings", c.typeVocabSize, c.hiddenSize, -1));
    m.register_module("LayerNorm", b.LayerNorm("embeddings.LayerNorm", c.hiddenSize, c.layerNormEps));
    m.register_module("dropout", b.Dropout(c.hiddenDropout));
  });
}

// BertSelfAttention (eager): scores = q k^T / sqrt(head size) + mask, softmax, dropout, @ v.
torch::jit::Module BertSelfAttention(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  const int64_t headSize = c.hiddenSize / c.numHeads;
  const std::string source = R"(
def transpose_for_scores(self, x):
    return x.view([x.size(0), x.size(1), )" +
                             std::to_string(c.numHeads) + ", " + std::to_string(headSize) + R"(]).permute([0, 2, 1, 3])

def forward(self, hidden_states, attention_mask):
    query_layer = self.transpose_for_scores(self.query.forward(hidden_states))
    key_layer = self.transpose_for_scores(self.key.forward(hidden_states))
    value_layer = self.transpose_for_scores(self.value.forward(hidden_states))
    attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
    attention_scores = attention_scores / )" +
                             FloatLiteral(std::sqrt(static_cast<double>(headSize))) + R"(
    attention_scores = attention_scores + attention_mask
    attention_probs = torch.softmax(attention_scores, -1)
    attention_probs = self.dropout.forward(attention_probs)
    context_layer = torch.matmul(attention_probs, value_layer)
    context_layer = context_layer.permute([0, 2, 1, 3]).contiguous()
    return context_layer.view([context_layer.size(0), context_layer.size(1), )" +
                             std::to_string(c.hiddenSize) + R"(])
)";
  return b.Make(kBert + "BertSelfAttention", source, [&](torch::jit::Module& m) {
    m.register_module("query", b.Linear(p + ".query", c.hiddenSize, c.hiddenSize));
    m.register_module("key", b.Linear(p + ".key", c.hiddenSize, c.hiddenSize));
    m.register_module("value", b.Linear(p + ".value", c.hiddenSize, c.hiddenSize));
    m.register_module("dropout", b.Dropout(c.attentionDropout));
  });
}

// BertSelfOutput and BertOutput: dense, dropout, LayerNorm of the sum with the block's input.
torch::jit::Module BertDenseOutput(ModelBuilder& b, const EncoderConfig& c, const std::string& className,
                                   const std::string& p, int64_t in) {
  static const char* kSource = R"(
def forward(self, hidden_states, input_tensor):
    hidden_states = self.dense.forward(hidden_states)
    hidden_states = self.dropout.forward(hidden_states)
    return self.LayerNorm.forward(hidden_states + input_tensor)
)";
  return b.Make(kBert + className, kSource, [&](torch::jit::Module& m) {
    m.register_module("dense", b.Linear(p + ".dense", in, c.hiddenSize));
    m.register_module("LayerNorm", b.LayerNorm(p + ".LayerNorm", c.hiddenSize, c.layerNormEps));
    m.register_module("dropout", b.Dropout(c.hiddenDropout));
  });
}

// BertAttention: self-attention, then its output block on the layer's input.
torch::jit::Module BertAttention(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  static const char* kSource = R"(
def forward(self, hidden_states, attention_mask):
    return self.output.forward(self.self.forward(hidden_states, attention_mask), hidden_states)
)";
  return b.Make(kBert + "BertAttention", kSource, [&](torch::jit::Module& m) {
    m.register_module("self", BertSelfAttention(b, c, p + ".self"));
    m.register_module("output", BertDenseOutput(b, c, "BertSelfOutput", p + ".output", c.hiddenSize));
  });
}

// BertIntermediate: dense, then the hidden activation.
torch::jit::Module BertIntermediate(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  const std::string source =
      "\ndef forward(self, hidden_states):\n    hidden_states = self.dense.forward(hidden_states)\n"
      "    return " +
      Activation(c.hiddenAct, "hidden_states") + "\n";
  return b.Make(kBert + "BertIntermediate", source, [&](torch::jit::Module& m) {
    m.register_module("dense", b.Linear(p + ".dense", c.hiddenSize, c.intermediateSize));
  });
}

// BertLayer: attention, then the feed-forward block (intermediate, output).
torch::jit::Module BertLayer(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  static const char* kSource = R"(
def forward(self, hidden_states, attention_mask):
    attention_output = self.attention.forward(hidden_states, attention_mask)
    intermediate_output = self.intermediate.forward(attention_output)
    return self.output.forward(intermediate_output, attention_output)
)";
  return b.Make(kBert + "BertLayer", kSource, [&](torch::jit::Module& m) {
    m.register_module("attention", BertAttention(b, c, p + ".attention"));
    m.register_module("intermediate", BertIntermediate(b, c, p + ".intermediate"));
    m.register_module("output", BertDenseOutput(b, c, "BertOutput", p + ".output", c.intermediateSize));
  });
}

// BertEncoder: the layers in turn (the loop over the ModuleList, unrolled: no control flow in
// the graph).
torch::jit::Module BertEncoder(ModelBuilder& b, const EncoderConfig& c) {
  std::string source = "\ndef forward(self, hidden_states, attention_mask):\n";
  for (int64_t i = 0; i < c.numLayers; ++i) {
    source += "    hidden_states = getattr(self.layer, \"" + std::to_string(i) +
              "\").forward(hidden_states, attention_mask)\n";
  }
  source += "    return hidden_states\n";
  return b.Make(kBert + "BertEncoder", source, [&](torch::jit::Module& m) {
    m.register_module("layer", b.ModuleList([&](torch::jit::Module& list) {
      for (int64_t i = 0; i < c.numLayers; ++i) {
        list.register_module(std::to_string(i), BertLayer(b, c, "encoder.layer." + std::to_string(i)));
      }
    }));
  });
}

// BertPooler: tanh(dense(first token)).
torch::jit::Module BertPooler(ModelBuilder& b, const EncoderConfig& c) {
  static const char* kSource = R"(
def forward(self, hidden_states):
    first_token_tensor = hidden_states[:, 0]
    return torch.tanh(self.dense.forward(first_token_tensor))
)";
  return b.Make(kBert + "BertPooler", kSource, [&](torch::jit::Module& m) {
    m.register_module("dense", b.Linear("pooler.dense", c.hiddenSize, c.hiddenSize));
  });
}

}  // namespace

// BertModel / RobertaModel: the extended attention mask (1 - mask) * finfo(float32).min
// (get_extended_attention_mask), embeddings, encoder, optional pooler.
torch::jit::Module BuildBertModel(ModelBuilder& b, const EncoderConfig& c) {
  const bool roberta = c.family == EncoderFamily::kRoberta;
  std::string source = roberta ? "\ndef forward(self, input_ids, attention_mask):\n"
                               : "\ndef forward(self, input_ids, attention_mask, token_type_ids):\n";
  source += "    extended_attention_mask = attention_mask[:, None, None, :].to(6)\n";
  source += "    extended_attention_mask = (1.0 - extended_attention_mask) * " + kFloatMin + "\n";
  source += roberta ? "    embedding_output = self.embeddings.forward(input_ids)\n"
                    : "    embedding_output = self.embeddings.forward(input_ids, token_type_ids)\n";
  source += "    sequence_output = self.encoder.forward(embedding_output, extended_attention_mask)\n";
  if (c.pooler) {
    source += "    pooled_output = self.pooler.forward(sequence_output)\n";
    source += "    return (sequence_output, pooled_output)\n";
  } else {
    source += "    return sequence_output\n";
  }
  return b.Make(roberta ? kRoberta + "RobertaModel" : kBert + "BertModel", source, [&](torch::jit::Module& m) {
    m.register_module("embeddings", roberta ? RobertaEmbeddings(b, c) : BertEmbeddings(b, c));
    m.register_module("encoder", BertEncoder(b, c));
    if (c.pooler) m.register_module("pooler", BertPooler(b, c));
  });
}

}  // namespace torch_bert
