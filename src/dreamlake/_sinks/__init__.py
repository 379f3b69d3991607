"""Where the agent's batches go: the Sink interface and its implementations."""
