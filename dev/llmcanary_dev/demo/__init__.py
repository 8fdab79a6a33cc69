"""``llmcanary demo``: the story (story.py), its timeline (timeline.py, pure), its chart."""
