"""Modal screens: confirmations, prompts, help, resume."""
