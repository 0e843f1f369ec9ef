// One function per transformers module, in the order of
// transformers/models/distilbert/modeling_distilbert.py. Eager attention (MultiHeadSelfAttention).
#include "model/distilbert.h"

#include <cmath>
#include <string>

namespace torch_bert {

namespace {

const std::string kDistil = "__torch__.transformers.models.distilbert.modeling_distilbert.";

// Embeddings: word + learned position embeddings, LayerNorm (eps 1e-12), dropout.
torch::jit::Module Embeddings(ModelBuilder& b, const EncoderConfig& c) {
  static const char* kSource = R"(
def forward(self, input_ids):
    input_embeds = self.word_embeddings.forward(input_ids)
    position_ids = torch.arange(input_ids.size(1), dtype=4, device=input_ids.device).unsqueeze(0)
    embeddings = input_embeds + self.position_embeddings.forward(position_ids)
    embeddings = self.LayerNorm.forward(embeddings)
    return self.dropout.forward(embeddings)
)";
  return b.Make(kDistil + "Embeddings", kSource, [&](torch::jit::Module& m) {
    m.register_module("word_embeddings",
                      b.Embedding("embeddings.word_embeddings", c.vocabSize, c.hiddenSize, c.padTokenId));
    m.register_module("position_embeddings",
                      b.Embedding("embeddings.position_embeddings", c.maxPositions, c.hiddenSize, -1));
    m.register_module("LayerNorm", b.LayerNorm("embeddings.LayerNorm", c.hiddenSize, c.layerNormEps));
    m.register_module("dropout", b.Dropout(c.hiddenDropout));
  });
}

// MultiHeadSelfAttention: q scaled by 1/sqrt(dim per head) before q k^T, padding masked with
// masked_fill(finfo(float32).min), softmax, dropout, @ v, out_lin.
torch::jit::Module MultiHeadSelfAttention(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  const int64_t perHead = c.hiddenSize / c.numHeads;
  const std::string heads = std::to_string(c.numHeads);
  const std::string source = R"(
def shape(self, x):
    return x.view([x.size(0), -1, )" +
                             heads + ", " + std::to_string(perHead) + R"(]).transpose(1, 2)

def unshape(self, x):
    return x.transpose(1, 2).contiguous().view([x.size(0), -1, )" +
                             std::to_string(c.hiddenSize) + R"(])

def forward(self, hidden_states, mask):
    q = self.shape(self.q_lin.forward(hidden_states))
    k = self.shape(self.k_lin.forward(hidden_states))
    v = self.shape(self.v_lin.forward(hidden_states))
    q = q / )" + FloatLiteral(std::sqrt(static_cast<double>(perHead))) +
                             R"(
    scores = torch.matmul(q, k.transpose(2, 3))
    mask = (mask == 0).view([mask.size(0), 1, 1, mask.size(1)]).expand_as(scores)
    scores = scores.masked_fill(mask, -3.4028234663852886e+38)
    weights = torch.softmax(scores, -1)
    weights = self.dropout.forward(weights)
    context = torch.matmul(weights, v)
    context = self.unshape(context)
    return self.out_lin.forward(context)
)";
  return b.Make(kDistil + "MultiHeadSelfAttention", source, [&](torch::jit::Module& m) {
    m.register_module("dropout", b.Dropout(c.attentionDropout));
    m.register_module("q_lin", b.Linear(p + ".q_lin", c.hiddenSize, c.hiddenSize));
    m.register_module("k_lin", b.Linear(p + ".k_lin", c.hiddenSize, c.hiddenSize));
    m.register_module("v_lin", b.Linear(p + ".v_lin", c.hiddenSize, c.hiddenSize));
    m.register_module("out_lin", b.Linear(p + ".out_lin", c.hiddenSize, c.hiddenSize));
  });
}

// FFN: lin1, activation, lin2, dropout.
torch::jit::Module FFN(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  const std::string source =
      "\ndef forward(self, input):\n    x = self.lin1.forward(input)\n    x = " + Activation(c.hiddenAct, "x") +
      "\n    x = self.lin2.forward(x)\n    return self.dropout.forward(x)\n";
  return b.Make(kDistil + "FFN", source, [&](torch::jit::Module& m) {
    m.register_module("dropout", b.Dropout(c.hiddenDropout));
    m.register_module("lin1", b.Linear(p + ".lin1", c.hiddenSize, c.intermediateSize));
    m.register_module("lin2", b.Linear(p + ".lin2", c.intermediateSize, c.hiddenSize));
  });
}

// TransformerBlock: post-norm attention and feed-forward blocks (LayerNorm eps 1e-12).
torch::jit::Module TransformerBlock(ModelBuilder& b, const EncoderConfig& c, const std::string& p) {
  static const char* kSource = R"(
def forward(self, x, attn_mask):
    sa_output = self.attention.forward(x, attn_mask)
    sa_output = self.sa_layer_norm.forward(sa_output + x)
    ffn_output = self.ffn.forward(sa_output)
    return self.output_layer_norm.forward(ffn_output + sa_output)
)";
  return b.Make(kDistil + "TransformerBlock", kSource, [&](torch::jit::Module& m) {
    m.register_module("attention", MultiHeadSelfAttention(b, c, p + ".attention"));
    m.register_module("sa_layer_norm", b.LayerNorm(p + ".sa_layer_norm", c.hiddenSize, c.layerNormEps));
    m.register_module("ffn", FFN(b, c, p + ".ffn"));
    m.register_module("output_layer_norm", b.LayerNorm(p + ".output_layer_norm", c.hiddenSize, c.layerNormEps));
  });
}

// Transformer: the layers in turn (unrolled).
torch::jit::Module Transformer(ModelBuilder& b, const EncoderConfig& c) {
  std::string source = "\ndef forward(self, x, attn_mask):\n";
  for (int64_t i = 0; i < c.numLayers; ++i) {
    source += "    x = getattr(self.layer, \"" + std::to_string(i) + "\").forward(x, attn_mask)\n";
  }
  source += "    return x\n";
  return b.Make(kDistil + "Transformer", source, [&](torch::jit::Module& m) {
    m.register_module("layer", b.ModuleList([&](torch::jit::Module& list) {
      for (int64_t i = 0; i < c.numLayers; ++i) {
        list.register_module(std::to_string(i), TransformerBlock(b, c, "transformer.layer." + std::to_string(i)));
      }
    }));
  });
}

}  // namespace

// DistilBertModel: embeddings, then the transformer on the raw attention mask.
torch::jit::Module BuildDistilBertModel(ModelBuilder& b, const EncoderConfig& c) {
  static const char* kSource = R"(
def forward(self, input_ids, attention_mask):
    embeddings = self.embeddings.forward(input_ids)
    return self.transformer.forward(embeddings, attention_mask)
)";
  return b.Make(kDistil + "DistilBertModel", kSource, [&](torch::jit::Module& m) {
    m.register_module("embeddings", Embeddings(b, c));
    m.register_module("transformer", Transformer(b, c));
  });
}

}  // namespace torch_bert
