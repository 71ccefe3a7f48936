"""One module per CLI verb; `tunesmith.cli` maps verbs to them."""
