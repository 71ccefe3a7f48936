"""A reward function of one's own for `tunesmith train ... --task rl --reward examples/rewards/support.py:helpful`.

tunesmith calls it with the batch's prompts (message lists), the sampled completions and the rows'
reference answers ("" where none), and wants one number per completion back.
"""

NEXT_STEPS = ("orders", "settings", "page", "email", "click", "open", "start", "contact")


def helpful(prompts, completions, answers):
    """1 for an answer that names a next step, less for a vague one; 0 for one that gives up."""
    scores = []
    for completion in completions:
        text = completion.lower()
        if "don't know" in text or "no idea" in text or not text.strip():
            scores.append(0.0)
        else:
            scores.append(0.5 + 0.5 * any(word in text for word in NEXT_STEPS))
    return scores
