"""`tinygpt serve`: the web app, the OpenAI wire format, the scheduler, completions, replies and the page."""
