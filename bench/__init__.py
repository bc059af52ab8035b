"""Load generator, comparison peers and runner for the chat benchmark."""
