"""A real `transformers` fast tokenizer for the world: a WordLevel model over the world's vocabulary,
whitespace-split, saved beside every ladder model so it loads with `AutoTokenizer`."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fsv.world import World


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(vocab=world.ids, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = world.ids["<bos>"]
    core.post_processor = processors.TemplateProcessing(  # a prompt starts with <bos>, as in pretraining
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.model_max_length = 4 * world.config.context
    return tok
