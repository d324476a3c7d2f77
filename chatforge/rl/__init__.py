"""Post-training II: reinforcement learning (GRPO with verifiable rewards, RLHF against a reward model), DPO on
preference pairs, the Bradley-Terry reward model, and distillation from a larger model."""
