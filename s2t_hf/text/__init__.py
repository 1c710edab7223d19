"""Text: drug-name lexicons and their normalisation, sound-alike pairs, vocabularies and the
tokenizer policy. The bottom layer: imports nothing else from s2t_hf."""
