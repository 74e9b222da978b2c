"""Argument checks shared by the library; every error names the argument."""


class ArgumentError(ValueError):
    """A bad argument value: `argument` names it (and the training job's flag), `problem` says why.

    >>> str(ArgumentError("units", "must be an integer >= 1, got 0."))
    '`units` must be an integer >= 1, got 0.'
    """

    def __init__(self, argument, problem):
        super().__init__(f"`{argument}` {problem}")
        self.argument, self.problem = argument, problem


def int_at_least(value, minimum, name):
    """Returns `value` as an int, or raises ValueError naming `name`.

    >>> int_at_least(3.0, 1, "units")
    3
    """
    try:
        valid = not isinstance(value, bool) and float(value).is_integer() and value >= minimum
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ArgumentError(name, f"must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def one_of(value, choices, name):
    """Returns `value` if it is one of `choices`, or raises ValueError naming `name`.

    >>> one_of("dni", ("backprop", "dni"), "mode")
    'dni'
    """
    if value not in choices:
        raise ArgumentError(name, f"must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def in_interval(value, low, high, name, low_open=False):
    """Returns `value` as a float in [low, high] ((low, high] if `low_open`).

    >>> in_interval(0.5, 0.0, 1.0, "p", low_open=True)
    0.5
    """
    try:
        value = float(value)
        valid = (value > low if low_open else value >= low) and value <= high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        bracket = "(" if low_open else "["
        raise ArgumentError(name, f"must be in {bracket}{low}, {high}], got {value!r}.")
    return value
