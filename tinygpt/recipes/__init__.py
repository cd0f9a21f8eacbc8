"""Recipes that put the library together: the calculator demo, the assistant demo, and the ladders."""
