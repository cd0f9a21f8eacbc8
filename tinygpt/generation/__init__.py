"""Generation: the batched decoding engine (token ids in, token ids out; engine.py) and the Decoder it grew from
(decoder.py, kept as its reference), sampling, the text layer above them, and a conversation with a chat model."""
