"""Training the LM: SFT tasks and losses, GRPO, rewards and rollouts."""
