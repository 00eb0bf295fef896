"""``prodcat demo``: a quick model when none exists, unseen products, the live tally."""
