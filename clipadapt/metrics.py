"""Summary numbers shared by the evaluator, the result parser and the world's pretraining."""


def harmonic_mean(a, b):
    """H = 2ab / (a + b) of two accuracies (base/new, seen/unseen); 0 when both are 0."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)
