"""Generation: the decoding engine (token ids in, token ids out), sampling, the text layer above it, and a
conversation with a chat model."""
