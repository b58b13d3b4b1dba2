"""The directory: where nodes announce themselves and clients read the topology."""
