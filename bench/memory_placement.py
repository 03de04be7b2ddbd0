"""Where the LSTM memory sits in the stack: the two starting models of the placement experiments.

The embedded models read the LSTM after the last block, so the asked person of a bAbI question can be
looked up only inside the LSTM's own recurrence. Two ways to let attention read the LSTM's outputs:

- ``move``: a language model with its LSTM after ``--lstm_layer`` blocks instead (its weights kept,
  its output projection zeroed, so the model starts as the language model without its LSTM's share);
- ``grow``: a trained memory model with one more block after its LSTM, that block zeroed where it
  writes to the residual stream, so the grown model starts with the same logits (checked here).

    python -m bench.memory_placement move --model checkpoints/memory-lm --lstm_layer 2 --out RUNS/lm-mid
    python -m bench.memory_placement grow --model checkpoints/memory --out RUNS/memory-grown

Either folder is then fine-tuned with ``python -m llm_memory.memory --model RUNS/...`` (docs/benchmarks.md
has the commands and what they gave).
"""

import argparse

import torch
from transformers import AutoTokenizer

from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM


def move(model: MemoryTransformerForCausalLM, lstm_layer: int) -> MemoryTransformerForCausalLM:
    """The model with its LSTM after ``lstm_layer`` blocks, adding nothing to the residual stream yet."""
    if model.model.memory is None:
        raise ValueError("The model has no LSTM memory to move; pick one saved with use_lstm=true.")
    model.config.lstm_layer = lstm_layer
    model.config.validate_sizes()  # a ValueError naming the field for a layer past the last block
    with torch.no_grad():
        model.model.memory.out_proj.weight.zero_()
        model.model.memory.out_proj.bias.zero_()
    return model


def grow(model: MemoryTransformerForCausalLM, seed: int = 0) -> MemoryTransformerForCausalLM:
    """A model with one more block right after the LSTM (which then comes after the old last block);
    the new block's attention and MLP outputs are zeroed, so its logits equal the model's."""
    if model.model.memory is None:
        raise ValueError("The model has no LSTM memory to put a block after.")
    layers = model.config.num_hidden_layers
    config = MemoryTransformerConfig(
        **{**settings_of(model.config), "num_hidden_layers": layers + 1, "lstm_layer": layers}
    )
    torch.manual_seed(seed)
    grown = MemoryTransformerForCausalLM(config)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith(f"model.layers.{layers}.") for key in missing):
        raise ValueError(f"The model's weights do not fit the grown one: {missing}, {unexpected}.")
    block = grown.model.layers[layers]
    with torch.no_grad():
        for projection in (block.attn.o_proj, block.mlp.fc_out):
            projection.weight.zero_()
            projection.bias.zero_()
    return grown


def settings_of(config: MemoryTransformerConfig) -> dict:
    """A config's own fields, without those derived from them or written by saving."""
    settings = config.to_dict()
    for key in ("layer_types", "architectures", "auto_map", "transformers_version", "model_type"):
        settings.pop(key, None)
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("how", choices=("move", "grow"))
    parser.add_argument("--model", required=True, help="Folder of a saved memory transformer LM.")
    parser.add_argument("--out", required=True, help="Folder for the new model and its tokenizer.")
    parser.add_argument("--lstm_layer", type=int, help="move: blocks before the LSTM.")
    args = parser.parse_args(argv)
    if args.how == "move" and args.lstm_layer is None:
        parser.error("move needs --lstm_layer.")
    model = MemoryTransformerForCausalLM.from_pretrained(args.model).eval()
    if args.how == "move":
        new = move(model, args.lstm_layer)
    else:
        new = grow(model).eval()
        ids = torch.randint(5, model.config.vocab_size, (2, model.config.max_position_embeddings))
        with torch.no_grad():
            torch.testing.assert_close(new(ids).logits, model(ids).logits)
    new.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(args.model).save_pretrained(args.out)
    print(f"Wrote {args.out}: {new.config.num_hidden_layers} blocks, the LSTM after {new.config.lstm_layer}")


if __name__ == "__main__":
    main()
