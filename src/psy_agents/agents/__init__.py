"""The four agents as one table: model builder, loss, metric and search space per agent."""
