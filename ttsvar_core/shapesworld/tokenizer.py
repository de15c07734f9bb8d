"""An offline T5 tokenizer: ShapesWorld's text encoder uses one trained on the world's prompts, and the
tiny test models one trained on a small word list (ttsvar_core.testing.tiny_models)."""
from __future__ import annotations

from pathlib import Path


def unigram_t5_tokenizer(folder: Path, sentences, vocab_size: int, max_length: int):
    """Trains a unigram sentencepiece model on `sentences` and saves it as a T5 tokenizer.json: built with
    the tokenizers library so loading it needs neither sentencepiece nor protobuf."""
    import io

    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=100, model_max_length=max_length, legacy=True)
    fast.save_pretrained(str(folder))
    return fast
