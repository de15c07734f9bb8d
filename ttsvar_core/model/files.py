"""File names of the Hugging Face layouts we read (sharded checkpoints, model folders), in one place."""

# an index json maps every key to its shard file (the Infinity-8B release, large transformers folders)
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# the weights of a Hugging Face model folder: one file, or an index and its shards
HF_WEIGHT_FILES = ("model.safetensors", INDEX_FILES[0], "pytorch_model.bin", INDEX_FILES[1])
