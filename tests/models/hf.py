"""Hugging Face ``transformers`` models built from small configs (no weights are downloaded),
as ``--model`` specs: the real models the model-developer claims are tested against.

- ``bert``: a BERT sequence classifier (a ``ModelOutput`` dict subclass, dropout, token type and
  attention-mask inputs);
- ``gpt2``: a GPT-2 language model with its default ``use_cache=True``, whose output holds a
  ``DynamicCache`` that DataParallel cannot gather: the gather claim must fail naming it;
- ``gpt2_no_cache``: the same with ``use_cache=False``, tied embeddings and all, which works.

Each config sets its dropout probabilities to 0 where the model applies dropout functionally
(attention), which the harness cannot switch off from outside.
"""

import torch

from harness.models import ModelSpec

VOCAB, TOKENS = 96, 8


def _ids(batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, TOKENS), generator=generator)


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _bert_inputs(batch: int, dtype: torch.dtype, generator: torch.Generator):
    mask = torch.ones(batch, TOKENS, dtype=torch.long)
    mask[:, -2:] = (torch.rand(batch, 2, generator=generator) < 0.5).long()
    return (), {"input_ids": _ids(batch, generator), "attention_mask": mask}


def _gpt2(use_cache: bool):
    def build():
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            attn_pdrop=0.0,
            use_cache=use_cache,
            bos_token_id=0,
            eos_token_id=0,
        )
        return GPT2LMHeadModel(config)

    return build


def _gpt2_inputs(batch: int, dtype: torch.dtype, generator: torch.Generator):
    return (), {"input_ids": _ids(batch, generator)}


def _logits(outputs) -> torch.Tensor:
    return outputs["logits"].float().square().mean()


bert = ModelSpec("hf_bert", _bert, _bert_inputs, loss=_logits)
gpt2 = ModelSpec("hf_gpt2", _gpt2(use_cache=True), _gpt2_inputs, loss=_logits)
gpt2_no_cache = ModelSpec("hf_gpt2_no_cache", _gpt2(use_cache=False), _gpt2_inputs, loss=_logits)
