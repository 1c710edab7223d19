"""Decoding: scoring every lexicon name against a model's output (CTC prefix tree, seq2seq
teacher forcing), greedy transcripts, and the fuzzy-string baseline."""
