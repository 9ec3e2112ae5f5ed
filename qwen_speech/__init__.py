"""Domain code of the Qwen3 speech playbook: settings, AWS look-ups, the speech round trip."""
