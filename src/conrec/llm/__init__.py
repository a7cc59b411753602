"""The language model: SID vocabulary, context-discerning prompts, SFT, constrained decoding, GRPO."""
