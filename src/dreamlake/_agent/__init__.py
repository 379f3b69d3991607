"""Everything between append() and the sink: hot path, queue, agent, its hosts and the process lifecycle."""
