"""rnnexp."""
