"""Looking inside a model: what it computes (attention, the logit lens, saliency, traces), the views the
`inspect` command and the server show, and their pictures."""
