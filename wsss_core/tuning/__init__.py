"""Settings from the user's own true masks (`wsss tune`) and the quality estimate they give."""
